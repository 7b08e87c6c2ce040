"""The demo's chart: who served each second (and the errors), the canary's arms, latency, the
primary breaker's state and Envoy's ejections, one panel each over the same time axis, with the
scenario's steps marked on every panel."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ext_proc.demo import canary
from ext_proc.demo.canary import CanaryChange
from ext_proc.demo.report import FAILED, Event, Row

LABEL_ROOM = 0.22
"""The share of the time axis an event's label takes (about 40 characters at the chart's width)."""
LABEL_STEP = 0.06
"""How far a label moves up, in the panel's height, when it would cover the label before it."""


def label_lines(xs: Sequence[float], span: float) -> list[int]:
    """A line for each event's label, 0 (lowest) or 1: an event closer than a label's room to the
    one before it (the canary's at 0 s and the host fault at 15%) gets the other line, so that
    their labels do not print over each other."""
    lines: list[int] = []
    for index, x in enumerate(xs):
        close = index > 0 and x - xs[index - 1] < LABEL_ROOM * span
        lines.append(1 - lines[-1] if close else 0)
    return lines


def draw(
    path: Path,
    rows: Sequence[Row],
    events: Sequence[Event],
    start: float,
    tier_order: Sequence[str],
    title: str,
    canary_changes: Sequence[CanaryChange] = (),
) -> None:
    """A five-panel PNG: who served each second (and errors), the canary's arms, latency, breaker
    and ejections. The abort is marked in the arms band, where its cause has room."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = [r.second for r in rows]
    fig, (served, arms, latency, state, ejected) = plt.subplots(
        5, 1, figsize=(12, 10.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.1, 2, 0.5, 0.9]}
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
    served.set_title(title, fontsize=12, pad=34)

    canary.draw(
        arms,
        seconds,
        [r.requests for r in rows],
        [r.arms for r in rows],
        [r.canary_failed for r in rows],
        [(c.t - start, f"canary {c.to_state}: {c.cause}") for c in canary_changes if c.to_state == canary.ABORTED],
    )

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

    span = max(1.0, float(len(rows)))
    for event, line in zip(events, label_lines([e.t - start for e in events], span), strict=True):
        x = event.t - start
        for axis in (served, arms, latency, state, ejected):
            axis.axvline(x, color="#444444", linestyle="--", linewidth=0.8)
        served.annotate(
            event.label,
            (x, 1.01 + LABEL_STEP * line),
            xycoords=("data", "axes fraction"),
            ha="left",
            va="bottom",
            fontsize=8,
            color="#444444",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
