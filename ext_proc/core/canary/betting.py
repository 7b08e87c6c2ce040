"""Anytime-valid sequential tests: a verdict that stays valid however often it is looked at.

Each guardrail is a null hypothesis about a stream of 0/1 observations X_1, X_2, ... (a canary
call failed; a canary call was slower than the threshold): H0 says E[X_t | the past] <= q_t, where
q_t is the most the guardrail allows at that moment. The test bets against H0: its wealth is

    W_t = prod_{i <= t} (1 + lambda_i (X_i - q_i)),    0 <= lambda_i < 1 / q_i,

with each lambda_i chosen from the observations before i only. Under H0 every factor has
expectation at most 1, so W is a nonnegative supermartingale, and Ville's inequality gives
P(W_t >= 1/alpha for some t) <= alpha: the test may be checked after every call, forever, and
rejects a true H0 with probability at most alpha (Waudby-Smith & Ramdas, "Estimating means of
bounded random variables by betting", 2023; Shafer & Vovk's testing by betting). The wealth is
half in each of two bettors, and their average is a supermartingale too:

- a plug-in bettor stakes the Kelly fraction at a running estimate of the rate (GRAPA-like), so a
  healthy canary, whose estimate stays under q, bets nothing and loses nothing, and a regression
  that starts late is bet on as soon as the recent calls show it;
- a fixed bettor stakes FIXED_FRACTION from the first call, so a canary that is bad from its
  start is caught before the estimate has caught up. Measured at 10% weight, stable failing 1%,
  a canary failing 30% (tests/unit/core/canary/test_evidence.py, 200 seeds): aborted after a
  median of 12 failures, at most 20 in 199 of 200 (plug-in alone: median 14, 185 of 200; a
  fixed fraction of 0.2 or 0.3: 193 and 184 of 200).

The stable version's failure rate is not known, only estimated: ``upper_bound`` is a confidence
sequence for it (Robbins' beta-binomial mixture), valid at all times at once with error alpha.
"""

from __future__ import annotations

import math

MAX_FRACTION = 0.5
"""The largest share of its wealth a test stakes on one call: half-Kelly at most."""
SMOOTHING = 1 / 16
"""Weight of the newest call in the running estimate the bet is sized from (after the first 14
calls, which are averaged with two pseudo-calls at q)."""
FIXED_FRACTION = 0.15
MAX_LOG = 700.0
"""exp() of more overflows; a wealth this large has long crossed any boundary."""


class _Wealth:
    """What both tests share: the two bettors' (log) wealth, its boundary, the verdict."""

    __slots__ = ("alpha", "boundary", "calls", "log_fixed", "log_wealth")
    null = 0.0
    """What H0 allowed at the latest call, for the figures."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.boundary = math.log(1 / alpha)
        self.log_wealth = 0.0
        """The plug-in bettor's (log) wealth."""
        self.log_fixed = 0.0
        """The fixed bettor's."""
        self.calls = 0

    def resize(self, alpha: float) -> None:
        """Another error budget (a reload changed the confidence); the wealth gathered is kept."""
        self.alpha = alpha
        self.boundary = math.log(1 / alpha)

    @property
    def rejected(self) -> bool:
        # the average of the two is at most the larger: the exact check only when that one is over
        return max(self.log_wealth, self.log_fixed) >= self.boundary and self.wealth >= 1 / self.alpha

    @property
    def wealth(self) -> float:
        """The e-value: how many times over H0's odds the evidence is (rejects at 1/alpha)."""
        return (math.exp(min(self.log_wealth, MAX_LOG)) + math.exp(min(self.log_fixed, MAX_LOG))) / 2

    def figures(self) -> dict[str, float]:
        return {"statistic": self.wealth, "boundary": 1 / self.alpha, "null": self.null}


class BettingTest(_Wealth):
    """One guardrail's test; ``observe`` each call, ``rejected`` once the evidence is enough."""

    __slots__ = ("estimate", "null")

    def __init__(self, alpha: float) -> None:
        super().__init__(alpha)
        self.estimate = -1.0
        """The running estimate of the rate; negative until the first call."""
        self.null = 0.0

    def observe(self, hit: bool, allowed: float) -> None:
        """One call: ``hit`` if it counts against H0, with ``allowed`` the most H0 allows now."""
        self.null = allowed
        estimate = allowed if self.estimate < 0 else self.estimate
        if 0.0 < allowed < 1.0:
            odds = 1.0 / allowed - 1.0
            self.log_fixed += math.log1p(FIXED_FRACTION * odds if hit else -FIXED_FRACTION)
            if estimate > allowed:
                fraction = min(MAX_FRACTION, (estimate - allowed) / (1.0 - allowed))
                self.log_wealth += math.log1p(fraction * odds if hit else -fraction)
        self.calls += 1
        weight = max(SMOOTHING, 1.0 / (self.calls + 2))
        self.estimate = estimate + weight * ((1.0 if hit else 0.0) - estimate)


_LOG_BETA_JEFFREYS = math.lgamma(0.5) * 2 - math.lgamma(1.0)


def upper_bound(hits: int, calls: int, alpha: float) -> float:
    """An upper confidence bound on a rate, valid for every ``calls`` at once with error alpha:
    the largest p at which the beta-binomial mixture martingale (Jeffreys prior) stays under
    1/alpha (Robbins 1970). 1.0 with no calls."""
    if calls <= 0:
        return 1.0
    misses = calls - hits
    log_mixture = math.lgamma(hits + 0.5) + math.lgamma(misses + 0.5) - math.lgamma(calls + 1.0) - _LOG_BETA_JEFFREYS
    target = math.log(1 / alpha)

    def log_martingale(rate: float) -> float:
        return log_mixture - hits * math.log(rate) - misses * math.log1p(-rate)

    low, high = max(hits / calls, 1e-12), 1.0 - 1e-12
    if misses == 0 or log_martingale(high) < target:
        return 1.0
    for _ in range(50):
        middle = (low + high) / 2
        if log_martingale(middle) < target:
            low = middle
        else:
            high = middle
    return high


class PairedTest(_Wealth):
    """A test of H0: E[D_t | the past] <= 0 for differences D_t in [-1, 1] (a canary call's
    indicator minus its paired stable call's), by the same betting: W_t = prod(1 + lambda_i D_i),
    0 <= lambda_i <= MAX_FRACTION, half in a plug-in bettor (lambda = running mean / running mean
    square of D) and half in a fixed one (FIXED_FRACTION)."""

    __slots__ = ("mean", "square")

    def __init__(self, alpha: float) -> None:
        super().__init__(alpha)
        self.mean = 0.0
        self.square = 0.0

    def observe(self, difference: int) -> None:
        if self.mean > 0.0:
            fraction = min(MAX_FRACTION, self.mean / max(self.square, 1e-3))
            self.log_wealth += math.log1p(fraction * difference)
        self.log_fixed += math.log1p(FIXED_FRACTION * difference)
        self.calls += 1
        weight = max(SMOOTHING, 1.0 / self.calls)
        self.mean += weight * (difference - self.mean)
        self.square += weight * (difference * difference - self.square)
