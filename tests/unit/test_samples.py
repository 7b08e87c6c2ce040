"""ext_proc.samples: percentiles of measured samples, as the benchmarks and the demo report them."""

from __future__ import annotations

import pytest

from ext_proc.samples import percentile

HUNDRED = [float(v) for v in range(1, 101)]


def test_percentile_is_nearest_rank() -> None:
    """The benchmarks' rule: rank ceil(fraction * n)."""
    assert percentile(HUNDRED, 0.5) == 50
    assert percentile(HUNDRED, 0.9) == 90
    assert percentile(HUNDRED, 0.99) == 99
    assert percentile(HUNDRED, 1.0) == 100
    assert percentile(HUNDRED, 0.0) == 1
    assert percentile([7.0], 0.99) == 7
    assert percentile([1.0, 2.0, 3.0], 0.5) == 2  # rank ceil(1.5) = 2


def test_strict_takes_the_next_rank_where_fraction_times_n_is_whole() -> None:
    """The demo's rule: rank floor(fraction * n) + 1, the smallest value with more than
    `fraction` of the values at or below it."""
    assert percentile(HUNDRED, 0.5, strict=True) == 51
    assert percentile(HUNDRED, 0.99, strict=True) == 100
    assert percentile(HUNDRED, 1.0, strict=True) == 100
    assert percentile(HUNDRED, 0.0, strict=True) == 1
    assert percentile([7.0], 0.99, strict=True) == 7
    # Where fraction * n is not whole, both rules take the same value.
    assert percentile([1.0, 2.0, 3.0], 0.5, strict=True) == percentile([1.0, 2.0, 3.0], 0.5) == 2
    odd = [float(v) for v in range(1, 151)]
    assert percentile(odd, 0.99, strict=True) == percentile(odd, 0.99) == 149


def test_no_values_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5, strict=True)
