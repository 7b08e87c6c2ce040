"""A canary's evidence since it (re)started: both arms' calls over the same period, and the four
guardrails judged on every canary response (README, "Canary gating", states the math).

- failures: H0 p_canary <= min(max_failure_rate, p_stable + max_failure_rate_increase), with
  p_stable replaced by its upper confidence bound (betting.upper_bound): one test for both
  failure guardrails, since a canary that meets both meets the smaller;
- latency: H0 P(canary latency > max_latency_ratio * stable's recent p95) <= 5%, which holds
  whenever the canary is at most max_latency_ratio times as slow as stable in distribution;
- harm: canary failures beyond what stable's rate plus the allowed increase predict for the same
  calls; max_harm of them abort at once, without waiting for min_calls.

The error budget alpha = 1 - confidence is split: alpha/2 to the failure test, alpha/4 to the
latency test, alpha/4 to the stable bound, so a canary that meets every guardrail is aborted by the tests with
probability at most 1 - confidence over its whole life, however long it runs.
"""

from __future__ import annotations

from ext_proc.core.canary.betting import BettingTest, upper_bound
from ext_proc.core.canary.sketch import RecentQuantile
from ext_proc.policy import Guardrails

STABLE_QUANTILE = 0.95
SLOW_SHARE = 1 - STABLE_QUANTILE
"""The share of calls slower than stable's p95 that H0 allows."""
RECENT = 60.0
"""Seconds per window of stable's latency sketch (the p95 is over the last one to two)."""
REFRESH = 0.25
"""Seconds between recomputations of stable's bound and p95 (each a few microseconds)."""

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
        "_slow_after",
        "canary",
        "failures",
        "guardrails",
        "latency",
        "part",
        "slow",
        "stable",
        "stable_bound",
        "stable_latency",
        "started",
    )

    def __init__(self, guardrails: Guardrails, now: float) -> None:
        self.guardrails = guardrails
        self.started = now
        self.canary = Arm()
        self.stable = Arm()
        self.slow = 0
        """Canary calls slower than the latency threshold."""
        self.part = (1 - guardrails.confidence) / 4
        self.failures = BettingTest(2 * self.part)
        self.latency = BettingTest(self.part)
        self.stable_latency = RecentQuantile(RECENT, now)
        self.stable_bound = 1.0
        self._slow_after: float | None = None
        """max_latency_ratio times stable's p95, or None while stable has too few calls."""
        self._due = now

    def reconfigure(self, guardrails: Guardrails) -> None:
        """New thresholds; a new confidence resizes the boundaries, the wealth gathered is kept."""
        self.guardrails = guardrails
        self.part = (1 - guardrails.confidence) / 4
        self.failures.resize(2 * self.part)
        self.latency.resize(self.part)

    def stable_outcome(self, failed: bool, latency: float, now: float) -> None:
        self.stable.calls += 1
        self.stable.failures += failed
        self.stable_latency.observe(latency, now)

    def canary_outcome(self, failed: bool, latency: float, now: float) -> str | None:
        """Judge one canary response; the guardrail it breaks, or None."""
        if now >= self._due:
            self._refresh(now)
        guardrails = self.guardrails
        canary = self.canary
        canary.calls += 1
        canary.failures += failed
        self.failures.observe(failed, self.allowed_failure_rate)
        threshold = self._slow_after
        if threshold is not None:
            slow = latency > threshold
            self.slow += slow
            self.latency.observe(slow, SLOW_SHARE)
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

    @property
    def harm(self) -> float:
        """Canary failures beyond stable's rate plus the allowed increase, for the same calls."""
        expected = self.canary.calls * (self.stable.rate + self.guardrails.max_failure_rate_increase)
        return self.canary.failures - expected

    def _refresh(self, now: float) -> None:
        self._due = now + REFRESH
        stable = self.stable
        self.stable_bound = upper_bound(stable.failures, stable.calls, self.part)
        p95 = self.stable_latency.quantile(STABLE_QUANTILE, self.guardrails.min_calls)
        self._slow_after = None if p95 is None else p95 * self.guardrails.max_latency_ratio

    def figures(self) -> dict[str, object]:
        stable = self.stable.figures()
        stable.update(
            failure_rate_bound=round(self.stable_bound, 6),
            latency_p95=self.stable_latency.quantile(STABLE_QUANTILE, 1),
        )
        canary = self.canary.figures()
        canary.update(slow=self.slow, slow_after=self._slow_after)
        return {
            "arms": {"canary": canary, "stable": stable},
            "tests": {
                "failures": self.failures.figures(),
                LATENCY: self.latency.figures(),
                HARM: {"statistic": round(self.harm, 3), "boundary": self.guardrails.max_harm},
            },
            "min_calls": self.guardrails.min_calls,
        }
