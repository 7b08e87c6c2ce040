"""The slow-call threshold: fixed, or learnt from the tier's own successes and frozen against faults."""

from __future__ import annotations

import random

import pytest

from ext_proc.core.clock import ManualClock
from ext_proc.core.guard import Guard
from ext_proc.core.registry import StateRegistry
from ext_proc.core.slowness import SlowThreshold
from ext_proc.policy import AutoSlow, parse_policy

AUTO = AutoSlow(initial=10.0, factor=3.0, quantile=0.99, floor=0.05, ceiling=60.0, calls=1000, min_calls=200)


def feed(threshold: SlowThreshold, latencies: list[float]) -> None:
    for latency in latencies:
        threshold.learn(latency)


def healthy(count: int, median: float = 0.2, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(0, 0.25) * median for _ in range(count)]


def test_a_fixed_threshold_learns_nothing() -> None:
    fixed = SlowThreshold(0.5)
    assert not fixed.learns and not fixed.refresh()
    assert fixed.snapshot() == {"slow_call_duration_s": 0.5}


def test_the_threshold_is_the_initial_one_until_enough_calls_then_factor_times_p99() -> None:
    learnt = SlowThreshold(AUTO.initial, AUTO)
    feed(learnt, healthy(199))
    assert learnt.value == 10.0
    calls = healthy(1000, seed=2)
    feed(learnt, calls)
    p99 = sorted(calls)[989]
    assert learnt.value == pytest.approx(3 * p99, rel=0.1)
    shown = learnt.snapshot()["slow_call_auto"]
    assert isinstance(shown, dict) and shown["learnt_calls"] == 1199


def test_a_fault_does_not_become_the_new_normal() -> None:
    learnt = SlowThreshold(AUTO.initial, AUTO)
    feed(learnt, healthy(1000))
    before = learnt.value
    feed(learnt, [5.0] * 5000)  # every call past the threshold: slow, never learnt
    assert learnt.value == before


def test_a_model_slower_for_good_moves_the_threshold_up_step_by_step() -> None:
    learnt = SlowThreshold(AUTO.initial, AUTO)
    feed(learnt, healthy(1000))
    first = learnt.value
    feed(learnt, healthy(3000, median=0.35, seed=3))  # 1.75 x slower: still under the threshold
    assert learnt.value > first * 1.5


def test_floor_and_ceiling_bound_it() -> None:
    fast = SlowThreshold(1.0, AutoSlow(floor=0.1, min_calls=10, calls=100))
    feed(fast, [0.001] * 200)
    assert fast.value == 0.1
    capped = SlowThreshold(1.0, AutoSlow(ceiling=2.0, factor=100.0, min_calls=10, calls=100))
    feed(capped, [0.9] * 200)
    assert capped.value == 2.0


POLICY = """
models:
  - name: m
    match: {path_prefix: /v2/models/m}
    tiers: [{name: primary, route: m-primary}, {name: light, route: m-light}]
    breaker: {slow_call_duration: auto, slow_call_auto: {initial: 5s, min_calls: 50, calls: 200},
              min_calls: 10, slow_call_rate: 0.5, consecutive_failures: 0, failure_rate: 0.5,
              open_duration: 1s, jitter: 0}
"""
CALL = {":method": "POST", ":path": "/v2/models/m/infer"}


def serve(guard: Guard, clock: ManualClock, latency: float, status: int = 200) -> None:
    ticket = guard.decide(CALL)
    clock.advance(latency)
    guard.record(ticket, status, None)


def test_a_tier_learns_its_threshold_and_then_judges_by_it() -> None:
    clock = ManualClock()
    guard = Guard(parse_policy(POLICY), StateRegistry(clock, random.Random(1)))
    for latency in healthy(300):
        serve(guard, clock, latency)
    breaker = guard.registry.get("m", "primary").breaker
    assert 0.5 < breaker.slow.value < 1.2  # about 3 x p99 of ~0.2 s calls, where it was 5 s
    shown = guard.snapshot()["models"]["m"]["tiers"]["primary"]  # type: ignore[index]
    assert shown["slow_call_duration_s"] == round(breaker.slow.value, 6)
    tickets = [guard.decide(CALL) for _ in range(60)]  # most of the 10 s window
    clock.advance(2.0)
    for ticket in tickets:  # slow now, where 5 s was the bar: the breaker opens on slow calls
        guard.record(ticket, 200, None)
    assert breaker.state.value == "open"
    learnt = breaker.slow.learnt
    serve(guard, clock, 0.1)  # served by light meanwhile; the primary learns nothing while open
    assert breaker.slow.learnt == learnt
