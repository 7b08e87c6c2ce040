"""A canary's evidence since it (re)started: both arms' calls over the same period, and the
guardrails judged on every canary response (README, "Canary gating", states the math).

- failures: H0 p_canary <= min(max_failure_rate, p_stable + max_failure_rate_increase), with
  p_stable replaced by its upper confidence bound (betting.upper_bound): one test for both
  failure guardrails, since a canary that meets both meets the smaller;
- latency: once stable has LATENCY_BASE calls, its p95 T is fixed (from a sketch, read at a
  bucket's upper bound); from then on H0 P(canary > max_latency_ratio x T) <= P(stable > T),
  with the right side replaced by its upper confidence bound over the stable calls since. This
  holds whenever the canary is at most max_latency_ratio times as slow as stable in distribution,
  however few calls T was estimated from: both sides are measured against the same T;
- harm: a one-sided CUSUM of canary failures beyond what stable's rate (its bound) plus the
  allowed increase predicts, so credit from a long healthy run cannot hide a late regression;
  max_harm of them abort at once, without waiting for min_calls.

The error budget alpha = 1 - confidence is split: 1/2 to the failure test, 1/4 to the latency test,
1/8 to each stable bound, so
a canary that meets every guardrail is aborted by the tests with probability at most
1 - confidence over its whole life, however long it runs.
"""

from __future__ import annotations

from ext_proc.core.canary.betting import BettingTest, upper_bound
from ext_proc.core.canary.sketch import RecentQuantile
from ext_proc.policy import Guardrails

STABLE_QUANTILE = 0.95
LATENCY_BASE = 100
"""Stable calls whose p95 becomes the latency test's reference T."""
RECENT = 60.0
"""Seconds per window of stable's latency sketch."""
REFRESH = 0.25
"""Seconds between recomputations of stable's bounds (each a few microseconds)."""

FAILURE_RATE = "failure_rate"
FAILURE_RATE_INCREASE = "failure_rate_increase"
"""What the failure test names when it rejects: the absolute maximum if the canary's rate is over
it, else the increase over stable."""
LATENCY = "latency"
HARM = "harm"


class Arm:
    __slots__ = ("calls", "failures")

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0

    @property
    def rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    def figures(self) -> dict[str, object]:
        return {"calls": self.calls, "failures": self.failures, "failure_rate": round(self.rate, 6)}


class Evidence:
    """Judged outcomes of both arms from ``started`` on; ``canary_outcome`` says when to abort."""

    __slots__ = (
        "_due",
        "canary",
        "failures",
        "guardrails",
        "harm",
        "latency",
        "part",
        "reference",
        "slow",
        "slow_bound",
        "stable",
        "stable_bound",
        "stable_latency",
        "stable_slow",
        "stable_timed",
        "started",
    )

    def __init__(self, guardrails: Guardrails, now: float) -> None:
        self.guardrails = guardrails
        self.started = now
        self.canary = Arm()
        self.stable = Arm()
        self.part = (1 - guardrails.confidence) / 8
        self.failures = BettingTest(4 * self.part)
        self.latency = BettingTest(2 * self.part)
        self.stable_latency = RecentQuantile(RECENT, now)
        self.reference: float | None = None
        """T: stable's p95 once it has LATENCY_BASE calls; None before."""
        self.stable_timed = 0
        """Stable calls since T was fixed, and those slower than T."""
        self.stable_slow = 0
        self.slow = 0
        """Canary calls slower than max_latency_ratio x T."""
        self.stable_bound = 1.0
        self.slow_bound = 1.0
        self.harm = 0.0
        self._due = now

    def reconfigure(self, guardrails: Guardrails) -> None:
        """New thresholds; a new confidence resizes the boundaries, the wealth gathered is kept."""
        self.guardrails = guardrails
        self.part = (1 - guardrails.confidence) / 8
        self.failures.resize(4 * self.part)
        self.latency.resize(2 * self.part)

    def stable_outcome(self, failed: bool, latency: float, now: float) -> None:
        stable = self.stable
        stable.calls += 1
        stable.failures += failed
        reference = self.reference
        if reference is None:
            self.stable_latency.observe(latency, now)
            if stable.calls >= LATENCY_BASE:
                self.reference = self.stable_latency.quantile(STABLE_QUANTILE, LATENCY_BASE)
        else:
            self.stable_timed += 1
            self.stable_slow += latency > reference

    def canary_outcome(self, failed: bool, latency: float, now: float) -> str | None:
        """Judge one canary response; the guardrail it breaks, or None."""
        if now >= self._due:
            self._refresh(now)
        guardrails = self.guardrails
        canary = self.canary
        canary.calls += 1
        canary.failures += failed
        allowed = self.allowed_failure_rate
        self.failures.observe(failed, allowed)
        self.harm = max(0.0, self.harm + failed - min(1.0, self.stable_bound + guardrails.max_failure_rate_increase))
        reference = self.reference
        if reference is not None:
            slow = latency > reference * guardrails.max_latency_ratio
            self.slow += slow
            self.latency.observe(slow, self.slow_bound)
        if self.harm >= guardrails.max_harm:
            return HARM
        if canary.calls < guardrails.min_calls:
            return None
        if self.failures.rejected:
            return FAILURE_RATE if canary.rate > guardrails.max_failure_rate else FAILURE_RATE_INCREASE
        if self.latency.rejected:
            return LATENCY
        return None

    @property
    def allowed_failure_rate(self) -> float:
        guardrails = self.guardrails
        return min(guardrails.max_failure_rate, self.stable_bound + guardrails.max_failure_rate_increase)

    def fresh_stable_bounds(self, now: float) -> None:
        """Recompute stable's bounds now (they are otherwise refreshed every REFRESH seconds)."""
        self._refresh(now)

    def _refresh(self, now: float) -> None:
        self._due = now + REFRESH
        stable = self.stable
        self.stable_bound = upper_bound(stable.failures, stable.calls, self.part)
        self.slow_bound = upper_bound(self.stable_slow, self.stable_timed, self.part)

    def figures(self) -> dict[str, object]:
        stable = self.stable.figures()
        stable.update(
            failure_rate_bound=round(self.stable_bound, 6),
            latency_p95=self.reference,
            slow=self.stable_slow,
            slow_share_bound=round(self.slow_bound, 6),
        )
        canary = self.canary.figures()
        reference = self.reference
        canary.update(
            slow=self.slow, slow_after=None if reference is None else reference * self.guardrails.max_latency_ratio
        )
        return {
            "arms": {"canary": canary, "stable": stable},
            "tests": {
                "failures": self.failures.figures(),
                LATENCY: self.latency.figures(),
                HARM: {"statistic": round(self.harm, 3), "boundary": self.guardrails.max_harm},
            },
            "min_calls": self.guardrails.min_calls,
        }
