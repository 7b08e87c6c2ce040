"""``modelguard ctl`` as a user runs it: a subprocess against a real ``modelguard serve``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ext_proc.processes import consecutive_free_ports
from ext_proc.processes.waiting import wait_for
from tests.component.conftest import EXAMPLE, serve_command
from tests.component.log_lines import LogLines

TOKEN = "ctl-test-token-0123456789abcdef"


@dataclass
class Served:
    process: subprocess.Popen[str]
    lines: LogLines
    address: str
    token_file: Path
    policy: Path

    def ctl(self, *args: str, token: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        global_args = ["--address", self.address, *(["--token-file", str(self.token_file)] if token else [])]
        return run_ctl(*global_args, *args, timeout=timeout)


def run_ctl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("MODELGUARD_ADMIN_TOKEN", "MODELGUARD_ADDRESS")}
    done = subprocess.run(
        [sys.executable, "-m", "ext_proc.cli", "ctl", *args],
        capture_output=True, text=True, timeout=timeout, env=environment,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    policy = tmp_path / "policy.yaml"
    shutil.copy(EXAMPLE, policy)
    process = subprocess.Popen(
        serve_command(
            "--grpc-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0", "--state-dir", str(tmp_path / "state"),
            "--admin-token-file", str(token_file), policy=policy,
        ),
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = LogLines(process)
        serving = lines.event("serving", timeout=20)[0]
        yield Served(process, lines, f"127.0.0.1:{serving['admin_grpc_port']}", token_file, policy)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def rows(table: str) -> dict[tuple[str, str], list[str]]:
    found = {}
    for line in table.splitlines()[1:]:
        cells = line.split()
        if len(cells) >= 3 and not line.startswith("policy"):
            found[(cells[0], cells[1])] = cells[2:]
    return found


def test_state_as_a_table_and_as_json(served: Served) -> None:
    table = served.ctl("state")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["MODEL", "TIER", "STATE"]
    assert rows(table.stdout)[("recommender", "primary")][0] == "closed"
    assert "policy sha256" in table.stdout
    document = json.loads(served.ctl("state", "--output", "json", "--model", "recommender").stdout)
    assert [model["name"] for model in document["models"]] == ["recommender"]
    assert document["models"][0]["tiers"][0]["window"]["calls"] == "0"


def test_force_open_then_auto_with_reason_and_expiry(served: Served) -> None:
    forced = served.ctl("force-open", "recommender", "primary", "--reason", "gpu node hot", "--for", "10m")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith("recommender/primary: forced_open (by ")
    assert "gpu node hot" in forced.stdout and "until" in forced.stdout and "(was closed)" in forced.stdout
    assert rows(served.ctl("state").stdout)[("recommender", "primary")][0] == "forced_open"
    entry = served.lines.event("forced_state_changed", timeout=5)[0]
    assert (entry["reason"], entry["to_state"]) == ("gpu node hot", "forced_open")
    assert entry["caller"].split(" ")[0].count("@") == 1
    assert TOKEN not in json.dumps(served.lines.entries)
    closed = served.ctl("force-closed", "recommender", "light")
    assert closed.returncode == 0 and "forced_closed" in closed.stdout
    auto = served.ctl("auto", "recommender", "primary")
    assert auto.returncode == 0 and auto.stdout.startswith("recommender/primary: closed")


def test_reset_and_reload(served: Served) -> None:
    reset = served.ctl("reset", "recommender", "primary")
    assert reset.returncode == 0 and reset.stdout.startswith("recommender/primary: closed")
    unchanged = served.ctl("reload")
    assert unchanged.returncode == 0 and unchanged.stdout.startswith("reload: unchanged")
    served.policy.write_text(served.policy.read_text().replace("failure_rate: 0.5", "failure_rate: 2"))
    refused = served.ctl("reload")
    assert refused.returncode == 1 and refused.stdout.startswith("reload: error")
    assert "failure_rate" in refused.stderr
    served.policy.write_text(served.policy.read_text().replace("failure_rate: 2", "failure_rate: 0.4"))
    accepted = served.ctl("reload")
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.startswith(("reload: success", "reload: unchanged"))  # the file watch may be first


def test_watch_prints_one_line_per_event(served: Served) -> None:
    watcher = subprocess.Popen(
        [sys.executable, "-m", "ext_proc.cli", "ctl", "--address", served.address, "watch", "--count", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.5)  # connected and watching
        assert served.ctl("force-open", "recommender", "light", "--reason", "drill").returncode == 0
        assert served.ctl("auto", "recommender", "light").returncode == 0
        out, err = watcher.communicate(timeout=20)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert "recommender/light closed -> forced_open (by " in lines[0] and "drill" in lines[0]
    assert "recommender/light forced_open -> closed (ended by " in lines[1]


def test_a_change_without_the_token_fails_clearly_with_exit_1(served: Served, tmp_path: Path) -> None:
    missing = served.ctl("force-open", "recommender", "primary", token=False)
    assert missing.returncode == 1
    assert "UNAUTHENTICATED" in missing.stderr and "MODELGUARD_ADMIN_TOKEN" in missing.stderr
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token-0123456789")
    bad = run_ctl("--address", served.address, "--token-file", str(wrong), "reset", "recommender", "primary")
    assert bad.returncode == 1 and "not the one configured" in bad.stderr
    assert served.ctl("state", token=False).returncode == 0  # reading needs no token


def test_unknown_names_fail_with_exit_1_and_the_names_there_are(served: Served) -> None:
    tier = served.ctl("force-open", "recommender", "gpu")
    assert tier.returncode == 1 and "its routed tiers: primary, light" in tier.stderr
    model = served.ctl("reset", "nope", "primary")
    assert model.returncode == 1 and "models: recommender" in model.stderr
    state = served.ctl("state", "--model", "nope")
    assert state.returncode == 1 and "NOT_FOUND" in state.stderr


def test_unreachable_and_misused_exit_2_without_a_traceback(tmp_path: Path) -> None:
    port = consecutive_free_ports(1)
    down = run_ctl("--address", f"127.0.0.1:{port}", "--timeout", "2", "state")
    assert down.returncode == 2 and "cannot reach" in down.stderr
    assert run_ctl().returncode == 2
    assert run_ctl("force-open", "recommender").returncode == 2
    bad_for = run_ctl("--address", f"127.0.0.1:{port}", "force-open", "m", "t", "--for", "ten")
    assert bad_for.returncode == 2 and "--for" in bad_for.stderr
    no_file = run_ctl("--token-file", str(tmp_path / "none"), "state")
    assert no_file.returncode == 2 and "cannot read the token file" in no_file.stderr


def test_with_workers_one_call_reaches_every_worker(tmp_path: Path) -> None:
    grpc_base, admin_base, admin_grpc_base = (consecutive_free_ports(2) for _ in range(3))
    environment = {**os.environ, "MODELGUARD_ADMIN_TOKEN": TOKEN}
    supervisor = subprocess.Popen(
        serve_command(
            "--workers", "2", "--grace", "1", "--grpc-address", f"127.0.0.1:{grpc_base}",
            "--admin-address", f"127.0.0.1:{admin_base}", "--admin-grpc-address", f"127.0.0.1:{admin_grpc_base}",
            "--state-dir", str(tmp_path / "state"),
        ),
        stderr=subprocess.PIPE, text=True, env=environment,
    )  # fmt: skip
    (tmp_path / "token").write_text(TOKEN)
    address = f"127.0.0.1:{admin_grpc_base + 1}"  # asking the second worker: it names the first
    ctl = ("--address", address, "--token-file", str(tmp_path / "token"))
    try:
        lines = LogLines(supervisor)
        lines.event("serving", timeout=30, count=2)
        table = run_ctl(*ctl, "state")
        assert table.returncode == 0, table.stderr
        assert table.stdout.splitlines()[0].split()[0] == "WORKER"
        assert {line.split()[0] for line in table.stdout.splitlines()[1:] if "recommender" in line} == {"0", "1"}
        assert run_ctl(*ctl, "force-open", "recommender", "primary").returncode == 0

        def both_forced() -> bool:
            shown = run_ctl(*ctl, "state", "--model", "recommender").stdout
            return sum("forced_open" in line for line in shown.splitlines()) == 2

        assert wait_for(both_forced, 10.0, interval=0.2)
        reset = run_ctl(*ctl, "reset", "recommender", "light")
        assert reset.returncode == 0 and reset.stdout.count("recommender/light: closed") == 2
        reload = run_ctl(*ctl, "reload")
        assert reload.returncode == 0 and reload.stdout.count("reload: unchanged") == 2
    finally:
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(15)
        except subprocess.TimeoutExpired:
            supervisor.kill()


def test_an_unusable_state_dir_given_is_an_error_the_default_one_a_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    given = subprocess.run(
        serve_command("--grpc-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0",
                      "--state-dir", str(blocker / "state")),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert given.returncode == 1 and "state directory" in given.stderr and "Traceback" not in given.stderr
    environment = {**os.environ, "MODELGUARD_STATE_DIR": str(blocker / "state")}
    process = subprocess.Popen(
        serve_command("--grpc-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0"),
        stderr=subprocess.PIPE, text=True, env=environment,
    )  # fmt: skip
    try:
        lines = LogLines(process)
        warning = lines.event("state_dir_unusable", timeout=20)[0]
        assert "will not survive a restart" in warning["msg"]
        assert lines.event("serving", timeout=20)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--timeout", "nan", "state"), "--timeout"),
        (("--timeout", "-1", "state"), "--timeout"),
        (("--address", "nowhere", "state"), "--address"),
        (("force-open", "m", "t", "--for", "0s"), "--for must be longer than 0"),
        (("watch", "--count", "-1"), "not a count"),
    ],
)
def test_misuse_is_exit_2_with_a_reason(args: tuple[str, ...], words: str) -> None:
    done = run_ctl(*args)
    assert done.returncode == 2 and words in done.stderr


def test_a_token_with_a_newline_inside_is_refused_by_ctl_itself(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abcdefgh\nijklmnopqrst")
    done = run_ctl("--token-file", str(token), "state")
    assert done.returncode == 2 and "printable ASCII" in done.stderr


def test_a_default_admin_grpc_port_that_clashes_is_refused_with_the_fix() -> None:
    admin = consecutive_free_ports(2)
    done = subprocess.run(
        serve_command("--admin-address", f"127.0.0.1:{admin}", "--grpc-address", f"127.0.0.1:{admin + 1}"),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and "give --admin-grpc-address a free port" in done.stderr
