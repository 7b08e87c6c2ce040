"""State outlives a policy: what a new guard over the same registry keeps, and what it does not."""

from __future__ import annotations

import random

import pytest

from ext_proc.core.breaker import BreakerState
from ext_proc.core.clock import ManualClock
from ext_proc.core.guard import Guard, ModelGuard, Ticket
from ext_proc.core.registry import StateRegistry
from ext_proc.policy import parse_policy

REC = {":method": "POST", ":path": "/v2/models/recommender/infer"}


def policy(breaker: str = "{min_calls: 10, failure_rate: 0.5, consecutive_failures: 0, jitter: 0}",
           primary_route: str = "rec-primary", extra: str = "") -> str:  # fmt: skip
    return f"""
models:
  - name: recommender
    match: {{path_prefix: /v2/models/recommender}}
    tiers:
      - {{name: primary, route: {primary_route}}}
      - {{name: light, route: rec-light}}
    breaker: {breaker}
{extra}"""


RANKER = """
  - name: ranker
    match: {path_prefix: /v2/models/ranker}
    tiers: [{name: primary, route: ranker-v1}]
"""


def start(text: str) -> tuple[Guard, StateRegistry, ManualClock]:
    clock = ManualClock()
    registry = StateRegistry(clock, random.Random(1))
    return Guard(parse_policy(text), registry), registry, clock


def reload(registry: StateRegistry, text: str) -> Guard:
    guard = Guard(parse_policy(text), registry)
    guard.adopt()
    return guard


def serve(guard: Guard, status: int) -> Ticket:
    ticket = guard.decide(REC)
    guard.record(ticket, status, None)
    return ticket


def tier_of(ticket: Ticket) -> str:
    return ticket.decision.tier_name


def test_an_open_breaker_stays_open_across_an_unchanged_reload() -> None:
    guard, registry, clock = start(policy())
    for _ in range(10):
        serve(guard, 503)
    assert tier_of(guard.decide(REC)) == "light"
    primary = registry.get("recommender", "primary")
    before = (primary.breaker.snapshot(), dict(primary.outcomes), primary.latency.count, dict(primary.transitions))
    new = reload(registry, policy())
    assert registry.get("recommender", "primary") is primary
    assert (primary.breaker.snapshot(), dict(primary.outcomes), primary.latency.count, dict(primary.transitions)) == (
        before
    )
    assert tier_of(new.decide(REC)) == "light"
    counts = {(d.tier_name, d.reason): d.count for d in new.decisions() if d.count}
    assert counts == {("primary", "ok"): 10, ("light", "breaker_open"): 2}  # counters carried over
    clock.advance(60)
    assert tier_of(new.decide(REC)) == "primary"  # its open period and backoff were kept, not reset


def test_a_changed_threshold_takes_effect_on_the_next_decision() -> None:
    guard, registry, _ = start(policy())
    for status in [503] * 3 + [200] * 7:  # 30% failures: under 0.5
        serve(guard, status)
    assert tier_of(guard.decide(REC)) == "primary"
    new = reload(registry, policy("{min_calls: 10, failure_rate: 0.25, consecutive_failures: 0, jitter: 0}"))
    assert registry.get("recommender", "primary").breaker.state is BreakerState.OPEN
    assert tier_of(new.decide(REC)) == "light"


def test_a_new_window_size_starts_the_window_empty_but_keeps_the_state() -> None:
    guard, registry, _ = start(policy("{window_calls: 20, min_calls: 10, consecutive_failures: 0, jitter: 0}"))
    for status in [503] * 4 + [200] * 6:
        serve(guard, status)
    breaker = registry.get("recommender", "primary").breaker
    assert breaker.snapshot()["calls"] == 10
    reload(registry, policy("{window_calls: 30, min_calls: 10, consecutive_failures: 0, jitter: 0}"))
    assert registry.get("recommender", "primary").breaker is breaker
    assert breaker.snapshot()["calls"] == 0 and breaker.state is BreakerState.CLOSED


