"""The admission chain: every admitter of a tier must let a request through, and whatever let it
through is told how it ended, exactly once.

A tier's admitters today are its breaker; a forced state, a canary arm and a concurrency limit
are admitters too. Each hands the request a ``Token``; the request's ``Ticket`` carries them all
and settles every one when the request ends: recorded with the outcome when a response came,
released when the stream ended without one. A chain that is refused part-way releases the tokens
already taken, so a limit never stays counted for a request a breaker refused. Adding an admitter
is a local change: one class with ``admit``, one token class with ``record`` and ``release``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ext_proc.core.guard import Decision


class Token(Protocol):
    """An admitter's hold on one request."""

    reason: str | None
    """What this admission says about the request (``half_open_probe``), or None: the decision's
    reason is that of the first token that has one."""

    def record(self, outcome: str, latency: float, started: float) -> None: ...

    def release(self, started: float) -> None: ...


class Admitter(Protocol):
    def admit(self, now: float) -> Token | None:
        """A token for a request arriving at ``now``, or None to refuse it."""
        ...


class Gate(Admitter, Protocol):
    """The head of a tier's chain (a breaker, or a forced state in front of it), which also says
    why it refused: the reason the tier that takes a refused request gives it."""

    @property
    def refusal(self) -> str: ...


NO_TOKENS: tuple[Token, ...] = ()


def admit_all(admitters: Sequence[Admitter], now: float) -> tuple[Token, ...] | None:
    """Every admitter's token, or None (with the tokens already taken released) if one refuses.
    (A tier whose only admitter is its gate skips this: Guard.decide's fast path.)"""
    taken: list[Token] = []
    for admitter in admitters:
        token = admitter.admit(now)
        if token is None:
            for held in taken:
                held.release(now)
            return None
        taken.append(token)
    return tuple(taken)


def reason_of(tokens: Sequence[Token]) -> str | None:
    for token in tokens:
        if token.reason is not None:
            return token.reason
    return None


NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class Ticket:
    """A request's admission: its decision, its tokens, and whether they are settled yet
    (``Guard.record`` and ``Guard.release`` settle every token, once)."""

    __slots__ = ("decision", "done", "headers", "started", "tokens")

    def __init__(
        self, decision: Decision, tokens: tuple[Token, ...], started: float, headers: Mapping[str, str] = NO_HEADERS
    ) -> None:
        self.decision = decision
        self.tokens = tokens
        self.started = started
        self.headers = headers
        """The request's headers modelguard read: a 404 is judged by the path (``Guard.record``)."""
        self.done = not tokens
        """A ticket without tokens (unmatched, answered directly, refused) has nothing to settle."""
