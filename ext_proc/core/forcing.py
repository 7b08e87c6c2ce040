"""Forced states: an operator's word on a tier, standing in front of its breaker.

In an incident a human often knows first (a GPU node overheating, a bad model push). A tier can
be forced open (it admits nothing; its requests take the next tier with reason ``forced``) or
forced closed (it admits everything and never trips, while its outcomes still go into the
breaker's window, so the operator sees what the breaker would have done), and handed back to its
breaker (``auto``), by hand or when the order's expiry comes.

A forced state is the head of the tier's admission chain, its ``gate`` (core/registry.py): the
breaker itself while the tier is automatic, one of the admitters below while it is forced. The
hot path reads the gate as it read the breaker, so forcing costs a request nothing it did not
already pay. An order carries wall-clock times (``since``, ``until``: it is shown to people and
kept on disk across restarts); its ``deadline`` is the same expiry on the core's clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ext_proc.core.admission import Token
from ext_proc.core.outcomes import FAILURE, LOGGED, OVERLOAD
from ext_proc.core.reasons import FORCED

if TYPE_CHECKING:
    from ext_proc.core.registry import TierState

NEVER = float("inf")


class ForceMode(enum.Enum):
    AUTO = "auto"
    FORCED_OPEN = "forced_open"
    FORCED_CLOSED = "forced_closed"


@dataclass(frozen=True, slots=True)
class ForceOrder:
    """What an operator asked for a tier, and who, why and until when."""

    mode: ForceMode
    reason: str
    caller: str
    since: float
    """Wall-clock seconds (Unix time) when it was given."""
    until: float | None = None
    """Wall-clock seconds when the tier goes back to ``auto`` by itself; None: not before told."""

    def to_json(self) -> dict[str, object]:
        return {
            "mode": self.mode.value,
            "reason": self.reason,
            "caller": self.caller,
            "since": self.since,
            "until": self.until,
        }


@dataclass(frozen=True, slots=True)
class ForceChange:
    """A forced state given, replaced, handed back or expired: the event logs, metrics and
    watchers get (the breaker's own moves are ``Transition``s)."""

    model: str
    tier: str
    from_state: str
    to_state: str
    order: ForceOrder
    """The order now in force; for a move to ``auto``, the one that ended, with ``ended_by``."""
    ended_by: str = ""
    """Who handed the tier back: a caller, or ``expiry``; empty when a forced state was given."""


class ForcedOpen:
    """The gate of a tier forced open: refuses every request (reason ``forced``) until its deadline."""

    __slots__ = ("deadline", "state")
    refusal = FORCED

    def __init__(self, state: TierState, deadline: float) -> None:
        self.state = state
        self.deadline = deadline

    def admit(self, now: float) -> Token | None:
        if now >= self.deadline:
            return self.state.expire(now).admit(now)
        return None


class _ShadowToken:
    """A forced-closed tier's token: the outcome goes into the breaker's window, which judges
    nothing (``CircuitBreaker.observe``), as long as the order that admitted it is still the
    tier's gate (a hand-back starts the breaker afresh; a late result must not land in it)."""

    __slots__ = ("era", "state")
    reason: str | None = None

    def __init__(self, state: TierState) -> None:
        self.state = state
        self.era = state.era

    def record(self, outcome: str, latency: float, started: float) -> None:
        state = self.state
        if state.era == self.era and outcome != LOGGED:  # a logged answer's tries are observed from the log
            state.breaker.observe(outcome == FAILURE, outcome == OVERLOAD, latency)

    def release(self, started: float) -> None:
        return None


class ForcedClosed:
    """The gate of a tier forced closed: admits every request until its deadline."""

    __slots__ = ("deadline", "state", "token")
    refusal = FORCED

    def __init__(self, state: TierState, deadline: float) -> None:
        self.state = state
        self.deadline = deadline
        self.token: Token = _ShadowToken(state)

    def admit(self, now: float) -> Token | None:
        if now >= self.deadline:
            return self.state.expire(now).admit(now)
        return self.token
