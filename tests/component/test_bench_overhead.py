"""bench.overhead: its smoke mode end to end (real Envoy, modelguard, the no-op processor, wrk,
h2load), and the arithmetic of its report on figures made up here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import overhead
from ext_proc.processes import repo_root


def _leftover_processes(marker: str) -> list[str]:
    """Command lines of running processes that mention `marker` (the run's output folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in argv:
            found.append(f"{entry.name}: {argv}")
    return found


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_smoke_run_measures_every_config(tmp_path: Path) -> None:
    usable, why = overhead.tools_status()
    if not usable:
        pytest.skip(f"wrk/h2load unavailable: {why}")
    out = tmp_path / "overhead"
    done = subprocess.run(
        [sys.executable, "-m", "bench.overhead", "--smoke", "--out", str(out)],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    output = done.stdout[-4000:] + done.stderr[-4000:]
    assert done.returncode == 0, output
    assert not _leftover_processes(str(out)), _leftover_processes(str(out))

    results = json.loads((out / "overhead.json").read_text())
    table = (out / "overhead.md").read_text()
    assert table in done.stdout
    configs = results["configs"]
    assert list(configs) == ["a", "b", "d"]
    for key, config in configs.items():
        assert config["available"], (key, config.get("reason"))
        tput = config["throughput"]
        assert tput["rps"] > 0, (key, tput)
        assert tput["requests"] > 0
        assert 0 < tput["p50_us"] <= tput["p99_us"], (key, tput)
        assert tput["errors"] == 0, (key, tput)
        assert tput["failed_open"] == 0, (key, tput)
        assert tput["envoy_cpu_us_per_req"] > 0, (key, tput)
        if key == "a":
            assert tput["processor_cpu_us_per_req"] is None
        else:
            assert tput["processor_cpu_us_per_req"] > 0, (key, tput)
        latency = config["latency"]["50"]
        assert latency["samples"] > 0, (key, latency)
        assert latency["achieved_rps"] > 0, (key, latency)
        assert 0 < latency["p50_us"] <= latency["p90_us"] <= latency["p99_us"], (key, latency)
        assert latency["failed"] == 0, (key, latency)
        assert f"({key}) {config['label']}" in table

    # Envoy alone is the ceiling; noise allowed.
    assert configs["a"]["throughput"]["rps"] >= 0.8 * configs["d"]["throughput"]["rps"]
    assert results["load"]["basis"] == "d"
    assert results["load"]["rates"]["50"] == pytest.approx(configs["d"]["throughput"]["rps"] / 2, rel=0.01)
    ratios = results["ratios"]
    assert ratios["throughput_d_over_b"] > 0
    assert ratios["throughput_d_over_a"] > 0
    assert ratios["throughput_d_over_c"] is None  # (c) not run in smoke mode
    assert set(ratios["added_p99_us_at_50pct"]) == {"b", "bu", "c", "d", "da"}
    assert ratios["throughput_d_over_bu"] is None and ratios["throughput_da_over_b"] is None  # not run
    assert [t["pass"] is None for t in results["targets"]] == [False, False, True]


# ----------------------------------------------------------------------------- no tools needed


def _config(label: str, rps: float | None, p99_at_50: float | None, available: bool = True) -> dict[str, Any]:
    config: dict[str, Any] = {"label": label, "available": available}
    if not available:
        config["reason"] = "pip install failed\nmore detail"
        return config
    config["throughput"] = {
        "rps": rps,
        "p50_us": 1000.0,
        "p99_us": 2000.0,
        "processor_cpu_us_per_req": 300.0,
        "envoy_cpu_us_per_req": 150.0,
    }
    config["latency"] = {"50": {"p99_us": p99_at_50, "overloaded": False}}
    return config


def test_ratios_and_targets() -> None:
    configs = {
        "a": _config("A", 30000, 500),
        "b": _config("B", 3000, 2500),
        "c": _config("C", 1000, 9500),
        "d": _config("D", 2800, 2700),
    }
    ratios, targets = overhead._ratios(configs)
    assert ratios["throughput_d_over_b"] == pytest.approx(2800 / 3000, abs=1e-3)
    assert ratios["throughput_d_over_a"] == pytest.approx(2800 / 30000, abs=1e-3)
    assert ratios["throughput_d_over_c"] == pytest.approx(2.8)
    assert ratios["added_p99_us_at_50pct"] == {"b": 2000, "bu": None, "c": 9000, "d": 2200, "da": None}
    assert ratios["added_p99_d_over_b_at_50pct"] == pytest.approx(1.1)
    assert ratios["throughput_d_over_bu"] is None

    configs["bu"] = _config("BU", 3500, 2000)
    configs["da"] = _config("DA", 2500, 3000)
    ratios, _ = overhead._ratios(configs)
    assert ratios["throughput_d_over_bu"] == pytest.approx(2800 / 3500, abs=1e-3)
    assert ratios["throughput_da_over_b"] == pytest.approx(2500 / 3000, abs=1e-3)
    assert ratios["throughput_bu_over_b"] == pytest.approx(3500 / 3000, abs=1e-3)
    assert ratios["added_p99_d_over_bu_at_50pct"] == pytest.approx(2200 / 1500, abs=1e-3)
    assert ratios["added_p99_da_over_b_at_50pct"] == pytest.approx(2500 / 2000, abs=1e-3)
    assert [t["pass"] for t in targets] == [True, True, True]

    configs["d"] = _config("D", 2600, 2800)
    _, targets = overhead._ratios(configs)
    assert [t["pass"] for t in targets] == [False, False, True]


def test_an_unavailable_peer_leaves_the_rest_of_the_report() -> None:
    configs = {
        "a": _config("A", 30000, 500),
        "b": _config("B", 3000, 2500),
        "c": _config("C", None, None, available=False),
        "d": _config("D", 2800, 2700),
    }
    ratios, targets = overhead._ratios(configs)
    assert ratios["throughput_d_over_c"] is None
    assert targets[2]["pass"] is None
    results = {
        "meta": {
            "envoy": "envoy  version: abc/1.40.0/Clean/RELEASE/BoringSSL",
            "machine": {"cpus": 2, "cpu_model": "test"},
            "options": {
                "concurrency": 16,
                "duration_s": 10,
                "rounds": 2,
                "smoke": False,
                "profile": False,
                "load_fractions": [0.5],
            },
        },
        "configs": configs,
        "load": {"basis": "d", "capacity_rps": 2800, "rates": {"50": 1400}},
        "ratios": ratios,
        "targets": targets,
    }
    table = overhead.markdown(results)
    assert "Envoy 1.40.0" in table
    assert "| (c) C | unavailable: pip install failed |" in table
    assert "| (d)/(c) throughput | - | ≥ 2 | n/a |" in table
    assert "| (d)/(b) throughput | 0.93 | ≥ 0.9 | pass |" in table


def test_load_paths_spread_over_the_models() -> None:
    assert overhead.load_paths(1) == ["/v2/models/model-0/infer"]
    assert overhead.load_paths(4) == [f"/v2/models/model-{i}/infer" for i in (0, 5, 10, 15)]
    assert len(overhead.load_paths(100)) == overhead.MODELS


def test_smoke_options() -> None:
    options = overhead.parse_args(["--smoke", "--out", "x"])
    assert options.configs == ("a", "b", "d")
    assert options.fractions == (0.5,)
    assert options.duration == 1 and options.rounds == 1
    options = overhead.parse_args(["--configs", "d,a", "--loads", "none"])
    assert options.configs == ("a", "d")
    assert options.fractions == ()
    with pytest.raises(SystemExit):
        overhead.parse_args(["--configs", "a,x"])


def test_missing_tools_without_root_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.overhead.shutil.which", lambda name: None)
    monkeypatch.setattr("bench.overhead.os.geteuid", lambda: 1000)
    usable, why = overhead.tools_status()
    assert not usable
    assert "wrk and h2load" in why and "apt-get install -y wrk nghttp2-client" in why
    with pytest.raises(overhead.BenchError, match="not installable"):
        overhead.ensure_tools(Path("/nonexistent/apt-get.log"))
