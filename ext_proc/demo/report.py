"""The demo's timeline: what clients saw each second, what the breakers and the canary did, and
the figures that say whether modelguard helped (time to detect, to reroute, to recover; errors
seen). The canary's own figures and band are in canary.py."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ext_proc.demo import canary
from ext_proc.demo.canary import CanaryChange, CanarySummary
from ext_proc.demo.loadgen import CANARY_ARM, Sample, latency_ms

STATE_CODES = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True, slots=True)
class Event:
    """A scenario step (``kind`` is its key, e.g. ``whole_model_fault``), at wall-clock ``t``."""

    t: float
    kind: str
    label: str


@dataclass(frozen=True, slots=True)
class Transition:
    """A breaker transition, as modelguard logged it."""

    t: float
    model: str
    tier: str
    from_state: str
    to_state: str
    cause: str


@dataclass(frozen=True, slots=True)
class Poll:
    """What the runner read off Envoy's admin stats at ``t``."""

    t: float
    ejected_hosts: int


@dataclass
class Row:
    second: int
    requests: int
    tiers: dict[str, int]
    failed: int
    p50_ms: float
    p99_ms: float
    breaker: str
    ejected_hosts: int
    arms: dict[str, int] = field(default_factory=dict)
    """Requests per x-modelguard-arm (canary, stable); requests on no arm are not counted."""
    canary_failed: int = 0
    canary: str = ""
    """The canary's state at the end of the second; "" without a canary."""


@dataclass
class Summary:
    protected: bool
    requests: int
    failed: int
    single_host_fault_failed: int
    whole_fault_requests: int
    whole_fault_failed: int
    whole_fault_p99_ms: float
    false_trips: int
    fault_to_breaker_open_s: float | None
    fault_to_first_light_s: float | None
    clear_to_first_primary_s: float | None
    clear_to_breaker_closed_s: float | None
    light_share_during_fault: float
    primary_share_at_end: float
    expectations: dict[str, bool] = field(default_factory=dict)
    canary: CanarySummary | None = None
    scenario: str = "incident"
    """The scenario played (scenario.SCENARIOS): ``bad_host`` has no whole-model fault, so only its
    one-bad-host figures mean something, counted from the host's fault to the end of the run."""

    @property
    def passed(self) -> bool:
        return all(self.expectations.values())


FAILED = "failed"


def served_by(sample: Sample) -> str:
    """Who answered the client well: the tier modelguard named, else the model variant (no
    modelguard on the path), else Envoy; ``failed`` when the client got no good answer."""
    if sample.failed:
        return FAILED
    if sample.tier:
        return sample.tier
    if sample.variant:
        return f"{sample.variant} (unprotected)"
    return "envoy"


def _event(events: Sequence[Event], kind: str) -> Event | None:
    return next((e for e in events if e.kind == kind), None)


def timeline(
    samples: Sequence[Sample],
    start: float,
    end: float,
    transitions: Sequence[Transition],
    polls: Sequence[Poll],
    model: str,
    primary_tier: str,
    protected: bool,
    canary_changes: Sequence[CanaryChange] = (),
    canary_start: str = "",
) -> list[Row]:
    """One row per second of the run. ``canary_start``: the canary's state before its first logged
    change ("" when the model has none, and then no row has a canary state)."""
    seconds = max(1, int(end - start + 0.999))
    by_second: list[list[Sample]] = [[] for _ in range(seconds)]
    for sample in samples:
        index = int(sample.t - start)
        if 0 <= index < seconds:
            by_second[index].append(sample)
    primary = [t for t in transitions if t.model == model and t.tier == primary_tier]
    rows = []
    for index, group in enumerate(by_second):
        moment = start + index + 1
        state = "closed"
        for transition in primary:
            if transition.t <= moment:
                state = transition.to_state
        ejected = 0
        for poll in polls:
            if poll.t <= moment:
                ejected = poll.ejected_hosts
        latencies = sorted(s.latency for s in group)
        rows.append(
            Row(
                second=index,
                requests=len(group),
                tiers=dict(Counter(served_by(s) for s in group)),
                failed=sum(s.failed for s in group),
                p50_ms=latency_ms(latencies, 0.5),
                p99_ms=latency_ms(latencies, 0.99),
                breaker=state if protected else "n/a",
                ejected_hosts=ejected,
                arms=dict(Counter(s.arm for s in group if s.arm)),
                canary_failed=sum(s.failed for s in group if s.arm == CANARY_ARM),
                canary=canary.state_at(canary_changes, model, canary_start, moment) if canary_start else "",
            )
        )
    return rows


