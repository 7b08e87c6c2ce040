"""The demo's canary scene: the bad v2 that modelguard aborts, as clients saw it and as modelguard
logged it (``canary_changed``), and its band in the chart.

The figures come from the client's side (each request's ``x-modelguard-arm``), so they check what
the canary cost users, not what modelguard believes it judged; modelguard's own counts at the abort
(the evidence on its log line) are kept beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ext_proc.demo.loadgen import CANARY_ARM, Sample

ABORTED = "aborted"
STABLE_ARM = "stable"
MAX_FAILED_BEFORE_ABORT = 20
"""The README's promise for a v2 failing 30% of calls at 10%: aborted after at most 20 failures."""
LOG_RESOLUTION = 0.001
"""modelguard's log timestamps are cut to the millisecond, so the abort happened up to this much
after the logged moment: a request sent in that millisecond may still have been on the canary."""


@dataclass(frozen=True, slots=True)
class CanaryChange:
    """A canary state or weight change, as modelguard logged it (``"event": "canary_changed"``)."""

    t: float
    model: str
    route: str
    from_state: str
    to_state: str
    from_weight: float
    to_weight: float
    cause: str
    caller: str
    judged_calls: int = 0
    """modelguard's count of judged canary calls at the change (its evidence)."""
    judged_failures: int = 0


@dataclass
class CanarySummary:
    """What the canary cost clients. Times are seconds; None when it did not happen."""

    route: str
    calls: int
    """Requests served on the canary arm, the whole run."""
    share_before_abort: float
    """The canary arm's share of the requests on either arm until the abort (about the weight)."""
    aborted: bool
    abort_cause: str
    abort_caller: str
    first_call_to_abort_s: float | None
    calls_before_abort: int
    failed_before_abort: int
    """Canary-arm requests sent before the abort that failed for the client."""
    judged_calls: int
    judged_failures: int
    canary_after_abort: int
    """Canary-arm requests sent after the abort: 0 when every key went back to stable."""
    stable_after_abort: int


def first_abort(changes: Sequence[CanaryChange], model: str) -> CanaryChange | None:
    return next((c for c in changes if c.model == model and c.to_state == ABORTED), None)


def summarize(samples: Sequence[Sample], changes: Sequence[CanaryChange], model: str) -> CanarySummary:
    ordered = sorted(samples, key=lambda s: s.t)
    on_canary = [s for s in ordered if s.arm == CANARY_ARM]
    abort = first_abort(changes, model)
    cut = float("inf") if abort is None else abort.t
    before = [s for s in ordered if s.arm and s.t < cut]
    canary_before = [s for s in before if s.arm == CANARY_ARM]
    after = [s for s in ordered if s.arm and s.t >= cut + LOG_RESOLUTION]
    return CanarySummary(
        route=abort.route if abort else next((c.route for c in changes if c.model == model), ""),
        calls=len(on_canary),
        share_before_abort=round(len(canary_before) / len(before), 3) if before else 0.0,
        aborted=abort is not None,
        abort_cause=abort.cause if abort else "",
        abort_caller=abort.caller if abort else "",
        first_call_to_abort_s=round(abort.t - on_canary[0].t, 3) if abort and on_canary else None,
        calls_before_abort=len(canary_before),
        failed_before_abort=sum(s.failed for s in canary_before),
        judged_calls=abort.judged_calls if abort else 0,
        judged_failures=abort.judged_failures if abort else 0,
        canary_after_abort=sum(s.arm == CANARY_ARM for s in after),
        stable_after_abort=sum(s.arm == STABLE_ARM for s in after),
    )


def expectations(summary: CanarySummary) -> dict[str, bool]:
    return {
        "the bad v2 canary is aborted": summary.aborted,
        f"<= {MAX_FAILED_BEFORE_ABORT} client-visible canary failures before the abort": summary.aborted
        and summary.failed_before_abort <= MAX_FAILED_BEFORE_ABORT,
        "no request on the canary arm after the abort": summary.aborted and summary.canary_after_abort == 0,
    }


