"""The demo's timeline: what clients saw each second, what the breakers did, and the figures
that say whether modelguard helped (time to detect, to reroute, to recover; errors seen)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ext_proc.demo.loadgen import Sample, latency_ms

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
) -> list[Row]:
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
) -> Summary:
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
        single_host_fault_failed=sum(s.failed for s in between(single_t, whole_t)),
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
    )
    if protected:
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
    else:
        summary.expectations = {"traffic flowed (no modelguard)": summary.requests > 0}
    return summary


def table(rows: Sequence[Row], tier_order: Sequence[str]) -> str:
    columns = [*tier_order]
    for row in rows:
        for name in row.tiers:
            if name not in columns:
                columns.append(name)
    header = ["t(s)", "req", *columns, "errors", "p50 ms", "p99 ms", "breaker", "ejected"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * (len(header) - 2) + ":---|---:|"]
    for row in rows:
        shares = [f"{row.tiers.get(c, 0) / row.requests:.0%}" if row.requests else "-" for c in columns]
        cells = [
            str(row.second),
            str(row.requests),
            *shares,
            str(row.failed),
            f"{row.p50_ms:g}",
            f"{row.p99_ms:g}",
        ]
        lines.append("| " + " | ".join([*cells, row.breaker, str(row.ejected_hosts)]) + " |")
    return "\n".join(lines)


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


def chart(
    path: Path,
    rows: Sequence[Row],
    events: Sequence[Event],
    start: float,
    tier_order: Sequence[str],
    title: str,
) -> None:
    """A three-panel PNG: who served each second (and errors), latency, breaker and ejections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = [r.second for r in rows]
    fig, (served, latency, state, ejected) = plt.subplots(
        4, 1, figsize=(12, 9), sharex=True, gridspec_kw={"height_ratios": [3, 2, 0.5, 0.9]}
    )
    names = [*tier_order]
    for row in rows:
        for name in row.tiers:
            if name not in names and name != FAILED:
                names.append(name)
    names = [n for n in names if any(row.tiers.get(n) for row in rows)]  # only who served
    names.append(FAILED)
    fixed = {FAILED: "#d62728", "envoy": "#bbbbbb"}
    spare = iter(["#2f6db5", "#f0a030", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f", "#e377c2"])
    colors = [fixed.get(name) or next(spare, "#cccccc") for name in names]
    stacks = [[row.tiers.get(name, 0) for row in rows] for name in names]
    labels = ["failed for the client" if n == FAILED else f"served by {n}" for n in names]
    served.stackplot(seconds, stacks, labels=labels, colors=colors, alpha=0.85, step="post")
    served.set_ylabel("requests / s")
    served.set_ylim(0, max((r.requests for r in rows), default=1) * 1.35)
    served.legend(loc="upper left", fontsize=8, ncol=len(names) + 1, framealpha=0.9)
    served.set_title(title, fontsize=12, pad=22)

    latency.plot(seconds, [max(r.p50_ms, 0.1) for r in rows], label="p50", color="#2ca02c", drawstyle="steps-post")
    latency.plot(seconds, [max(r.p99_ms, 0.1) for r in rows], label="p99", color="#9467bd", drawstyle="steps-post")
    latency.set_yscale("log")
    latency.set_ylabel("client latency (ms)")
    latency.legend(loc="upper left", fontsize=8)

    state_colors = {"closed": "#2ca02c", "half_open": "#f5c518", "open": "#d62728", "n/a": "#dddddd"}
    for row in rows:
        state.axvspan(row.second, row.second + 1, color=state_colors.get(row.breaker, "#dddddd"))
    state.set_yticks([])
    state.set_ylabel("breaker", rotation=0, ha="right", va="center")
    legend = "green closed · yellow half-open · red open" if any(r.breaker != "n/a" for r in rows) else "no modelguard"
    state.text(
        0.995,
        0.5,
        f"{tier_order[0]}: {legend}",
        transform=state.transAxes,
        ha="right",
        va="center",
        fontsize=8,
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
    )

    most = max(3, max((r.ejected_hosts for r in rows), default=0))
    ejected.plot(seconds, [r.ejected_hosts for r in rows], color="black", drawstyle="steps-post")
    ejected.set_ylim(-0.2, most + 0.5)
    ejected.set_yticks(range(0, most + 1))
    ejected.set_ylabel("hosts ejected\nby Envoy", fontsize=8)
    ejected.set_xlabel("seconds since the load started")

    for event in events:
        x = event.t - start
        for axis in (served, latency, state, ejected):
            axis.axvline(x, color="#444444", linestyle="--", linewidth=0.8)
        served.annotate(
            event.label,
            (x, 1.01),
            xycoords=("data", "axes fraction"),
            ha="left",
            va="bottom",
            fontsize=8,
            color="#444444",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
