"""Smoke run of the memory benchmark: it starts a real `modelguard serve`, pushes requests through
the servicer and reports RSS figures that make sense."""

from __future__ import annotations

import json
from pathlib import Path

from bench import memory


def test_memory_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    assert memory.main(["--models", "50", "--requests", "2000", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["models"] == 50 and result["requests"] == 2000
    assert 10 < result["serve_idle_rss_mb"] < 1000
    assert 10 < result["after_mb"] < 1000 and result["cpu_s"] > 0
