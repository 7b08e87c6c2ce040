"""A canary's evidence since it (re)started: both arms' calls over the same period, and the
guardrails judged on every canary response (README, "Canary gating", states the math).

- failures: H0 p_canary <= min(max_failure_rate, p_stable + max_failure_rate_increase), with
  p_stable replaced by its upper confidence bound (betting.upper_bound): one test for both
  failure guardrails, since a canary that meets both meets the smaller;
- latency: each canary call is paired with the latest stable call not paired yet that came after
  the reference T (stable's recent p95, from a sketch of its last 1,000 to 2,000 calls,
  recomputed every REFRESH seconds) was last set; the difference D = [canary > max_latency_ratio x T]
  - [stable > T] is bet against H0: E[D] <= 0, which holds whenever, at each moment, the canary
  is at most max_latency_ratio times as slow as stable in distribution: both calls of a pair come
  from the same moment and meet the same T, so a load peak that slows both arms moves neither
  side of the comparison, and T only has to be predictable, not accurate;
- harm: a one-sided CUSUM of canary failures beyond what stable's rate (its bound) plus the
  allowed increase predicts (the allowance at least HARM_SLACK, and at least HARM_RUN x p(1-p) /
  max_harm), so credit from a long healthy run cannot hide a late regression and a canary within
  the allowed increase drifts back to 0; max_harm of them abort at once, without min_calls.

The error budget alpha = 1 - confidence is split: 1/2 to the failure test, 1/4 to the latency
test, 1/4 to stable's failure bound, so a canary that meets every guardrail is aborted by the
tests with probability at most 1 - confidence over its whole life, however long it runs.
"""

from __future__ import annotations

from ext_proc.core.canary.betting import BettingTest, PairedTest, upper_bound
from ext_proc.core.sketch import RecentQuantile
from ext_proc.policy import Guardrails

STABLE_QUANTILE = 0.95
LATENCY_BASE = 100
"""Stable calls before their p95 becomes the latency test's reference T."""
RECENT_CALLS = 1000
"""Stable calls per window of its latency sketch (T is over the last one to two windows)."""
HARM_SLACK = 0.02
"""The least excess failure rate harm allows per canary call."""
HARM_RUN = 10.0
"""The slack is also at least HARM_RUN x p(1-p) / max_harm (p: stable's bound), so that a canary
exactly as good as stable, even with max_failure_rate_increase at 0, drifts down by enough that
it takes about e^(2 x HARM_RUN) calls on average to reach max_harm (a CUSUM's average run length)."""
REFRESH = 0.25
"""Seconds between recomputations of stable's bound and of T (each a few microseconds)."""

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
        "_harm_allowance",
        "canary",
        "failures",
        "guardrails",
        "harm",
        "latency",
        "pairs",
        "part",
        "reference",
        "slow",
        "stable",
        "stable_bound",
        "stable_latency",
        "stable_slow",
        "started",
        "unpaired",
    )

    def __init__(self, guardrails: Guardrails, now: float) -> None:
        self.guardrails = guardrails
        self.started = now
        self.canary = Arm()
        self.stable = Arm()
        self.part = (1 - guardrails.confidence) / 4
        self.failures = BettingTest(2 * self.part)
        self.latency = PairedTest(self.part)
        self.stable_latency = RecentQuantile(RECENT_CALLS)
        self.reference: float | None = None
        """T: stable's recent p95 once it has LATENCY_BASE calls; None before."""
        self.unpaired: float | None = None
        """The latest stable latency since T was set that no canary call was paired with yet."""
        self.pairs = 0
        self.slow = 0
        """Paired canary calls slower than max_latency_ratio x T; their stable calls slower than T."""
        self.stable_slow = 0
        self.stable_bound = 1.0
        self.harm = 0.0
        self._harm_allowance = 1.0
        self._due = now

    def reconfigure(self, guardrails: Guardrails) -> None:
        """New thresholds; a new confidence resizes the boundaries, the wealth gathered is kept."""
        self.guardrails = guardrails
        self.part = (1 - guardrails.confidence) / 4
        self.failures.resize(2 * self.part)
        self.latency.resize(self.part)

    def stable_outcome(self, failed: bool, latency: float, now: float) -> None:
        stable = self.stable
        stable.calls += 1
        stable.failures += failed
        self.stable_latency.observe(latency)
        if self.reference is not None:
            self.unpaired = latency

    def canary_outcome(self, failed: bool, latency: float, now: float) -> str | None:
        """Judge one canary response; the guardrail it breaks, or None. Stable's bound and T are
        refreshed after it is judged, so that each call meets figures set before it came."""
        guardrails = self.guardrails
        canary = self.canary
        canary.calls += 1
        canary.failures += failed
        self.failures.observe(failed, self.allowed_failure_rate)
        self.harm = max(0.0, self.harm + failed - self._harm_allowance)
        reference, stable = self.reference, self.unpaired
        if reference is not None and stable is not None:
            self.unpaired = None
            slow, stable_slow = latency > reference * guardrails.max_latency_ratio, stable > reference
            self.pairs += 1
            self.slow += slow
            self.stable_slow += stable_slow
            self.latency.observe(slow - stable_slow)
        if now >= self._due:
            self.refresh(now)
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

    def refresh(self, now: float) -> None:
        """Recompute stable's bound and T (done every REFRESH seconds as canary calls are judged)."""
        self._due = now + REFRESH
        stable = self.stable
        bound = self.stable_bound = upper_bound(stable.failures, stable.calls, self.part)
        guardrails = self.guardrails
        slack = max(
            guardrails.max_failure_rate_increase, HARM_SLACK, HARM_RUN * bound * (1 - bound) / guardrails.max_harm
        )
        self._harm_allowance = min(1.0, bound + slack)
        self.reference = self.stable_latency.quantile(STABLE_QUANTILE, LATENCY_BASE)
        # A stable call that may have helped set T is not compared with it; dropped at every
        # refresh, on time alone: a rule that looked at the values would bias the pairs.
        self.unpaired = None

    def figures(self) -> dict[str, object]:
        stable = self.stable.figures()
        reference = self.reference
        stable.update(failure_rate_bound=round(self.stable_bound, 6), latency_p95=reference, slow=self.stable_slow)
        canary = self.canary.figures()
        slow_after = None if reference is None else reference * self.guardrails.max_latency_ratio
        canary.update(slow=self.slow, slow_after=slow_after, paired=self.pairs)
        return {
            "arms": {"canary": canary, "stable": stable},
            "tests": {
                "failures": self.failures.figures(),
                LATENCY: self.latency.figures(),
                HARM: {"statistic": round(self.harm, 3), "boundary": self.guardrails.max_harm},
            },
            "min_calls": self.guardrails.min_calls,
        }
