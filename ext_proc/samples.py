"""Statistics over measured samples, for the reports of the demo and the benchmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["percentile"]


def percentile(ordered: Sequence[float], fraction: float, *, strict: bool = False) -> float:
    """A percentile of ascending values by rank, one of the values (no interpolation).

    `fraction` is 0..1 (0.99 for p99). By default the nearest rank: the smallest value with at
    least `fraction` of all values at or below it, rank ceil(fraction * n) (at least 1).
    `strict=True`: the smallest value with more than `fraction` of them at or below it, rank
    floor(fraction * n) + 1 (at most n), as the demo reports. The two differ only where
    fraction * n is whole: the p99 of 100 values is the 99th by default, the 100th with `strict`.

    Raises ValueError for no values.
    """
    if not ordered:
        raise ValueError("no values")
    count = len(ordered)
    rank = math.floor(fraction * count) + 1 if strict else math.ceil(fraction * count)
    return float(ordered[max(1, min(count, rank)) - 1])
