"""What counts as slow for one tier: a fixed ``slow_call_duration``, or one learnt from the tier's
own latency (``slow_call_duration: auto``; README, "A learnt slow-call threshold").

The learnt threshold is ``clamp(factor x q, floor, ceiling)``, where ``q`` is the ``quantile``
(p99) of the tier's recent successful latencies, kept in a log-bucketed sketch of the last one to
two windows of ``calls`` calls (core/sketch.py: bounded memory, within 4%). Until ``min_calls``
calls are learnt it is ``initial``. Only successes faster than the threshold in force, answered
while the breaker is closed, are learnt: a fault's slow calls and failures never become the normal
(the sketch is frozen while the breaker is open or half-open, the tier being degraded), while a
model that became slower for good moves the threshold up, by at most ``factor`` a refresh. It is
refreshed every ``REFRESH`` learnt calls and changes when it moves by more than ``STEADY``.
"""

from __future__ import annotations

from ext_proc.core.sketch import RecentQuantile
from ext_proc.policy import AutoSlow

REFRESH = 100
"""Learnt calls between two looks at the quantile."""
STEADY = 0.1
"""A new threshold within 10% of the one in force is not taken: the in-flight buckets
(core/flight.py) start over at each change."""


class SlowThreshold:
    """The threshold in force (``value``) and, when learnt, what it is learnt from."""

    __slots__ = ("auto", "learns", "learnt", "sketch", "value")

    def __init__(self, value: float, auto: AutoSlow | None = None) -> None:
        self.value = value
        self.auto = auto
        self.learns = auto is not None
        """Whether ``learn`` does anything: a fixed threshold skips the call."""
        self.sketch = RecentQuantile(auto.calls if auto is not None else 1)
        self.learnt = 0

    def learn(self, latency: float) -> bool:
        """A success answered in ``latency`` by a closed tier; True when the threshold changed."""
        if latency >= self.value:
            return False
        self.sketch.observe(latency)
        self.learnt += 1
        if self.learnt % REFRESH:
            return False
        return self.refresh()

    def refresh(self) -> bool:
        auto = self.auto
        if auto is None:
            return False
        found = self.sketch.quantile(auto.quantile, auto.min_calls)
        if found is None:
            return False
        proposed = max(auto.floor, min(auto.ceiling, auto.factor * found))
        if abs(proposed - self.value) <= STEADY * self.value:
            return False
        self.value = proposed
        return True

    def snapshot(self) -> dict[str, object]:
        figures: dict[str, object] = {"slow_call_duration_s": round(self.value, 6)}
        auto = self.auto
        if auto is not None:
            baseline = self.sketch.quantile(auto.quantile, 1)
            figures["slow_call_auto"] = {
                "learnt_calls": self.learnt,
                "baseline_seconds": None if baseline is None else round(baseline, 6),
                "quantile": auto.quantile,
                "factor": auto.factor,
            }
        return figures
