"""bench.protection: runs per config and scenario, and the figures over repeats (no stack started:
run_demo is replaced by one that writes the report a run would)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import protection
from ext_proc.demo.runner import DemoOptions


def summary(false_trips: int, failed: int, opened: float | None = None, ejections: int | None = 2) -> dict[str, Any]:
    """A run's figures as main() keeps them: the report's summary and Envoy's ejections."""
    return {
        "protected": True,
        "requests": 7200,
        "failed": failed,
        "single_host_fault_failed": failed,
        "false_trips": false_trips,
        "fault_to_breaker_open_s": opened,
        "primary_share_at_end": 1.0,
        "expectations": {"no breaker trip while only one primary host is bad": false_trips == 0},
        "canary": None,
        "scenario": "bad_host",
        protection.EJECTIONS: ejections,
    }


def test_aggregate_sums_false_trips_counts_runs_and_takes_medians() -> None:
    runs = [
        {"exit": 0, **summary(0, 2)},
        {"exit": 1, **summary(2, 10, opened=0.5)},
        {"exit": 0, **summary(0, 4, ejections=1)},
        {"exit": 1, **summary(1, 6, opened=1.5, ejections=None)},
    ]
    found = protection.aggregate(runs)
    assert found["repeat"] == 4
    assert found["false_trips"] == 3  # summed, not a median (which would be 0.5)
    assert found["runs_with_trips"] == 2
    assert found["failed_runs"] == 2
    assert found["runs_let_back_in"] == 2  # ejected twice: 2 runs; once, or not known: 2 others
    assert found[protection.EJECTIONS] == 2
    assert found["failed"] == 5.0 and found["single_host_fault_failed"] == 5.0  # medians
    assert found["fault_to_breaker_open_s"] == 1.0  # the median of the runs that have one
    assert found["requests"] == 7200
    assert "protected" not in found and "expectations" not in found and "scenario" not in found
    assert found["runs"] == runs


def test_aggregate_leaves_out_a_figure_no_run_has() -> None:
    found = protection.aggregate([{"exit": 0, **summary(0, 0)}, {"exit": 0, **summary(0, 0)}])
    assert found["false_trips"] == 0 and found["runs_with_trips"] == 0 and found["failed_runs"] == 0
    assert "fault_to_breaker_open_s" not in found
    assert "| fault -> breaker open (s), median | - |" in protection.render({"m": found}).splitlines()


def test_render_over_repeats_names_sums_and_medians() -> None:
    results = {
        "envoy": protection.aggregate([{"exit": 0, **summary(0, 3)}, {"exit": 0, **summary(0, 5)}]),
        "modelguard": protection.aggregate([{"exit": 1, **summary(2, 1)}, {"exit": 0, **summary(0, 1)}]),
    }
    lines = protection.render(results, "bad_host").splitlines()
    assert lines[0] == "| | envoy | modelguard |"
    assert "| false trips (primary breaker opened), sum over the runs | 0 | 2 |" in lines
    assert "| runs with a false trip | 0 of 2 | 1 of 2 |" in lines
    assert "| client-visible failures, whole run, median | 4 | 1 |" in lines
    assert "| runs with an expectation failed | 0 of 2 | 1 of 2 |" in lines
    assert "| Envoy ejections of the bad host, median | 2 | 2 |" in lines
    assert "| runs where Envoy let it back in while bad (2+ ejections) | 2 of 2 | 2 of 2 |" in lines
    single = protection.render({"modelguard": {"exit": 0, **summary(0, 1, ejections=1)}}, "bad_host")
    assert "| runs where Envoy let it back in while bad (2+ ejections) | 0 of 1 |" in single.splitlines()


