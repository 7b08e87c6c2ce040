"""A tier's servers' load signal pushes it back, and a reading under the bar ends only its own push."""

from __future__ import annotations

import random

from ext_proc.core.clock import ManualClock
from ext_proc.core.guard import Guard
from ext_proc.core.registry import StateRegistry
from ext_proc.policy import parse_policy

POLICY = """
models:
  - name: m
    match: {path_prefix: /v2/models/m}
    overload: {honoured: [critical, standard], pushback_min: 1, pushback_share: 0.1}
    tiers:
      - {name: primary, route: m-primary}
      - {name: light, route: m-light}
"""
CALL = {":method": "POST", ":path": "/v2/models/m/infer"}


def test_an_overloaded_signal_steps_non_critical_traffic_down_until_a_reading_under_the_bar() -> None:
    clock = ManualClock()
    guard = Guard(parse_policy(POLICY), StateRegistry(clock, random.Random(1)))
    state = guard.registry.get("m", "primary")
    state.signal(clock(), True, 2.0)
    assert guard.decide(CALL).decision.tier_name == "light"
    assert guard.decide({**CALL, "x-request-criticality": "critical"}).decision.tier_name == "primary"
    clock.advance(1.0)
    state.signal(clock(), False, 2.0)
    assert guard.decide(CALL).decision.tier_name == "primary"
    assert state.pushbacks == 1


def test_a_stale_push_runs_out_by_itself() -> None:
    clock = ManualClock()
    guard = Guard(parse_policy(POLICY), StateRegistry(clock, random.Random(1)))
    guard.registry.get("m", "primary").signal(clock(), True, 2.0)
    clock.advance(2.1)  # no reading since: unknown, which never holds traffic back
    assert guard.decide(CALL).decision.tier_name == "primary"


def test_a_reading_under_the_bar_leaves_a_429_push_alone() -> None:
    clock = ManualClock()
    guard = Guard(parse_policy(POLICY), StateRegistry(clock, random.Random(1)))
    state = guard.registry.get("m", "primary")
    state.signal(clock(), True, 1.0)
    guard.record(guard.decide({**CALL, "x-request-criticality": "critical"}), 429, None, retry_after=5)
    state.signal(clock(), False, 1.0)
    assert guard.decide(CALL).decision.tier_name == "light"  # the tier's own 429 still holds
