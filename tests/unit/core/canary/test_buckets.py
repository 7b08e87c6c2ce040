"""Sticky, monotone assignment of keys to the canary's buckets."""

from __future__ import annotations

import math
import random

from ext_proc.core.canary.buckets import MAX_KEY_BYTES, Buckets
from ext_proc.policy import BUCKETS

KEYS = [f"user-{index}" for index in range(100_000)]


def _in_canary(buckets: Buckets, weight: int) -> set[str]:
    return {key for key in KEYS if buckets.of(key) < weight}


def test_the_share_of_keys_in_the_canary_is_within_binomial_bounds_over_100000_keys() -> None:
    buckets = Buckets("recommender", "rec-v2", random.Random(1))
    for percent in (1, 5, 10, 50):
        weight = percent * BUCKETS // 100
        share = percent / 100
        expected, spread = len(KEYS) * share, math.sqrt(len(KEYS) * share * (1 - share))
        found = len(_in_canary(buckets, weight))
        assert abs(found - expected) < 5 * spread, (percent, found, expected)


def test_buckets_are_spread_evenly_over_all_10000() -> None:
    buckets = Buckets("recommender", "rec-v2", random.Random(1))
    counts = [0] * 10
    for key in KEYS:
        counts[buckets.of(key) * 10 // BUCKETS] += 1
    chi_square = sum((count - len(KEYS) / 10) ** 2 / (len(KEYS) / 10) for count in counts)
    assert chi_square < 30  # 9 degrees of freedom: p < 0.0005 beyond 30


def test_a_key_gets_the_same_bucket_every_time_and_in_every_process() -> None:
    first = Buckets("recommender", "rec-v2", random.Random(1))
    second = Buckets("recommender", "rec-v2", random.Random(99))  # another process, another seed
    assert all(first.of(key) == second.of(key) == first.of(key) for key in KEYS[:2000])


def test_a_key_in_the_canary_at_5_percent_stays_in_it_at_10_percent() -> None:
    buckets = Buckets("recommender", "rec-v2", random.Random(1))
    at_5, at_10 = _in_canary(buckets, 500), _in_canary(buckets, 1000)
    assert at_5 < at_10
    assert len(at_10) > 1.7 * len(at_5)


def test_a_new_version_or_another_model_draws_another_sample_of_keys() -> None:
    v2 = _in_canary(Buckets("recommender", "rec-v2", random.Random(1)), 1000)
    v3 = _in_canary(Buckets("recommender", "rec-v3", random.Random(1)), 1000)
    other = _in_canary(Buckets("ranker", "rec-v2", random.Random(1)), 1000)
    # independent 10% samples overlap on about 1% of keys, not on all of them
    assert len(v2 & v3) < 0.2 * len(v2)
    assert len(v2 & other) < 0.2 * len(v2)


def test_a_request_without_a_key_gets_a_draw_of_its_own() -> None:
    buckets = Buckets("recommender", "rec-v2", random.Random(7))
    draws = [buckets.of(None) for _ in range(2000)]
    assert len(set(draws)) > 1500
    assert abs(sum(draw < 1000 for draw in draws) - 200) < 5 * math.sqrt(2000 * 0.1 * 0.9)


def test_only_the_first_kilobyte_of_a_huge_key_is_hashed() -> None:
    buckets = Buckets("recommender", "rec-v2", random.Random(1))
    prefix = "k" * MAX_KEY_BYTES
    assert buckets.of(prefix + "a" * 60_000) == buckets.of(prefix + "b")
    assert buckets.of("\udcff not utf-8") == buckets.of("\udcff not utf-8")  # surrogate-escaped bytes hash
