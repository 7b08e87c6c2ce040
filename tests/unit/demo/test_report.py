"""The demo's timeline and figures, from synthetic samples whose answers are known."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ext_proc.demo import chart, report
from ext_proc.demo.loadgen import Sample, latency_ms, read_samples
from ext_proc.demo.logs import read_transitions
from ext_proc.demo.report import render_summary

START = 1_000_000.0


def sample(t: float, tier: str, status: int = 200, latency: float = 0.2) -> Sample:
    variant = {"primary": "primary", "light": "light"}.get(tier, "")
    return Sample(START + t, latency, status, tier, tier not in ("primary", ""), "h", variant, None)


def incident_samples() -> list[Sample]:
    samples = []
    for tenth in range(0, 600):
        t = tenth / 10
        if t < 30:
            samples.append(sample(t, "primary"))
        elif t < 30.5:
            samples.append(sample(t, "primary", status=503, latency=0.01))  # before the breaker opens
        elif t < 48:  # the breaker stays open until 48.2 s, after the fault clears at 45 s
            samples.append(sample(t, "light", latency=0.05))
        else:
            samples.append(sample(t, "primary"))
    return samples


EVENTS = [
    report.Event(START + 10, "single_host_fault", "one host"),
    report.Event(START + 30, "whole_model_fault", "whole model"),
    report.Event(START + 45, "fault_cleared", "cleared"),
]
TRANSITIONS = [
    report.Transition(START + 30.5, "recommender", "primary", "closed", "open", "consecutive_failures"),
    report.Transition(START + 32.5, "recommender", "primary", "open", "half_open", "open period elapsed"),
    report.Transition(START + 32.6, "recommender", "primary", "half_open", "open", "probe failed"),
    report.Transition(START + 47.9, "recommender", "primary", "open", "half_open", "open period elapsed"),
    report.Transition(START + 48.2, "recommender", "primary", "half_open", "closed", "probes succeeded"),
]


def test_summary_figures_come_from_events_samples_and_transitions() -> None:
    summary = report.summarize(
        incident_samples(), EVENTS, TRANSITIONS, "recommender", "primary", "light", True, START + 60
    )
    assert summary.requests == 600
    assert summary.whole_fault_requests == 150 and summary.whole_fault_failed == 5
    assert summary.fault_to_breaker_open_s == 0.5
    assert summary.fault_to_first_light_s == 0.5
    assert summary.clear_to_breaker_closed_s == 3.2
    assert summary.clear_to_first_primary_s == 3.0
    assert summary.false_trips == 0
    assert summary.light_share_during_fault == 1.0
    assert summary.primary_share_at_end == 1.0
    assert summary.passed, summary.expectations


def test_a_trip_while_one_host_is_bad_is_a_false_trip() -> None:
    early = [report.Transition(START + 12, "recommender", "primary", "closed", "open", "failure_rate"), *TRANSITIONS]
    summary = report.summarize(incident_samples(), EVENTS, early, "recommender", "primary", "light", True, START + 60)
    assert summary.false_trips == 1
    assert not summary.passed
    assert "[FAILED] no breaker trip while only one primary host is bad" in render_summary(summary)


def test_too_many_client_errors_fail_the_run() -> None:
    samples = [s if not (30 <= s.t - START < 45) else sample(s.t - START, "", status=503) for s in incident_samples()]
    summary = report.summarize(samples, EVENTS, TRANSITIONS, "recommender", "primary", "light", True, START + 60)
    assert summary.whole_fault_failed == 150
    assert (
        summary.expectations["client-visible errors <= 20% during the whole-model fault (the fault alone: 80%)"]
        is False
    )


def test_latency_percentiles_in_ms() -> None:
    """The demo's p99 of 100 requests is the slowest one (rank floor(0.99 * 100) + 1); 0 for none."""
    latencies = [v / 1000 for v in range(1, 101)]
    assert latency_ms(latencies, 0.99) == 100.0
    assert latency_ms(latencies, 0.5) == 51.0
    assert latency_ms([0.01234], 0.99) == 12.3
    assert latency_ms([], 0.99) == 0.0


def test_timeline_rows_per_second() -> None:
    rows = report.timeline(incident_samples(), START, START + 60, TRANSITIONS, [], "recommender", "primary", True)
    assert len(rows) == 60
    assert rows[0].tiers == {"primary": 10} and rows[0].breaker == "closed"
    assert rows[30].failed == 5 and rows[30].tiers == {"failed": 5, "light": 5} and rows[30].breaker == "open"
    assert rows[47].breaker == "half_open" and rows[48].breaker == "closed"
    assert rows[10].p50_ms == 200.0
    text = report.table(rows, ["primary", "light", "default"])
    assert text.splitlines()[0].startswith("| t(s) | req | primary | light | default | failed | errors")
    assert "| 30 | 10 | 0% | 50% | 0% | 50% | 5 |" in text


def test_unprotected_rows_name_the_variant_and_have_no_breaker() -> None:
    raw = [Sample(START + 0.5, 0.2, 200, "", False, "primary-1", "primary", None)]
    rows = report.timeline(raw, START, START + 1, [], [], "recommender", "primary", False)
    assert rows[0].tiers == {"primary (unprotected)": 1} and rows[0].breaker == "n/a"


def test_chart_and_json_are_written(tmp_path: Path) -> None:
    samples = incident_samples()
    rows = report.timeline(
        samples, START, START + 60, TRANSITIONS, [report.Poll(START + 12, 1)], "recommender", "primary", True
    )
    summary = report.summarize(samples, EVENTS, TRANSITIONS, "recommender", "primary", "light", True, START + 60)
    chart.draw(tmp_path / "t.png", rows, EVENTS, START, ["primary", "light", "default"], "demo")
    report.write_json(tmp_path / "r.json", summary, rows, EVENTS, {"x": 1})
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["passed"] is True and len(document["timeline"]) == 60 and document["x"] == 1
    assert rows[12].ejected_hosts == 1 and rows[5].ejected_hosts == 0


def test_transitions_are_read_from_modelguards_json_log(tmp_path: Path) -> None:
    log = tmp_path / "modelguard.log"
    entry = {
        "ts": "2026-11-21T05:55:02.134Z",
        "event": "breaker_transition",
        "model": "recommender",
        "tier": "primary",
        "from_state": "closed",
        "to_state": "open",
        "cause": "failure_rate",
    }
    log.write_text('{"event": "serving"}\nnot json\n' + json.dumps(entry) + "\n")
    (found,) = read_transitions(log)
    assert found.to_state == "open" and found.cause == "failure_rate"
    assert abs(found.t - 1795240502.134) < 1e-6


def test_samples_round_trip_through_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    original = incident_samples()[:3]
    path.write_text("".join(json.dumps(asdict(s)) + "\n" for s in original))
    assert read_samples(path) == original
