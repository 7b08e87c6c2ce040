"""Smoke run of the reload benchmark: real Envoy and `modelguard serve` under traffic while the policy
is swapped every way it changes in production (ConfigMap symlink swap, rename over the file, in-place
rewrite + SIGHUP) and once for an invalid file: no request lost, every valid swap live, the invalid
one refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import reload
from ext_proc.processes import StackError, envoy_binary

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(180)
def test_reload_benchmark_smoke(tmp_path: Path) -> None:
    try:
        envoy_binary()
    except StackError as exc:
        pytest.skip(str(exc))
    assert reload.main(["--smoke", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "reload.json").read_text())
    assert results["passed"] and not results["problems"]
    assert results["load"]["requests"] == results["load"]["expected"] == 400 and results["load"]["lost"] == 0
    assert results["envoy"]["failure_mode_allowed"] == 0
    valid = [swap for swap in results["swaps"] if swap["valid"]]
    assert [swap["kind"] for swap in valid] == list(reload.KINDS)
    assert all(swap["live"] for swap in valid) and results["all_valid_live"]
    invalid = results["invalid"]
    assert invalid["refused"] and results["invalid_refused"]
    assert invalid["errors_after"] == invalid["errors_before"] + 1 and invalid["live_after"] == invalid["live_before"]
    assert results["reloads"]["success"] == len(valid) and results["reloads"]["error"] == 1
    assert "PASS" in (tmp_path / "reload.md").read_text()