def summarize(
    samples: Sequence[Sample],
    events: Sequence[Event],
    transitions: Sequence[Transition],
    model: str,
    primary_tier: str,
    light_tier: str,
    protected: bool,
    end: float,
    canary_changes: Sequence[CanaryChange] | None = None,
    scenario: str = "incident",
) -> Summary:
    """The run's figures and expectations; ``canary_changes`` None: the model has no canary (or no
    modelguard judged it), so there are no canary figures. ``scenario`` picks the expectations: the
    incident's, or ``bad_host``'s (no trip, primary still serving, a healthy canary left alone)."""
    single = _event(events, "single_host_fault")
    whole = _event(events, "whole_model_fault")
    clear = _event(events, "fault_cleared")
    single_t = single.t if single else end
    whole_t = whole.t if whole else end
    clear_t = clear.t if clear else end
    primary = [t for t in transitions if t.model == model and t.tier == primary_tier]

    def between(low: float, high: float) -> list[Sample]:
        return [s for s in samples if low <= s.t < high]

    in_fault = between(whole_t, clear_t)
    fault_latencies = sorted(s.latency for s in in_fault)
    opened = next((t.t for t in primary if t.to_state == "open" and t.t >= whole_t), None)
    closed = next((t.t for t in primary if t.to_state == "closed" and t.t >= clear_t), None)
    first_light = next((s.t for s in sorted(in_fault, key=lambda s: s.t) if served_by(s) == light_tier), None)
    after_clear = sorted(between(clear_t, end), key=lambda s: s.t)
    primary_label = primary_tier if protected else f"{primary_tier} (unprotected)"
    first_primary = next((s.t for s in after_clear if served_by(s) == primary_label and not s.failed), None)
    tail = between(end - 10, end)
    settled = [s for s in in_fault if opened is not None and s.t >= opened]
    summary = Summary(
        protected=protected,
        requests=len(samples),
        failed=sum(s.failed for s in samples),
        # The bad host's cost to clients: a canary still running then fails on its own account.
        single_host_fault_failed=sum(s.failed for s in between(single_t, whole_t) if s.arm != CANARY_ARM),
        whole_fault_requests=len(in_fault),
        whole_fault_failed=sum(s.failed for s in in_fault),
        whole_fault_p99_ms=latency_ms(fault_latencies, 0.99),
        false_trips=sum(1 for t in primary if t.to_state == "open" and single_t <= t.t < whole_t),
        fault_to_breaker_open_s=None if opened is None else round(opened - whole_t, 3),
        fault_to_first_light_s=None if first_light is None else round(first_light - whole_t, 3),
        clear_to_first_primary_s=None if first_primary is None else round(first_primary - clear_t, 3),
        clear_to_breaker_closed_s=None if closed is None else round(closed - clear_t, 3),
        light_share_during_fault=round(sum(served_by(s) == light_tier for s in settled) / len(settled), 3)
        if settled
        else 0.0,
        primary_share_at_end=round(sum(served_by(s) == primary_label for s in tail) / len(tail), 3) if tail else 0.0,
        scenario=scenario,
    )
    if protected and scenario == "bad_host":
        summary.expectations = {
            "no breaker trip while only one primary host is bad": summary.false_trips == 0,
            "primary serves >= 90% in the last 10 s": summary.primary_share_at_end >= 0.9,
        }
        if canary_changes is not None:
            summary.canary = canary.summarize(samples, canary_changes, model)
            summary.expectations["the healthy v2 canary is not aborted"] = not summary.canary.aborted
    elif protected and scenario == "slow_fault":
        summary.expectations = {
            # slow_call_duration (the demo's 500 ms) and a run of min_calls calls in flight past it
            "breaker opens within 1 s of the hang, before any call answers": summary.fault_to_breaker_open_s is not None
            and summary.fault_to_breaker_open_s <= 1.0,
            "the light tier serves >= 80% once the breaker is open": summary.light_share_during_fault >= 0.8,
            "client-visible errors <= 20% during the hang (the fault alone: 100%)": (
                summary.whole_fault_failed <= 0.2 * max(1, summary.whole_fault_requests)
            ),
            "primary serves >= 90% in the last 10 s": summary.primary_share_at_end >= 0.9,
        }
    elif scenario == "overload":
        summary.expectations = {}  # the ramp's own (demo/overload_report.py), which the runner adds
    elif protected:
        summary.expectations = {
            "no breaker trip while only one primary host is bad": summary.false_trips == 0,
            "breaker opens within 5 s of the whole-model fault": summary.fault_to_breaker_open_s is not None
            and summary.fault_to_breaker_open_s <= 5.0,
            "the light tier serves >= 80% once the breaker is open": summary.light_share_during_fault >= 0.8,
            # The fault fails 80% of calls by itself; a quarter of that leaves room for the
            # detection window, whose cost is a fixed ~1-2 s of traffic whatever the run's length.
            "client-visible errors <= 20% during the whole-model fault (the fault alone: 80%)": (
                summary.whole_fault_failed <= 0.2 * max(1, summary.whole_fault_requests)
            ),
            "primary serves >= 90% in the last 10 s": summary.primary_share_at_end >= 0.9,
        }
        if canary_changes is not None:
            summary.canary = canary.summarize(samples, canary_changes, model)
            summary.expectations.update(canary.expectations(summary.canary))
    else:
        summary.expectations = {"traffic flowed (no modelguard)": summary.requests > 0}
    return summary


