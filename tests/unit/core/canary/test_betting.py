"""The anytime-valid tests: their error rate under continuous monitoring, and their power."""

from __future__ import annotations

import random

from ext_proc.core.canary.betting import BettingTest, upper_bound


def _rejections(rate: float, allowed: float, alpha: float, seeds: int, calls: int) -> int:
    found = 0
    for seed in range(seeds):
        rng = random.Random(seed)
        test = BettingTest(alpha)
        for _ in range(calls):
            test.observe(rng.random() < rate, allowed)
            if test.rejected:  # looked at after every call
                found += 1
                break
    return found


def test_a_true_null_at_its_boundary_is_rejected_at_most_alpha_of_the_time_though_checked_after_every_call() -> None:
    # 400 runs of 2,000 calls at exactly the allowed rate, alpha 0.05: at most ~20 expected
    assert _rejections(0.10, 0.10, 0.05, seeds=400, calls=2000) <= 30


def test_a_rate_well_under_the_allowed_one_bets_nothing_and_never_rejects() -> None:
    assert _rejections(0.01, 0.06, 0.0025, seeds=50, calls=5000) == 0


def test_a_rate_well_over_the_allowed_one_is_rejected_within_a_few_dozen_calls() -> None:
    for seed in range(20):
        rng = random.Random(seed)
        test = BettingTest(0.0025)
        calls = 0
        while not test.rejected:
            test.observe(rng.random() < 0.30, 0.06)
            calls += 1
            assert calls < 150
    assert test.wealth >= 1 / 0.0025


def test_a_regression_after_a_long_healthy_run_is_still_caught_quickly() -> None:
    rng = random.Random(3)
    test = BettingTest(0.0025)
    for _ in range(10_000):
        test.observe(rng.random() < 0.01, 0.06)
    assert not test.rejected
    calls = 0
    while not test.rejected:
        test.observe(rng.random() < 0.40, 0.06)
        calls += 1
    assert calls < 100


def test_the_upper_bound_covers_the_true_rate_at_every_size_at_once() -> None:
    misses = 0
    for seed in range(200):
        rng = random.Random(seed)
        hits = 0
        for calls in range(1, 3001):
            hits += rng.random() < 0.02
            if calls % 50 == 0 and upper_bound(hits, calls, 0.05) < 0.02:
                misses += 1
                break
    assert misses <= 10 + 6  # alpha 0.05 of 200 runs, plus sampling slack


def test_the_upper_bound_tightens_with_calls_and_is_1_without_any() -> None:
    assert upper_bound(0, 0, 0.01) == 1.0
    bounds = [upper_bound(calls // 100, calls, 0.01) for calls in (100, 1000, 10_000, 100_000)]
    assert bounds == sorted(bounds, reverse=True)
    assert 0.01 < bounds[-1] < 0.012
    assert upper_bound(0, 1000, 0.01) < 0.01
