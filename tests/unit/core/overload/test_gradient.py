"""The adaptive limit on simulated answers: it grows while latency stays near the baseline, shrinks
as latency climbs, learns no baseline from congestion, and stays in its bounds."""

from __future__ import annotations

from ext_proc.core.overload.gradient import GradientLimit
from ext_proc.policy import AdaptiveLimit

SETTINGS = AdaptiveLimit(initial=20, min=4, max=200, window=0.1, min_samples=5, baseline_windows=10)


def feed(limit: GradientLimit, latency: float, windows: int, start: float = 0.0, inflight: int | None = None) -> float:
    """Answers of ``latency`` with the limit's worth in flight, 10 a window, for ``windows`` windows."""
    now = start
    for _ in range(windows):
        for _ in range(10):
            limit.observe(latency, now, limit.value if inflight is None else inflight)
        now += 0.1
    return now


def test_a_tier_within_tolerance_grows_its_limit() -> None:
    limit = GradientLimit(SETTINGS)
    feed(limit, 0.2, 30)
    assert limit.value > 40
    assert limit.baseline == 0.2


def test_latency_past_tolerance_shrinks_the_limit_without_becoming_the_baseline() -> None:
    limit = GradientLimit(SETTINGS)
    now = feed(limit, 0.2, 30)
    grown = limit.value
    feed(limit, 1.0, 10, now)  # five times the baseline: congested
    assert 4 < limit.value < grown / 2
    assert limit.baseline < 0.25  # a long overload is not the new normal (a window straddling the change is)


def test_the_limit_halves_at_most_in_one_window() -> None:
    limit = GradientLimit(SETTINGS)
    now = feed(limit, 0.2, 30)
    before = limit.estimate
    feed(limit, 100.0, 1, now)
    # gradient floored at 0.5, smoothed: at most (1 - s) + s * 0.5 of the limit, plus the queue's share
    assert limit.estimate >= before * (1 - SETTINGS.smoothing * 0.5)


def test_bounds_hold() -> None:
    limit = GradientLimit(SETTINGS)
    now = feed(limit, 0.01, 500)
    assert limit.value == 200
    lowest = limit.value
    for _ in range(100):
        now = feed(limit, 10.0, 1, now)
        lowest = min(lowest, limit.value)
    assert lowest == 4


def test_a_static_cap_bounds_the_adaptive_limit() -> None:
    limit = GradientLimit(SETTINGS, cap=30)
    feed(limit, 0.01, 500)
    assert limit.value == 30


def test_at_its_floor_the_baseline_learns_the_latency_it_sees() -> None:
    limit = GradientLimit(SETTINGS)
    now = feed(limit, 0.2, 30)
    lowest = limit.value
    for _ in range(60):  # the tier is five times slower at any load, for good
        now = feed(limit, 1.0, 1, now)
        lowest = min(lowest, limit.value)
    assert lowest == 4
    assert limit.baseline > 0.5  # learnt at the floor: the limit recovers from it
    assert limit.value > 8


def test_an_idle_tier_does_not_grow_its_limit() -> None:
    limit = GradientLimit(SETTINGS)
    feed(limit, 0.2, 30, inflight=2)  # clients, not the tier, set the pace
    assert limit.value == 20


def test_too_few_answers_close_no_window() -> None:
    limit = GradientLimit(SETTINGS)
    for step in range(4):
        limit.observe(0.2, step * 1.0, 20)
    assert limit.windows == 0
    limit.observe(0.2, 5.0, 20)
    assert limit.windows == 1


def test_a_tier_saying_too_many_requests_backs_the_limit_off() -> None:
    limit = GradientLimit(SETTINGS)
    now = feed(limit, 0.2, 5)
    before = limit.estimate
    limit.pushed_back(now)
    assert limit.estimate == before * 0.9


def test_latency_back_to_normal_brings_the_baseline_down_fast() -> None:
    limit = GradientLimit(AdaptiveLimit(initial=20, min=4, max=200, min_samples=5, baseline_windows=10_000))
    now = feed(limit, 1.0, 5)
    feed(limit, 0.1, 50, now)
    assert limit.baseline < 0.2
