"""A tier's concurrency limit as an admitter, and the order in which requests lose over it.

The limiter counts the calls it let through that are not settled yet (answered, or their stream
gone: a ticket settles each token exactly once, so the count cannot leak), the canary's calls at a
first tier included. A request is let through while that count is under the limit times its
class's share: ``sheddable_share`` (under 1: sheddable requests lose first), 1 for standard ones,
``critical_share`` (over 1: critical ones may go past the limit). What the guard does with a
refusal is the shedding order (README, "Shedding"; core/guard.py).
"""

from __future__ import annotations

from typing import Protocol

from ext_proc.core import reasons
from ext_proc.core.outcomes import OVERLOAD, SUCCESS
from ext_proc.core.overload.gradient import GradientLimit
from ext_proc.policy import Limit, Overload


class LimitFigure(Protocol):
    """The number a limiter holds calls in flight under, and what it learns from answers."""

    value: int

    def observe(self, latency: float, now: float, inflight: int) -> None: ...

    def pushed_back(self, now: float) -> None: ...

    def snapshot(self) -> dict[str, object]: ...


class StaticLimit:
    """``max_inflight``: a fixed number."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value

    def observe(self, latency: float, now: float, inflight: int) -> None:
        return None

    def pushed_back(self, now: float) -> None:
        return None

    def snapshot(self) -> dict[str, object]:
        return {"kind": "static", "limit": self.value}


def figure_of(limit: Limit) -> LimitFigure:
    if limit.adaptive is not None:
        return GradientLimit(limit.adaptive, limit.max_inflight)
    return StaticLimit(limit.max_inflight or 1)  # the reader requires one of the two


class LimitToken:
    """A limiter's hold on one request (core/admission.py ``Token``): one object per limiter and
    reason, shared by its requests, since the ticket keeps the request's own figures."""

    __slots__ = ("limiter", "reason")

    def __init__(self, limiter: Limiter, reason: str | None) -> None:
        self.limiter = limiter
        self.reason = reason

    def record(self, outcome: str, latency: float, started: float) -> None:
        self.limiter.answered(outcome, latency, started + latency)

    def release(self, started: float) -> None:
        self.limiter.inflight -= 1


class Limiter:
    """One tier's limit: kept across reloads with the tier's state (core/registry.py)."""

    __slots__ = ("figure", "inflight", "over", "settings", "shares", "token")

    def __init__(self, limit: Limit, overload: Overload) -> None:
        self.inflight = 0
        self.token = LimitToken(self, None)
        self.over = LimitToken(self, reasons.OVERLOAD)
        """A critical request let past the limit: the tier is over it, so its retries are held."""
        self.settings = limit
        self.figure = figure_of(limit)
        self.shares = _shares(overload)

    def reconfigure(self, limit: Limit, overload: Overload) -> None:
        """A new policy: a limit set otherwise starts afresh; the calls in flight stay counted."""
        if limit != self.settings:
            self.settings = limit
            self.figure = figure_of(limit)
        self.shares = _shares(overload)

    def admit(self, rank: int) -> LimitToken | None:
        inflight = self.inflight
        value = self.figure.value
        if inflight >= value * self.shares[rank]:
            return None
        self.inflight = inflight + 1
        return self.token if inflight < value else self.over

    def force(self) -> LimitToken:
        """Let a critical request through past every share: no tier had room for it."""
        self.inflight += 1
        return self.over

    def answered(self, outcome: str, latency: float, now: float) -> None:
        inflight = self.inflight
        self.inflight = inflight - 1
        if outcome == SUCCESS:
            self.figure.observe(latency, now, inflight)
        elif outcome == OVERLOAD:
            self.figure.pushed_back(now)

    def snapshot(self) -> dict[str, object]:
        return {**self.figure.snapshot(), "inflight": self.inflight}


def _shares(overload: Overload) -> tuple[float, float, float]:
    """Indexed by rank (core/overload/criticality.py): critical, standard, sheddable."""
    return (overload.critical_share, 1.0, overload.sheddable_share)
