"""The stable version's recent latency quantile, in bounded memory.

Latencies go into log-spaced buckets (each 4% wider than the last: a quantile is known within
4%, read as its bucket's upper bound), kept for the current window of ``span`` calls and the one
before it: the quantile is over the last one to two windows of calls, so that stable's "normal"
follows the load, at any traffic rate. 412 counters a window.
"""

from __future__ import annotations

import math

LOWEST = 0.0001
"""Seconds: everything faster shares the first bucket."""
GROWTH = 1.04
SIZE = 412
"""Buckets up to LOWEST * GROWTH**(SIZE - 1), about 1,000 s; slower falls in the last."""
_SCALE = 1 / math.log(GROWTH)


def bucket_of(seconds: float) -> int:
    if seconds <= LOWEST:
        return 0
    return min(SIZE - 1, int(math.log(seconds / LOWEST) * _SCALE) + 1)


def upper_of(index: int) -> float:
    return LOWEST * GROWTH**index


class RecentQuantile:
    """Counts of the current and the previous window; ``span`` calls each."""

    __slots__ = ("count", "current", "previous", "span")

    def __init__(self, span: int) -> None:
        self.span = span
        self.count = 0
        self.current = [0] * SIZE
        self.previous = [0] * SIZE

    def observe(self, seconds: float) -> None:
        if self.count >= self.span:
            self.previous, self.current, self.count = self.current, [0] * SIZE, 0
        self.current[bucket_of(seconds)] += 1
        self.count += 1

    def quantile(self, share: float, least: int) -> float | None:
        """The ``share`` quantile (0.95) over both windows, None with fewer than ``least`` calls."""
        total = self.count + sum(self.previous)
        if total < max(1, least):
            return None
        rank = math.ceil(share * total)
        seen = 0
        for index in range(SIZE):
            seen += self.current[index] + self.previous[index]
            if seen >= rank:
                return upper_of(index)
        return upper_of(SIZE - 1)