def test_a_new_route_is_a_new_upstream_so_a_fresh_breaker_with_the_same_counters() -> None:
    guard, registry, _ = start(policy())
    for _ in range(10):
        serve(guard, 503)
    primary = registry.get("recommender", "primary")
    assert primary.breaker.state is BreakerState.OPEN
    new = reload(registry, policy(primary_route="rec-primary-v2"))
    successor = registry.get("recommender", "primary")
    assert successor.breaker.snapshot()["state"] == "closed" and successor.outcomes["failure"] == 10
    assert successor.outcomes is primary.outcomes and primary.retired  # the same series
    ticket = new.decide(REC)
    assert tier_of(ticket) == "primary" and ticket.decision.route == "rec-primary-v2"


def test_while_a_new_route_is_built_the_live_guard_still_decides_on_the_old_one() -> None:
    guard, registry, _ = start(policy())
    for _ in range(10):
        serve(guard, 503)
    registry.begin()  # what a sliced reload does between decisions, before the new guard is live
    ModelGuard(parse_policy(policy(primary_route="rec-primary-v2")).models[0], registry)
    assert tier_of(guard.decide(REC)) == "light"  # the old upstream's breaker is still open
    successor = registry.get("recommender", "primary")
    for _ in range(10):
        serve(guard, 503)
    assert successor.breaker.snapshot()["state"] == "closed"  # untouched by the old route's failures


def test_removed_models_and_tiers_leave_the_registry() -> None:
    guard, registry, _ = start(policy(extra=RANKER))
    guard.decide({":method": "POST", ":path": "/v2/models/ranker/infer"})
    assert registry.get("ranker", "primary").inflight == 1
    reload(registry, policy())
    with pytest.raises(KeyError):
        registry.get("ranker", "primary")
    assert {(s.model_name, s.name) for s in registry.tiers()} == {("recommender", "primary"), ("recommender", "light")}
    assert registry.counter("ranker", "primary", "ok").value == 0  # a fresh one: the old count went with it


def test_a_stream_under_way_records_into_the_state_the_new_guard_shares() -> None:
    guard, registry, _ = start(policy())
    ticket = guard.decide(REC)
    new = reload(registry, policy("{min_calls: 5, consecutive_failures: 0, jitter: 0}"))
    guard.record(ticket, 200, None)  # finishes on the old guard
    primary = registry.get("recommender", "primary")
    assert primary.inflight == 0 and primary.outcomes["success"] == 1
    assert new.registry.get("recommender", "primary") is primary


def test_a_late_result_on_a_replaced_breaker_is_not_reported() -> None:
    moves: list[tuple[str, str]] = []
    clock = ManualClock()
    registry = StateRegistry(clock, random.Random(1), lambda state, move: moves.append((state.name, move.cause)))
    guard = Guard(parse_policy(policy("{consecutive_failures: 1, jitter: 0}")), registry)
    ticket = guard.decide(REC)
    reload(registry, policy("{consecutive_failures: 1, jitter: 0}", primary_route="elsewhere"))
    guard.record(ticket, 503, None)  # would open the old breaker
    assert moves == []
    assert registry.get("recommender", "primary").transitions == {}


def test_fewer_probes_asked_than_already_succeeded_closes_a_half_open_breaker() -> None:
    probes = "{min_calls: 10, consecutive_failures: 0, jitter: 0, open_duration: 1s, half_open_probes: HALF}"
    guard, registry, clock = start(policy(probes.replace("HALF", "3")))
    for _ in range(10):
        serve(guard, 503)
    clock.advance(2)
    for _ in range(2):
        assert tier_of(serve(guard, 200)) == "primary"  # two of three probes succeed
    breaker = registry.get("recommender", "primary").breaker
    assert breaker.snapshot()["state"] == "half_open" and breaker.snapshot()["probes_in_flight"] == 0
    new = reload(registry, policy(probes.replace("HALF", "2")))
    assert breaker.snapshot()["state"] == "closed"
    assert tier_of(new.decide(REC)) == "primary"


def test_a_retired_guard_and_a_removed_tier_are_freed_without_the_collector() -> None:
    """No reference cycles: after a reload both go by reference counting alone, which is what
    lets the server freeze live guards out of the collector without leaking retired ones."""
    import gc
    import weakref

    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        old, registry, _ = start(policy(extra=RANKER))
        serve(old, 503)
        ranker = weakref.ref(registry.get("ranker", "primary"))
        retired = weakref.ref(old)
        reload(registry, policy())
        del old
        assert retired() is None, "the retired guard is held by a reference cycle"
        assert ranker() is None, "the removed tier's state is held by a reference cycle"
    finally:
        if collecting:
            gc.enable()
