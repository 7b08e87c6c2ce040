"""A tier that says "too many requests" is overloaded, not broken (README, "Upstream pushback").

A model server shedding load answers 429 (gRPC RESOURCE_EXHAUSTED), often with a Retry-After. The
breaker counts those apart from calls and never opens on them; this says when they are enough to
act on: at least ``pushback_min`` of them in the breaker's window and at least ``pushback_share`` of
its answers. The tier is then pushed back until the Retry-After of the answer that made it so
(capped at ``max_pushback``; 1 s without one), and decide() steps its requests but the critical
ones down the ladder meanwhile.
"""

from __future__ import annotations

from ext_proc.core.windows import WindowFigures
from ext_proc.policy import Overload

DEFAULT_WAIT = 1.0
"""Seconds a tier is pushed back for by an answer without a Retry-After."""


def pushed_until(settings: Overload, figures: WindowFigures, now: float, retry_after: float | None) -> float | None:
    """Until when the tier is pushed back after a 429 at ``now``, or None if not (yet)."""
    overloaded = figures.overloaded
    if overloaded < settings.pushback_min or overloaded < settings.pushback_share * (overloaded + figures.calls):
        return None
    wait = DEFAULT_WAIT if retry_after is None else max(0.0, min(settings.max_pushback, retry_after))
    return now + wait
