"""`modelguard demo` end to end, shortened: real Envoy, modelguard, six model-server processes
(the canary's bad v2 among them), the load generator, the incident script, and the report it
writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

DURATION = "40"
RATE = "50"


def run_demo(out: Path, *extra: str) -> tuple[int, str, dict[str, Any]]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ext_proc.cli",
            "demo",
            "--duration",
            DURATION,
            "--rate",
            RATE,
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    return result.returncode, result.stdout + result.stderr, report


def test_demo_incident_with_and_without_modelguard(tmp_path: Path) -> None:
    code, output, report = run_demo(tmp_path / "with")
    assert code == 0, output
    summary = report["summary"]
    assert report["passed"] is True
    assert summary["false_trips"] == 0  # one bad host is Envoy's business
    assert summary["fault_to_breaker_open_s"] is not None and summary["fault_to_breaker_open_s"] <= 5.0
    assert summary["light_share_during_fault"] >= 0.8  # the tier shift
    assert summary["whole_fault_failed"] <= 0.2 * summary["whole_fault_requests"]  # bounded client errors
    assert summary["clear_to_breaker_closed_s"] is not None  # recovery
    assert summary["primary_share_at_end"] >= 0.9
    assert [e["kind"] for e in report["events"]] == [
        "canary_fault",
        "single_host_fault",
        "whole_model_fault",
        "fault_cleared",
    ]
    assert (tmp_path / "with" / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert "breaker open" in output and "expectations:" in output

    # The bad v2 at 10% of users: aborted by modelguard (a guardrail, or the canary route's breaker
    # opening on failures in a row: which comes first depends on the order the failures come in),
    # after few failures, and for good.
    canary = summary["canary"]
    assert canary["aborted"] is True, canary
    assert canary["abort_cause"].startswith(("guardrail", "canary breaker open")), canary
    assert canary["abort_caller"] == "modelguard", canary
    assert 0 < canary["failed_before_abort"] <= 20, canary
    assert canary["canary_after_abort"] == 0 and canary["stable_after_abort"] > 0, canary
    assert canary["first_call_to_abort_s"] is not None, canary
    (abort,) = [c for c in report["canary_changes"] if c["to_state"] == "aborted"]
    assert (abort["from_weight"], abort["to_weight"]) == (0.1, 0.0)
    assert "canary active -> aborted" in output  # the live view saw it
    timeline = (tmp_path / "with" / "timeline.md").read_text()
    assert "canary active -> aborted (10% -> 0%): " in timeline

    code, output, unprotected = run_demo(tmp_path / "without", "--without-modelguard")
    assert code == 0, output
    bare = unprotected["summary"]
    assert bare["canary"] is None  # no modelguard, no canary: v2 gets no traffic
    # Same scenario without the ext_proc filter: most calls in the whole-model fault fail.
    assert bare["whole_fault_failed"] >= 0.5 * bare["whole_fault_requests"]
    assert bare["whole_fault_failed"] >= 5 * max(1, summary["whole_fault_failed"])


def test_demo_overload_ramp_keeps_critical_requests_and_sheds_the_sheddable_first(tmp_path: Path) -> None:
    """The load-ramp scene, shortened: 0.5 to 2 x the primary's capacity in four 6 s stages."""
    result = subprocess.run(
        [sys.executable, "-m", "ext_proc.cli", "demo", "--scenario", "overload", "--duration", "24", "--no-chart",
         "--out", str(tmp_path / "overload")],
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    report = json.loads((tmp_path / "overload" / "report.json").read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    figures = report["overload"]
    assert figures["critical_success"] >= 0.99
    assert figures["sheddable_shed"] > 0 and figures["standard_shed"] == 0
    assert figures["served_p99_max_ms"] <= 2 * figures["served_p99_unloaded_ms"]
    assert [stage["rate"] for stage in report["stages"]] == [29, 58, 87, 116]
    assert (tmp_path / "overload" / "stages.md").exists()
