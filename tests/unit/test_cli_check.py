"""`modelguard check`: exit 0 with an OK line, or exit 1 with every error on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ext_proc.cli import main
from ext_proc.policy import PolicyError, load_policy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"

BROKEN = """
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: recommender-resnet50}
      - {name: default, respond: {status: 200}}
      - {name: primary, route: "bad route!"}
    breaker:
      window: 10
      min_calls: 0
      failure_rate: 1.5
      failure_rat: 0.5
    failure: {statuses: ["6xx"], grpc_statuses: [NOPE]}
  - name: recommender
    match: {path_prefix: /x, authority: x}
    tiers: [{name: p, route: r}]
"""


def _copy_example(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def _broken(tmp_path: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    return path, info.value.errors


def test_check_example_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _copy_example(tmp_path)
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: OK (1 model(s), 3 tier(s))\n"
    assert err == ""


def test_check_counts_models_and_tiers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(
        """
models:
  - name: a
    match: {path_prefix: /a}
    tiers: [{name: p, route: r}, {name: d, respond: {}}]
  - name: b
    match: {authority: b.example.com}
    tiers: [{name: p, route: r}]
""",
        encoding="utf-8",
    )
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK (2 model(s), 3 tier(s))\n"


def test_check_broken_prints_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, errors = _broken(tmp_path)
    assert len(errors) >= 9
    assert main(["check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == f"{path}: {len(errors)} error(s)"
    assert lines[1:] == [f"  {error}" for error in errors]
    for path_prefix in (
        "models[0].breaker.window: ",
        "models[0].breaker.min_calls: ",
        "models[0].breaker.failure_rate: must be between 0 and 1",
        "models[0].breaker.failure_rat: unknown key",
        "models[0].tiers[1].respond: only the last tier may respond directly",
        "models[0].tiers[2].route: ",
        "models[0].failure.statuses[0]: ",
        "models[0].failure.grpc_statuses[0]: unknown gRPC status",
        "models[1].match: must have exactly one of",
    ):
        assert any(line.startswith(f"  {path_prefix}") for line in lines), path_prefix


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["check", str(missing)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{missing}: 1 error(s)\n  cannot read the file: ")


def test_check_yaml_syntax_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "syntax.yaml"
    path.write_text("models: [\n", encoding="utf-8")
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"{path}: 1 error(s)"
    assert err.splitlines()[1].startswith("  (yaml) line ")


def test_check_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert main(["check", str(path)]) == 1
    assert capsys.readouterr().err == f"{path}: 1 error(s)\n  (root): the policy is empty\n"


def test_check_requires_a_file_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check"])
    assert info.value.code == 2
    assert "FILE" in capsys.readouterr().err


def _run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ext_proc.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_module_entry_point_end_to_end(tmp_path: Path) -> None:
    good = _copy_example(tmp_path)
    ok = _run_module("check", str(good))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"{good}: OK (1 model(s), 3 tier(s))\n"

    bad, errors = _broken(tmp_path)
    failed = _run_module("check", str(bad))
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert failed.stderr.splitlines() == [f"{bad}: {len(errors)} error(s)", *(f"  {e}" for e in errors)]


def test_installed_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "modelguard"
    if not script.exists():
        pytest.skip("the modelguard console script is not installed next to this interpreter")
    good = _copy_example(tmp_path)
    result = subprocess.run([str(script), "check", str(good)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{good}: OK (1 model(s), 3 tier(s))\n"


# -- hostile files: no traceback, exit 1, a short message --------------------------------------


def _alias_bomb(field: str, size: int = 1_000_000) -> str:
    """Billion laughs, padded to size: ten levels of ten aliases each, then one list wide enough to
    fill the file, all of it ending in one scalar field of the policy."""
    lines = ["    bomb:", "      - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"      - &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    head = "\n".join(lines) + "\n"
    wide = (size - len(head)) // len(", *a9")
    lines.append("      - &wide [*a9" + ", *a9" * wide + "]")
    return "models:\n  - name: m\n    match: {path_prefix: /m}\n" + "\n".join(lines) + f"\n    {field}\n"


def _nesting(levels: int, kind: str) -> str:
    if kind == "list":
        return "models: " + "[" * levels + "]" * levels + "\n"
    return "models: " + "{a: " * levels + "1" + "}" * levels + "\n"


TOO_MANY_VALUES = "more than 500,000 values once aliases are expanded"
HOSTILE = {
    "bomb_in_statuses": (_alias_bomb("failure: {statuses: *wide}"), TOO_MANY_VALUES),
    "bomb_in_tier_name": (_alias_bomb("tiers: [{name: *wide, route: r}]"), TOO_MANY_VALUES),
    "bomb_in_route": (_alias_bomb("tiers: [{name: p, route: *a9}]"), TOO_MANY_VALUES),
    "aliased_models": (
        "x: &m {name: a, " + ", ".join(f"k{i}: 1" for i in range(2000)) + "}\nmodels:\n" + "  - *m\n" * 10_000,
        TOO_MANY_VALUES,
    ),
    "four_megabytes_of_empty_maps": ("models: [" + ",".join(["{}"] * 1_390_000) + "]\n", TOO_MANY_VALUES),
    "nested_lists": (_nesting(20_000, "list"), "nesting deeper than 64 levels"),
    "nested_maps": (_nesting(20_000, "map"), "nesting deeper than 64 levels"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_check_hostile_file_exits_1_without_traceback(tmp_path: Path, name: str) -> None:
    text, message = HOSTILE[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    if name.startswith("bomb"):
        assert len(text) >= 1_000_000
    result = subprocess.run(
        [sys.executable, "-m", "ext_proc.cli", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=20,  # a bound for a hang, not a timing assertion
        check=False,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr[-2000:]
    assert len(result.stderr) < 10_000


def test_serve_hostile_file_exits_1_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(_nesting(20_000, "map"), encoding="utf-8")
    result = _run_module(
        "serve", "--policy", str(path), "--grpc-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0"
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "nesting deeper than 64 levels" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x01\x02\xff\xfe binary", "not UTF-8 text: "),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", "(yaml) line 1, column 1: character #x007f: "),
        (b"- a\n- b\n", "(root): must be a mapping, got a list"),
        (b"models:\n\t- x\n", "(yaml) line 2, column 1: "),
        (b"models: [\n", "(yaml) line 2, column 1: "),
        (b"a: 1\na: 2\n", "(yaml) line 2, column 1: duplicate key 'a' (first at line 1)"),
    ],
)
def test_check_bad_file_is_one_line_per_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: ")
    assert err.splitlines()[1].startswith(f"  {message}"), err


def test_check_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"{tmp_path}: 1 error(s)\n  cannot read the file: Is a directory\n"


def test_check_prints_the_count_of_errors_not_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "many.yaml"
    model = "  - {name: -bad, match: {path_prefix: /m}, tiers: [{name: p, route: r}]}\n"
    path.write_text("models:\n" + model * 150, encoding="utf-8")
    assert main(["check", str(path)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"{path}: 150 error(s)"
    assert len(lines) == 1 + 100 + 1
    assert lines[-1] == "  ... and 50 more error(s)"
