"""Smoke run of the scrape benchmark: real Envoy and `modelguard serve`, traffic while /metrics is
read back to back; every request is decided (none fails open) and every scrape is complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import scrape

pytestmark = pytest.mark.e2e


def test_scrape_benchmark_smoke(tmp_path: Path) -> None:
    argv = ["--models", "30", "--rate", "40", "--duration", "1.5", "--out", str(tmp_path)]
    assert scrape.main(argv) == 0  # non-zero when a scrape came back incomplete
    rows = {row["phase"]: row for row in json.loads((tmp_path / "scrape.json").read_text())}
    assert set(rows) == {"idle", "scraping"}
    scraping = rows["scraping"]
    assert scraping["requests"] >= 40 and scraping["scrapes"] > 0
    assert scraping["untagged_or_failed"] == 0 and scraping["failure_mode_allowed"] == 0
    assert "| 30 | scraping |" in (tmp_path / "scrape.md").read_text()
