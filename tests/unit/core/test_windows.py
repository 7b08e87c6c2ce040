"""CountWindow and TimeWindow: exact running totals under eviction and expiry."""

from __future__ import annotations

import random

import pytest

from ext_proc.core.windows import BUCKETS_PER_WINDOW, CountWindow, TimeWindow, WindowFigures

# -- WindowFigures --------------------------------------------------------------------------


def test_figures_rates() -> None:
    figures = WindowFigures(calls=8, failures=2, slow=6, overloaded=3)
    assert figures.failure_rate == pytest.approx(0.25)
    assert figures.slow_rate == pytest.approx(0.75)


def test_figures_rates_without_calls_are_zero() -> None:
    figures = WindowFigures(calls=0, failures=0, slow=0, overloaded=5)
    assert figures.failure_rate == 0.0
    assert figures.slow_rate == 0.0


def test_figures_rates_ignore_overload() -> None:
    assert WindowFigures(calls=4, failures=4, slow=0, overloaded=100).failure_rate == 1.0


# -- CountWindow ----------------------------------------------------------------------------


def test_count_window_rejects_zero_size() -> None:
    with pytest.raises(ValueError):
        CountWindow(0)


def test_count_window_fills_then_stays_at_size() -> None:
    window = CountWindow(3)
    for expected_calls in (1, 2, 3, 3, 3):
        window.record(0.0, failed=False, slow=False)
        assert window.calls == expected_calls
    assert window.figures(0.0) == WindowFigures(3, 0, 0, 0)


def test_count_window_eviction_adjusts_totals_exactly() -> None:
    window = CountWindow(3)
    window.record(0.0, failed=True, slow=False)  # a: F
    window.record(0.0, failed=False, slow=True)  # b: S
    window.record(0.0, failed=True, slow=True)  # c: FS
    assert window.figures(0.0) == WindowFigures(3, 2, 2, 0)
    window.record(0.0, failed=False, slow=False)  # evicts a (F)
    assert window.figures(0.0) == WindowFigures(3, 1, 2, 0)
    window.record(0.0, failed=False, slow=False)  # evicts b (S)
    assert window.figures(0.0) == WindowFigures(3, 1, 1, 0)
    window.record(0.0, failed=True, slow=False)  # evicts c (FS), adds F
    assert window.figures(0.0) == WindowFigures(3, 1, 0, 0)
    window.record(0.0, failed=False, slow=False)  # evicts a clean one
    assert window.figures(0.0) == WindowFigures(3, 1, 0, 0)
    window.record(0.0, failed=False, slow=False)  # evicts a clean one
    window.record(0.0, failed=False, slow=False)  # evicts the F
    assert window.figures(0.0) == WindowFigures(3, 0, 0, 0)


def test_count_window_size_one() -> None:
    window = CountWindow(1)
    window.record(0.0, failed=True, slow=True)
    assert window.figures(0.0) == WindowFigures(1, 1, 1, 0)
    window.record(0.0, failed=False, slow=False)
    assert window.figures(0.0) == WindowFigures(1, 0, 0, 0)
    window.record(0.0, failed=False, slow=True)
    assert window.figures(0.0) == WindowFigures(1, 0, 1, 0)


def test_count_window_matches_a_reference_model() -> None:
    rng = random.Random(1234)
    size = 7
    window = CountWindow(size)
    history: list[tuple[bool, bool]] = []
    for _ in range(500):
        failed, slow = rng.random() < 0.4, rng.random() < 0.3
        window.record(0.0, failed=failed, slow=slow)
        history.append((failed, slow))
        last = history[-size:]
        assert window.calls == len(last)
        assert window.failures == sum(f for f, _ in last)
        assert window.slow == sum(s for _, s in last)


def test_count_window_overload_counted_apart_from_calls() -> None:
    window = CountWindow(2)
    window.record_overload(0.0)
    window.record_overload(1.0)
    assert window.figures(2.0) == WindowFigures(0, 0, 0, 2)
    window.record(0.0, failed=True, slow=False)
    window.record(0.0, failed=True, slow=False)
    window.record(0.0, failed=True, slow=False)
    window.record_overload(3.0)
    figures = window.figures(3.0)
    assert (figures.calls, figures.failures, figures.overloaded) == (2, 2, 3)
    assert figures.failure_rate == 1.0


def test_count_window_ignores_time() -> None:
    window = CountWindow(2)
    window.record(0.0, failed=True, slow=False)
    window.advance(1e9)
    assert window.figures(1e9) == WindowFigures(1, 1, 0, 0)


def test_count_window_reset() -> None:
    window = CountWindow(3)
    for _ in range(5):
        window.record(0.0, failed=True, slow=True)
    window.record_overload(0.0)
    window.reset()
    assert window.figures(0.0) == WindowFigures(0, 0, 0, 0)
    # After a reset the ring is empty again: the next records fill, not evict.
    window.record(0.0, failed=False, slow=False)
    window.record(0.0, failed=True, slow=False)
    assert window.figures(0.0) == WindowFigures(2, 1, 0, 0)


def test_count_window_rates() -> None:
    window = CountWindow(4)
    window.record(0.0, failed=True, slow=True)
    window.record(0.0, failed=True, slow=False)
    window.record(0.0, failed=False, slow=False)
    window.record(0.0, failed=False, slow=False)
    figures = window.figures(0.0)
    assert figures.failure_rate == pytest.approx(0.5)
    assert figures.slow_rate == pytest.approx(0.25)


# -- TimeWindow -----------------------------------------------------------------------------


def test_time_window_rejects_non_positive_length() -> None:
    with pytest.raises(ValueError):
        TimeWindow(0)
    with pytest.raises(ValueError):
        TimeWindow(-1.0)