def render(summary: CanarySummary) -> list[str]:
    name = f"canary {summary.route}".rstrip()
    if not summary.aborted:
        return [f"{name}: {summary.calls} calls, NOT aborted"]
    to_abort = "?" if summary.first_call_to_abort_s is None else f"{summary.first_call_to_abort_s:.2f} s"
    return [
        f"{name}: {summary.calls} calls ({summary.share_before_abort:.0%} of requests until "
        f"the abort), {summary.failed_before_abort} failed before the abort",
        f"canary first call -> aborted {to_abort} ({summary.abort_cause}, by {summary.abort_caller}; "
        f"modelguard judged {summary.judged_calls} calls, {summary.judged_failures} failed)",
        f"after the abort: {summary.canary_after_abort} requests on the canary arm, "
        f"{summary.stable_after_abort} on stable",
    ]


def state_at(changes: Sequence[CanaryChange], model: str, initial: str, moment: float) -> str:
    """The canary's state at ``moment``: ``initial`` moved by every change logged until then."""
    state = initial
    for change in changes:
        if change.model == model and change.t <= moment:
            state = change.to_state
    return state


def from_log(t: float, entry: dict[str, Any]) -> CanaryChange:
    """A ``canary_changed`` log entry (KeyError or ValueError when it is not one)."""
    arms = entry.get("evidence", {}).get("arms", {})
    canary = arms.get("canary", {}) if isinstance(arms, dict) else {}
    return CanaryChange(
        t=t,
        model=str(entry["model"]),
        route=str(entry["route"]),
        from_state=str(entry["from_state"]),
        to_state=str(entry["to_state"]),
        from_weight=float(entry["from_weight"]),
        to_weight=float(entry["to_weight"]),
        cause=str(entry["cause"]),
        caller=str(entry.get("caller", "")),
        judged_calls=int(canary.get("calls", 0)),
        judged_failures=int(canary.get("failures", 0)),
    )


def draw(
    axis: Any,
    seconds: Sequence[int],
    requests: Sequence[int],
    arms: Sequence[dict[str, int]],
    canary_failed: Sequence[int],
    marks: Sequence[tuple[float, str]],
) -> None:
    """The arms band: each second's share of all requests that the canary served (well, or
    failed) and that stable served, clipped so the canary's 10% fills a third of it. Requests on
    no arm (a lower tier, while the breaker is open) are the white above both."""
    totals = [max(1, r) for r in requests]
    failed = [f / t for f, t in zip(canary_failed, totals, strict=True)]
    served = [max(0, a.get(CANARY_ARM, 0) - f) / t for a, f, t in zip(arms, canary_failed, totals, strict=True)]
    stable = [a.get(STABLE_ARM, 0) / t for a, t in zip(arms, totals, strict=True)]
    any_arm = any(a.get(CANARY_ARM, 0) + a.get(STABLE_ARM, 0) for a in arms)
    top = max(0.3, min(1.0, 1.5 * max((s + f for s, f in zip(served, failed, strict=True)), default=0.0)))
    axis.set_ylim(0, top)
    axis.yaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    axis.set_ylabel("arms\n(share of\nrequests)", fontsize=8)
    if not any_arm:
        axis.text(0.5, 0.5, "no canary", transform=axis.transAxes, ha="center", va="center", fontsize=9)
        return
    axis.stackplot(
        seconds,
        [served, failed, stable],
        labels=["canary (v2) served", "canary (v2) failed", "stable (to its share, up to 100%)"],
        colors=["#9467bd", "#d62728", "#c7c7c7"],
        alpha=0.85,
        step="post",
    )
    axis.legend(loc="upper right", fontsize=7, ncol=3, framealpha=0.9)
    for x, label in marks:
        axis.axvline(x, color="#9467bd", linewidth=1.4)
        axis.annotate(
            label,
            (x, 0.5 * top),
            xytext=(4, 0),
            textcoords="offset points",
            ha="left",
            va="center",
            fontsize=8,
            color="#5b2c8a",
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"},
        )
