"""Sliding windows of call outcomes, the evidence a breaker judges on.

Both kinds keep running totals so that recording a call and reading the rates are O(1)
(amortised for the time window): the breaker consults them on every response.
The time window is bucketed (ten buckets per window), as Resilience4j and Envoy's outlier
detector do, so its memory is fixed however fast calls arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

BUCKETS_PER_WINDOW = 10


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """What a breaker and the state endpoint read off a window."""

    calls: int
    failures: int
    slow: int
    overloaded: int

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @property
    def slow_rate(self) -> float:
        return self.slow / self.calls if self.calls else 0.0


class Window(Protocol):
    """Outcomes of judged calls; 'overloaded' answers (429) are counted apart from calls."""

    calls: int
    failures: int
    slow: int
    overloaded: int

    def record(self, now: float, failed: bool, slow: bool) -> None: ...

    def record_overload(self, now: float) -> None: ...

    def advance(self, now: float) -> None: ...

    def reset(self) -> None: ...

    def figures(self, now: float) -> WindowFigures: ...


class CountWindow:
    """The last ``size`` calls, as a ring buffer of packed outcomes (bit 0 failed, bit 1 slow)."""

    __slots__ = ("_filled", "_next", "_ring", "calls", "failures", "overloaded", "size", "slow")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a count window holds at least one call")
        self.size = size
        self._ring = bytearray(size)
        self.reset()

    def reset(self) -> None:
        self._ring[:] = bytes(self.size)
        self._next = 0
        self._filled = 0
        self.calls = self.failures = self.slow = self.overloaded = 0

    def record(self, now: float, failed: bool, slow: bool) -> None:
        index = self._next
        if self._filled == self.size:
            old = self._ring[index]
            self.failures -= old & 1
            self.slow -= (old >> 1) & 1
        else:
            self._filled += 1
            self.calls += 1
        self._ring[index] = failed | (slow << 1)
        self.failures += failed
        self.slow += slow
        self._next = index + 1 if index + 1 < self.size else 0

    def record_overload(self, now: float) -> None:
        # Overload answers are not calls the breaker judges; a count window keeps a running
        # total of them since the last reset, for the state endpoint only.
        self.overloaded += 1

    def advance(self, now: float) -> None:
        return None

    def figures(self, now: float) -> WindowFigures:
        return WindowFigures(self.calls, self.failures, self.slow, self.overloaded)


class TimeWindow:
    """Calls of the last ``length`` seconds, in ``BUCKETS_PER_WINDOW`` buckets."""

    __slots__ = (
        "_calls",
        "_failures",
        "_head",
        "_overloaded",
        "_slow",
        "_width",
        "calls",
        "failures",
        "length",
        "overloaded",
        "slow",
    )

    def __init__(self, length: float) -> None:
        if length <= 0:
            raise ValueError("a time window has a positive length")
        self.length = length
        self._width = length / BUCKETS_PER_WINDOW
        self._calls = [0] * BUCKETS_PER_WINDOW
        self._failures = [0] * BUCKETS_PER_WINDOW
        self._slow = [0] * BUCKETS_PER_WINDOW
        self._overloaded = [0] * BUCKETS_PER_WINDOW
        self._head = 0  # absolute index of the newest bucket
        self.calls = self.failures = self.slow = self.overloaded = 0

    def reset(self) -> None:
        for bucket in (self._calls, self._failures, self._slow, self._overloaded):
            bucket[:] = [0] * BUCKETS_PER_WINDOW
        self.calls = self.failures = self.slow = self.overloaded = 0

    def advance(self, now: float) -> None:
        """Drop buckets that have slid out of the window by ``now``."""
        target = int(now / self._width)
        head = self._head
        if target <= head:
            return
        if target - head >= BUCKETS_PER_WINDOW:
            self.reset()
        else:
            for absolute in range(head + 1, target + 1):
                slot = absolute % BUCKETS_PER_WINDOW
                self.calls -= self._calls[slot]
                self.failures -= self._failures[slot]
                self.slow -= self._slow[slot]
                self.overloaded -= self._overloaded[slot]
                self._calls[slot] = self._failures[slot] = self._slow[slot] = self._overloaded[slot] = 0
        self._head = target

    def record(self, now: float, failed: bool, slow: bool) -> None:
        if int(now / self._width) != self._head:  # advance()'s own first test, without the call
            self.advance(now)
        slot = self._head % BUCKETS_PER_WINDOW
        self._calls[slot] += 1
        self.calls += 1
        if failed:
            self._failures[slot] += 1
            self.failures += 1
        if slow:
            self._slow[slot] += 1
            self.slow += 1

    def record_overload(self, now: float) -> None:
        self.advance(now)
        self._overloaded[self._head % BUCKETS_PER_WINDOW] += 1
        self.overloaded += 1

    def figures(self, now: float) -> WindowFigures:
        self.advance(now)
        return WindowFigures(self.calls, self.failures, self.slow, self.overloaded)
