"""An adaptive concurrency limit: short-term latency against a long-term baseline.

In the spirit of Netflix's Gradient2 (README, "Concurrency limits", has the math and every
parameter). Answers are averaged over short windows (``window`` seconds and ``min_samples``
answers at least); at the end of each window:

- ``baseline`` is an exponential moving average of the windows' mean latency over about
  ``baseline_windows`` windows, learnt only from windows that are not congested (mean latency at
  most ``tolerance`` x baseline), so that a long overload does not become the new normal; at the
  limit's floor it learns from every window (there is nothing left to take away, so what is seen
  is the tier's own latency), and it drops quickly (5% a window) while latency is under half of it.
- ``gradient = clamp(tolerance x baseline / short, 0.5, 1)``: 1 while latency is within tolerance,
  down to 0.5 (the limit at most halves in one window) as it grows.
- ``limit <- (1 - smoothing) x limit + smoothing x proposed``, where ``proposed`` is
  ``limit + sqrt(limit)`` while latency is within tolerance (the square root is the queue the
  limit allows for, so an uncongested tier's limit keeps growing) and ``gradient x limit`` past it
  (so that a congested tier's limit does come down to its floor: with the queue added there too it
  would settle at 4 whatever the floor).
- the limit does not grow while the calls in flight stayed under half of it (the clients, not the
  tier, set the pace: Gradient2's "app limited"), and it shrinks by 10% in a window in which the
  tier answered "too many requests" (429 / RESOURCE_EXHAUSTED).
- it stays within [min, max].

Unlike Envoy's adaptive_concurrency filter, it never pins the tier to a few calls to re-measure its
minimum latency: the baseline is learnt from the traffic itself, so no request is refused for a
measurement.
"""

from __future__ import annotations

import math

from ext_proc.policy import AdaptiveLimit

BACKOFF = 0.9
"""The limit's factor in a window in which the tier said "too many requests"."""
RECOVERY = 0.95
"""The baseline's factor in a window whose latency is under half of it (latency back to normal
after a long overload, or a better version deployed)."""


class GradientLimit:
    """One tier's adaptive limit; ``value`` is what the limiter compares calls in flight with."""

    __slots__ = (
        "_alpha",
        "_count",
        "_peak",
        "_pushed",
        "_sum",
        "_window_end",
        "baseline",
        "estimate",
        "high",
        "low",
        "settings",
        "short",
        "value",
        "windows",
    )

    def __init__(self, settings: AdaptiveLimit, cap: int | None = None) -> None:
        self.settings = settings
        self.low = settings.min
        self.high = settings.max if cap is None else max(settings.min, min(settings.max, cap))
        self.estimate = float(max(self.low, min(self.high, settings.initial)))
        self.value = int(self.estimate)
        self.baseline = 0.0
        """Seconds; 0 until the first window."""
        self.short = 0.0
        """The last window's mean latency, seconds."""
        self.windows = 0
        self._alpha = 2.0 / (settings.baseline_windows + 1)
        self._sum = 0.0
        self._count = 0
        self._peak = 0
        self._pushed = 0
        self._window_end = -math.inf

    def observe(self, latency: float, now: float, inflight: int) -> None:
        """A call answered in ``latency`` seconds at ``now``, with ``inflight`` calls in flight."""
        self._sum += latency
        self._count += 1
        if inflight > self._peak:
            self._peak = inflight
        if now >= self._window_end:
            self._close(now)

    def pushed_back(self, now: float) -> None:
        """The tier answered "too many requests" at ``now``."""
        self._pushed += 1
        if now >= self._window_end:
            self._close(now)

    def _close(self, now: float) -> None:
        if self._count < self.settings.min_samples and not self._pushed:
            return  # too few answers to say anything: the window goes on
        estimate = self.estimate * BACKOFF if self._pushed else self._step(self._sum / self._count)
        self.estimate = max(self.low, min(self.high, estimate))
        self.value = int(self.estimate)
        self.windows += 1
        self._sum, self._count, self._peak, self._pushed = 0.0, 0, 0, 0
        self._window_end = now + self.settings.window

    def _step(self, short: float) -> float:
        """The estimate after a window whose mean latency was ``short``."""
        settings = self.settings
        self.short = short
        self._learn(short)
        estimate = self.estimate
        if self._peak < estimate / 2:
            return estimate
        gradient = max(0.5, min(1.0, settings.tolerance * self.baseline / short)) if short > 0 else 1.0
        proposed = estimate + math.sqrt(estimate) if gradient >= 1.0 else estimate * gradient
        return estimate * (1 - settings.smoothing) + proposed * settings.smoothing

    def _learn(self, short: float) -> None:
        baseline = self.baseline
        if baseline <= 0:
            self.baseline = short
            return
        if short <= self.settings.tolerance * baseline or self.estimate <= self.low:
            baseline += self._alpha * (short - baseline)
        if baseline > 2 * short:
            baseline *= RECOVERY
        self.baseline = baseline

    def snapshot(self) -> dict[str, object]:
        return {
            "kind": "adaptive",
            "limit": self.value,
            "min": self.low,
            "max": self.high,
            "baseline_seconds": round(self.baseline, 6),
            "latency_seconds": round(self.short, 6),
            "windows": self.windows,
        }