def test_render_one_run_keeps_the_incident_table() -> None:
    one = {"exit": 0, **summary(0, 46), "whole_fault_failed": 65, "fault_to_breaker_open_s": 0.242}
    lines = protection.render({"modelguard": one}).splitlines()
    assert lines[2] == "| client-visible failures in the whole-model fault | 65 |"
    assert "| false trips (one bad host) | 0 |" in lines
    assert "| clear -> first primary answer (s) | - |" in lines
    assert not any("runs with" in line or "median" in line for line in lines)


def fake_runs(monkeypatch: pytest.MonkeyPatch, trips: list[int]) -> list[DemoOptions]:
    """Replaces run_demo: each call writes a report with the next of ``trips``."""
    seen: list[DemoOptions] = []

    def run_demo(options: DemoOptions) -> int:
        assert options.out is not None
        figures = summary(trips[len(seen)], 1)
        seen.append(options)
        options.out.mkdir(parents=True, exist_ok=True)
        del figures[protection.EJECTIONS]  # report.json has them apart
        outlier = {"ejections_enforced_total": 2, "ejections_active": 0}
        (options.out / "report.json").write_text(json.dumps({"summary": figures, "outlier_detection": outlier}))
        return 0 if figures["false_trips"] == 0 else 1

    monkeypatch.setattr(protection, "run_demo", run_demo)
    return seen


def test_repeats_run_each_config_n_times_in_their_own_folders(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = fake_runs(monkeypatch, [0, 1, 0, 0, 0, 2])
    argv = ["--scenario", "bad_host", "--repeat", "3", "--configs", "envoy,modelguard", "--out", str(tmp_path)]
    assert protection.main(argv) == 0
    assert [o.out for o in seen] == [tmp_path / c / f"run-{k}" for c in ("envoy", "modelguard") for k in (1, 2, 3)]
    assert {o.scenario for o in seen} == {"bad_host"} and {o.duration for o in seen} == {36.0}
    assert [o.with_modelguard for o in seen] == [False] * 3 + [True] * 3
    document = json.loads((tmp_path / "protection.json").read_text())
    assert (document["scenario"], document["repeat"], document["duration"]) == ("bad_host", 3, 36.0)
    envoy, modelguard = document["results"]["envoy"], document["results"]["modelguard"]
    assert (envoy["false_trips"], envoy["runs_with_trips"]) == (1, 1)
    assert (modelguard["false_trips"], modelguard["runs_with_trips"]) == (2, 1)
    assert [r["false_trips"] for r in modelguard["runs"]] == [0, 0, 2]
    assert [r["exit"] for r in envoy["runs"]] == [0, 1, 0]
    table = (tmp_path / "protection.md").read_text()
    assert "| runs with a false trip | 1 of 3 | 1 of 3 |" in table
    assert "| runs where Envoy let it back in while bad (2+ ejections) | 3 of 3 | 3 of 3 |" in table
    assert "modelguard run 3/3: false trips 2" in capsys.readouterr().out


def test_one_run_keeps_the_single_run_shape(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = fake_runs(monkeypatch, [0])
    assert protection.main(["--configs", "modelguard", "--rate", "50", "--out", str(tmp_path)]) == 0
    assert seen[0].out == tmp_path / "modelguard"
    assert (seen[0].scenario, seen[0].duration, seen[0].rate) == ("incident", 80.0, 50.0)
    document = json.loads((tmp_path / "protection.json").read_text())
    assert document["rate"] == 50.0
    assert document["results"]["modelguard"] == {"exit": 0, **summary(0, 1)}


@pytest.mark.parametrize(
    "argv",
    [
        ["--repeat", "0"],
        ["--scenario", "nope"],
        ["--configs", "envoy,nope"],
        ["--scenario", "bad_host", "--duration", "10"],  # too short for its steps
    ],
)
def test_bad_arguments_stop_before_any_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str]) -> None:
    seen = fake_runs(monkeypatch, [])
    with pytest.raises(SystemExit) as stopped:
        protection.main([*argv, "--out", str(tmp_path)])
    assert stopped.value.code == 2 and seen == []