def test_time_window_counts_within_window() -> None:
    window = TimeWindow(10.0)
    window.record(100.0, failed=True, slow=False)
    window.record(101.0, failed=False, slow=True)
    window.record(102.0, failed=False, slow=False)
    figures = window.figures(103.0)
    assert figures == WindowFigures(3, 1, 1, 0)
    assert figures.failure_rate == pytest.approx(1 / 3)
    assert figures.slow_rate == pytest.approx(1 / 3)


@pytest.mark.parametrize("length", [10.0, 1.0, 60.0])
def test_time_window_expiry_drops_only_the_oldest_bucket(length: float) -> None:
    t = 1000.0 * length  # a bucket boundary, away from zero
    eps = length / BUCKETS_PER_WINDOW / 100
    window = TimeWindow(length)
    window.record(t, failed=True, slow=True)  # oldest bucket
    window.record(t, failed=True, slow=False)
    window.record_overload(t)
    window.record(t + 0.5 * length, failed=False, slow=True)  # half a window later
    window.record_overload(t + 0.5 * length)

    # Just before the window has passed: everything is still in.
    assert window.figures(t + length - eps) == WindowFigures(3, 2, 2, 2)
    # Just after: the bucket at t is gone, the one at t + length/2 is not.
    after = window.figures(t + length + eps)
    assert after == WindowFigures(1, 0, 1, 1)
    assert after.failure_rate == 0.0
    assert after.slow_rate == 1.0
    # And a window after the second record, nothing is left.
    assert window.figures(t + 1.5 * length + eps) == WindowFigures(0, 0, 0, 0)


def test_time_window_steps_bucket_by_bucket() -> None:
    window = TimeWindow(10.0)  # 1 s buckets
    t0 = 500.0
    for i in range(10):
        window.record(t0 + i, failed=i % 2 == 0, slow=False)
    assert window.figures(t0 + 9.5) == WindowFigures(10, 5, 0, 0)
    # Each further second drops exactly one bucket, the oldest.
    expected_failures = 5
    for step in range(1, 11):
        dropped_failed = (step - 1) % 2 == 0
        expected_failures -= dropped_failed
        figures = window.figures(t0 + 9.5 + step)
        assert figures.calls == 10 - step
        assert figures.failures == expected_failures


def test_time_window_reset_after_a_long_gap() -> None:
    window = TimeWindow(10.0)
    for i in range(20):
        window.record(100.0 + i * 0.25, failed=True, slow=True)
        window.record_overload(100.0 + i * 0.25)
    assert window.figures(105.0) == WindowFigures(20, 20, 20, 20)
    # Long after: everything expired at once, and the window works normally afterwards.
    assert window.figures(10_000.0) == WindowFigures(0, 0, 0, 0)
    window.record(10_000.5, failed=True, slow=False)
    assert window.figures(10_001.0) == WindowFigures(1, 1, 0, 0)
    assert window.figures(10_011.0) == WindowFigures(0, 0, 0, 0)


def test_time_window_gap_of_exactly_one_window_clears_it() -> None:
    window = TimeWindow(10.0)
    window.record(100.0, failed=True, slow=False)
    assert window.figures(110.0) == WindowFigures(0, 0, 0, 0)


def test_time_window_record_after_gap_starts_fresh() -> None:
    window = TimeWindow(10.0)
    window.record(100.0, failed=True, slow=False)
    window.record(200.0, failed=False, slow=False)  # record itself advances
    assert window.figures(200.0) == WindowFigures(1, 0, 0, 0)


def test_time_window_overload_counted_apart_from_calls() -> None:
    window = TimeWindow(10.0)
    window.record_overload(100.0)
    window.record_overload(101.0)
    window.record(101.0, failed=True, slow=False)
    figures = window.figures(102.0)
    assert (figures.calls, figures.failures, figures.overloaded) == (1, 1, 2)
    assert figures.failure_rate == 1.0
    # Overloads expire like calls do.
    assert window.figures(110.5).overloaded == 1
    assert window.figures(111.5).overloaded == 0


def test_time_window_time_going_backwards_does_not_expire() -> None:
    window = TimeWindow(10.0)
    window.record(100.0, failed=True, slow=False)
    window.record(99.0, failed=False, slow=False)
    assert window.figures(98.0) == WindowFigures(2, 1, 0, 0)


def test_time_window_reset() -> None:
    window = TimeWindow(10.0)
    window.record(100.0, failed=True, slow=True)
    window.record_overload(100.0)
    window.reset()
    assert window.figures(100.0) == WindowFigures(0, 0, 0, 0)
    window.record(100.5, failed=False, slow=False)
    assert window.figures(101.0) == WindowFigures(1, 0, 0, 0)


def test_time_window_matches_a_reference_model() -> None:
    rng = random.Random(99)
    length = 2.0
    width = length / BUCKETS_PER_WINDOW
    window = TimeWindow(length)
    events: list[tuple[int, bool, bool]] = []
    now = 50.0
    for _ in range(2000):
        now += rng.choice([0.0, 0.01, 0.05, 0.2, 0.7, 3.0])
        failed, slow = rng.random() < 0.5, rng.random() < 0.2
        window.record(now, failed=failed, slow=slow)
        events.append((int(now / width), failed, slow))
        head = int(now / width)
        live = [e for e in events if e[0] > head - BUCKETS_PER_WINDOW]
        figures = window.figures(now)
        assert figures.calls == len(live)
        assert figures.failures == sum(f for _, f, _ in live)
        assert figures.slow == sum(s for _, _, s in live)
