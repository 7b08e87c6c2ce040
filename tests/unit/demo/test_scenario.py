"""The demo's scenarios: the incident kept as it was, and ``bad_host``'s steps timed from the
outlier detection of the reference Envoy config (a host let back in while it is still bad)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from ext_proc.demo import report, scenario
from ext_proc.demo.loadgen import Sample
from ext_proc.demo.report import render_summary
from ext_proc.processes import reference_envoy_config

START = 1_000_000.0


def seconds(value: str) -> float:
    assert value.endswith("s") and not value.endswith("ms"), value
    return float(value[:-1])


def primary_outlier_detection() -> dict[str, Any]:
    config = yaml.safe_load(reference_envoy_config().read_text())
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    found: dict[str, Any] = clusters["recommender-resnet50"]["outlier_detection"]
    return found


def test_the_scenario_s_envoy_timings_are_the_reference_config_s() -> None:
    outlier = primary_outlier_detection()
    assert seconds(outlier["base_ejection_time"]) == scenario.BASE_EJECTION_S
    assert seconds(outlier["interval"]) == scenario.EJECTION_INTERVAL_S
    # A second ejection lasts twice the first: not capped below that.
    assert seconds(outlier["max_ejection_time"]) >= 2 * scenario.BASE_EJECTION_S


def test_bad_host_is_let_back_in_while_still_bad_and_cleared_inside_the_second_ejection() -> None:
    steps = scenario.steps("bad_host", scenario.DEFAULT_DURATION["bad_host"])
    assert [s.kind for s in steps] == ["single_host_fault", "single_host_cleared"]
    fault, cleared = steps
    assert fault.faults == {"primary-1": scenario.BAD_HOST}  # one host of three, nothing else
    assert cleared.faults == {"primary-1": None}
    assert "primary-1" in scenario.PRIMARY_HOSTS and len(scenario.PRIMARY_HOSTS) == 3
    base, interval = scenario.BASE_EJECTION_S, scenario.EJECTION_INTERVAL_S
    # First ejection: within about a second of the fault; back in by the interval check after
    # base_ejection_time. The host must still be bad then, with margin.
    latest_back_in = fault.at + 1.0 + base + interval
    assert cleared.at >= latest_back_in + 2.0
    # ... and cleared while its second ejection (2 x base, from the earliest return) still holds it.
    earliest_second_ejection_end = fault.at + base + 2 * base
    assert cleared.at < earliest_second_ejection_end
    # The load outlasts the host's healthy return (the second ejection's end, at the latest).
    assert scenario.DEFAULT_DURATION["bad_host"] >= latest_back_in + 2 * base + interval
    assert scenario.DEFAULT_DURATION["bad_host"] <= 40  # short enough to repeat 20 times


def test_bad_host_steps_do_not_stretch_with_the_duration() -> None:
    assert scenario.steps("bad_host", 36.0) == scenario.steps("bad_host", 120.0)
    with pytest.raises(ValueError, match="bad_host"):
        scenario.steps("bad_host", scenario.BAD_HOST_CLEARED_AT)


def test_the_incident_is_unchanged_and_the_default() -> None:
    assert scenario.DEFAULT_DURATION["incident"] == 80.0
    steps = scenario.steps("incident", 80.0)
    assert steps == scenario.incident(80.0)
    assert [(s.at, s.kind) for s in steps] == [
        (0.0, "canary_fault"),
        (12.0, "single_host_fault"),
        (28.0, "whole_model_fault"),
        (52.0, "fault_cleared"),
    ]
    with pytest.raises(KeyError):
        scenario.steps("no-such-scenario", 80.0)


def bad_host_samples() -> list[Sample]:
    """36 s at 10 req/s, every answer from primary; one canary-arm failure and one stable failure
    after the host's fault at 1 s, and one failure before it."""
    samples = [Sample(START + i / 10, 0.2, 200, "primary", False, "h", "primary", None, "stable") for i in range(360)]
    samples[5] = Sample(START + 0.5, 0.01, 503, "", False, "h", "", None, "stable")
    samples[200] = Sample(START + 20.0, 0.01, 503, "", False, "h", "", None, "canary")
    samples[250] = Sample(START + 25.0, 0.01, 503, "", False, "h", "", None, "stable")
    return samples