def table(rows: Sequence[Row], tier_order: Sequence[str]) -> str:
    """The markdown timeline; with a canary, three more columns: requests on its arm, how many of
    them failed, and its state (the second it turns ``aborted`` marks the abort)."""
    columns = [*tier_order]
    for row in rows:
        for name in row.tiers:
            if name not in columns:
                columns.append(name)
    with_canary = any(row.canary for row in rows)
    header = ["t(s)", "req", *columns, "errors", "p50 ms", "p99 ms", "breaker", "ejected"]
    align = "|" + "---:|" * (len(header) - 2) + ":---|---:|"
    if with_canary:
        header += ["canary arm", "canary errors", "canary"]
        align += "---:|---:|:---|"
    lines = ["| " + " | ".join(header) + " |", align]
    for row in rows:
        shares = [f"{row.tiers.get(c, 0) / row.requests:.0%}" if row.requests else "-" for c in columns]
        cells = [
            str(row.second),
            str(row.requests),
            *shares,
            str(row.failed),
            f"{row.p50_ms:g}",
            f"{row.p99_ms:g}",
            row.breaker,
            str(row.ejected_hosts),
        ]
        if with_canary:
            cells += [str(row.arms.get(CANARY_ARM, 0)), str(row.canary_failed), row.canary]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def marks(events: Sequence[Event], canary_changes: Sequence[CanaryChange], start: float) -> str:
    """The scenario's steps and the canary's changes, in time order, each with its cause: what the
    table's columns show only as a state."""
    found = [(e.t - start, e.label) for e in events]
    found += [(c.t - start, f"canary {change_text(c)}") for c in canary_changes]
    return "\n".join(f"- t={t:5.1f} s  {label}" for t, label in sorted(found))


def change_text(change: CanaryChange) -> str:
    return (
        f"{change.from_state} -> {change.to_state} ({change.from_weight:.0%} -> {change.to_weight:.0%}): "
        f"{change.cause}" + (f", by {change.caller}" if change.caller else "")
    )


def write_json(
    path: Path, summary: Summary, rows: Sequence[Row], events: Sequence[Event], extra: dict[str, Any]
) -> None:
    document = {
        "summary": asdict(summary),
        "passed": summary.passed,
        "events": [asdict(e) for e in events],
        "timeline": [asdict(r) for r in rows],
        **extra,
    }
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")


def render_summary(summary: Summary) -> str:
    """The summary the demo prints last: the figures, then each expectation and whether it held."""

    def seconds(value: float | None) -> str:
        return "never" if value is None else f"{value:.2f} s"

    lines = [f"requests {summary.requests}, client-visible errors {summary.failed}"]
    if summary.scenario == "overload":  # no fault: the ramp's table says it all
        lines.append("expectations:")
        lines += [f"  [{'ok' if held else 'FAILED'}] {name}" for name, held in summary.expectations.items()]
        return "\n".join(lines)
    if summary.scenario != "slow_fault":  # it has no bad host
        lines.append(
            f"one bad primary host: {summary.single_host_fault_failed} client errors, "
            f"{summary.false_trips} breaker trips"
        )
    if summary.scenario == "bad_host":  # no whole-model fault: its figures would only say "never"
        lines.append("(counted from the host's fault to the end of the run, the canary arm's errors left out)")
    else:
        lines.append(
            f"whole-model fault: {summary.whole_fault_failed} of {summary.whole_fault_requests} requests failed "
            f"for clients, p99 {summary.whole_fault_p99_ms:g} ms"
        )
    if summary.protected and summary.scenario != "bad_host":
        lines += [
            f"fault -> breaker open {seconds(summary.fault_to_breaker_open_s)}, "
            f"-> first light answer {seconds(summary.fault_to_first_light_s)}; light share while open "
            f"{summary.light_share_during_fault:.0%}",
            f"fault cleared -> first primary answer {seconds(summary.clear_to_first_primary_s)}, "
            f"-> breaker closed {seconds(summary.clear_to_breaker_closed_s)}",
        ]
    if summary.canary is not None:
        lines += canary.render(summary.canary)
    lines.append("expectations:")
    lines += [f"  [{'ok' if held else 'FAILED'}] {name}" for name, held in summary.expectations.items()]
    return "\n".join(lines)
