"""Plain counters and histograms the core updates on the hot path.

They are read only when Prometheus scrapes (see metrics.py), so recording costs an integer
increment and a bisect, with no lock and no label lookup per request.
"""

from __future__ import annotations

from bisect import bisect_left

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DECISION_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01)


class Histogram:
    """Cumulative-at-read histogram: ``counts[i]`` holds observations in bucket i only."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, count of observations at or below it), ending with +Inf."""
        running = 0
        rows: list[tuple[float, int]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            rows.append((bound, running))
        return rows


class Counter:
    """A count the hot path bumps (``counter.value += 1``) and a scrape reads; shared by every
    guard that counts the same thing, so a reload does not reset it."""

    __slots__ = ("mark", "value")

    def __init__(self) -> None:
        self.value = 0
        self.mark = 0
        """For the state registry's sweep (core/registry.py)."""