def bad_host_summary(transitions: list[report.Transition]) -> report.Summary:
    events = [
        report.Event(START + 1.0, "single_host_fault", "primary-1 fails (503)"),
        report.Event(START + 16.0, "single_host_cleared", "primary-1 healthy again"),
    ]
    return report.summarize(
        bad_host_samples(),
        events,
        transitions,
        "recommender",
        "primary",
        "light",
        True,
        START + 36,
        canary_changes=[],
        scenario="bad_host",
    )


def trip(at: float, to_state: str = "open") -> report.Transition:
    return report.Transition(START + at, "recommender", "primary", "closed", to_state, "failure_rate")


def test_bad_host_summary_counts_every_trip_after_the_fault_even_after_the_clear() -> None:
    clean = bad_host_summary([])
    assert clean.false_trips == 0 and clean.passed, clean.expectations
    assert clean.scenario == "bad_host"
    assert clean.single_host_fault_failed == 1  # from the fault to the end, the canary arm left out
    assert clean.failed == 3
    assert set(clean.expectations) == {
        "no breaker trip while only one primary host is bad",
        "primary serves >= 90% in the last 10 s",
        "the healthy v2 canary is not aborted",
    }
    tripped = bad_host_summary([trip(11.5), trip(12.0, "half_open"), trip(30.0)])
    assert tripped.false_trips == 2
    assert not tripped.passed
    text = render_summary(tripped)
    assert "[FAILED] no breaker trip while only one primary host is bad" in text
    assert "whole-model fault" not in text and "breaker open" not in text


def test_the_slow_fault_hangs_every_primary_host_past_the_per_try_timeout() -> None:
    steps = scenario.steps("slow_fault", scenario.DEFAULT_DURATION["slow_fault"])
    assert [(s.at, s.kind) for s in steps] == [(12.0, "whole_model_fault"), (26.0, "fault_cleared")]
    assert set(steps[0].faults) == set(scenario.PRIMARY_HOSTS)
    fault = scenario.HUNG
    assert fault["error_rate"] == 1.0 and not fault.get("fail_fast")  # each call fails only after hanging
    config = yaml.safe_load(reference_envoy_config().read_text())
    routes = str(config)
    assert "per_try_timeout': '1s'" in routes  # the hang outlasts every try
    assert fault["latency"]["median_ms"] > 2 * 1000


def slow_fault_summary(open_at: float | None) -> report.Summary:
    """40 s at 10 req/s; the hang from 12 s to 26 s; before the breaker opens calls fail, after
    it the light tier serves."""
    samples = []
    for i in range(400):
        t = i / 10
        hung = 12.0 <= t < 26.0
        if hung and (open_at is None or t < 12.0 + open_at):
            samples.append(Sample(START + t, 2.5, 504, "primary", False, "h", "primary", None, "stable"))
        elif hung:
            samples.append(Sample(START + t, 0.04, 200, "light", True, "h", "light", None, "stable"))
        else:
            samples.append(Sample(START + t, 0.2, 200, "primary", False, "h", "primary", None, "stable"))
    events = [
        report.Event(START + 12.0, "whole_model_fault", "hang"),
        report.Event(START + 26.0, "fault_cleared", "fault cleared"),
    ]
    transitions = [] if open_at is None else [trip(12.0 + open_at)]
    return report.summarize(
        samples, events, transitions, "recommender", "primary", "light", True, START + 40, scenario="slow_fault"
    )


def test_slow_fault_expects_the_breaker_open_within_a_second() -> None:
    quick = slow_fault_summary(0.7)
    assert quick.fault_to_breaker_open_s == 0.7 and quick.passed, quick.expectations
    assert "one bad primary host" not in render_summary(quick)
    late = slow_fault_summary(1.3)
    assert not late.passed
    assert late.expectations["breaker opens within 1 s of the hang, before any call answers"] is False
    assert not slow_fault_summary(None).passed
