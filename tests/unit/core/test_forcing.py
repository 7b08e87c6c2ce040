"""Forced states: an operator's order in front of a tier's breaker, stepped on fake clocks."""

from __future__ import annotations

import random

import pytest

from ext_proc.core.breaker import BreakerState
from ext_proc.core.clock import ManualClock
from ext_proc.core.forcing import ForceChange, ForceMode, ForceOrder
from ext_proc.core.guard import Guard
from ext_proc.core.registry import EXPIRY, StateRegistry, UnknownTier
from ext_proc.policy import parse_policy

REC = {":method": "POST", ":path": "/v2/models/recommender/infer"}
POLICY = """
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: rec-primary}
      - {name: light, route: rec-light}
      - {name: fallback, respond: {status: 200, body: '{"items": []}'}}
    breaker: {min_calls: 4, failure_rate: 0.5, consecutive_failures: 0, jitter: 0}
"""
ONE_TIER = """
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers: [{name: primary, route: rec-primary}]
"""


class World:
    def __init__(self, text: str = POLICY) -> None:
        self.clock = ManualClock(1000.0)
        self.wall = ManualClock(1_800_000_000.0)
        self.changes: list[ForceChange] = []
        self.registry = StateRegistry(self.clock, random.Random(1), on_force=self.changes.append, wall=self.wall)
        self.guard = Guard(parse_policy(text), self.registry)

    def order(self, mode: ForceMode, until: float | None = None, caller: str = "sre@host") -> ForceOrder:
        return ForceOrder(mode, "gpu node hot", caller, self.wall.now, until)

    def force(self, tier: str, mode: ForceMode, until: float | None = None) -> ForceChange:
        return self.registry.force("recommender", tier, self.order(mode, until))

    def serve(self, status: int = 200) -> tuple[str, str]:
        ticket = self.guard.decide(REC)
        self.guard.record(ticket, status, None)
        return ticket.decision.tier_name, ticket.decision.reason

    def step(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.wall.advance(seconds)


def test_forced_open_sends_requests_to_the_next_tier_with_reason_forced() -> None:
    world = World()
    change = world.force("primary", ForceMode.FORCED_OPEN)
    assert (change.from_state, change.to_state, change.ended_by) == ("closed", "forced_open", "")
    assert world.serve() == ("light", "forced")
    assert world.registry.get("recommender", "primary").outcomes["success"] == 0
    assert world.registry.get("recommender", "light").outcomes["success"] == 1
    assert world.registry.get("recommender", "primary").state_name == "forced_open"


def test_forced_open_lower_down_answers_from_the_respond_tier_with_reason_forced() -> None:
    world = World()
    world.force("primary", ForceMode.FORCED_OPEN)
    world.force("light", ForceMode.FORCED_OPEN)
    ticket = world.guard.decide(REC)
    assert (ticket.decision.tier_name, ticket.decision.reason) == ("fallback", "forced")
    assert ticket.decision.respond is not None and ticket.done


def test_the_reason_is_why_the_first_tier_refused() -> None:
    world = World()
    for _ in range(4):
        world.serve(503)
    assert world.registry.get("recommender", "primary").breaker.state is BreakerState.OPEN
    world.force("light", ForceMode.FORCED_OPEN)
    assert world.guard.decide(REC).decision.reason == "breaker_open"  # primary's breaker refused first


def test_a_single_tier_forced_open_refuses_with_reason_forced() -> None:
    world = World(ONE_TIER)
    world.force("primary", ForceMode.FORCED_OPEN)
    ticket = world.guard.decide(REC)
    assert (ticket.decision.tier_name, ticket.decision.reason, ticket.decision.route) == ("none", "forced", None)
    assert ticket.decision.count == 1


def test_forced_closed_admits_everything_never_trips_and_shows_what_the_breaker_would_do() -> None:
    world = World()
    world.force("primary", ForceMode.FORCED_CLOSED)
    for _ in range(20):
        assert world.serve(503) == ("primary", "ok")
    state = world.registry.get("recommender", "primary")
    assert state.breaker.state is BreakerState.CLOSED
    assert state.outcomes["failure"] == 20
    snapshot = world.guard.models[0].tiers[0].snapshot()
    assert snapshot["state"] == "forced_closed"
    assert snapshot["failures"] == 20 and snapshot["failure_rate"] == 1.0
    assert snapshot["would_open"] == "failure_rate"
    assert snapshot["forced"] == world.order(ForceMode.FORCED_CLOSED).to_json()


def test_forced_closed_over_an_open_breaker_admits_at_once_with_a_fresh_window() -> None:
    world = World()
    for _ in range(4):
        world.serve(503)
    world.force("primary", ForceMode.FORCED_CLOSED)
    assert world.serve() == ("primary", "ok")
    snapshot = world.guard.models[0].tiers[0].snapshot()
    assert (snapshot["calls"], snapshot["would_open"], snapshot["breaker_state"]) == (1, None, "closed")


def test_auto_resumes_the_breaker_closed_with_a_fresh_window_and_no_backoff() -> None:
    world = World()
    world.force("primary", ForceMode.FORCED_CLOSED)
    for _ in range(10):
        world.serve(503)
    change = world.force("primary", ForceMode.AUTO)
    assert (change.from_state, change.to_state, change.ended_by) == ("forced_closed", "closed", "sre@host")
    assert change.order.mode is ForceMode.FORCED_CLOSED  # the order that ended
    state = world.registry.get("recommender", "primary")
    assert state.order is None and state.breaker.state is BreakerState.CLOSED
    assert state.breaker.snapshot()["calls"] == 0
    for _ in range(3):
        assert world.serve(503)[0] == "primary"  # three failures in a fresh window: not yet judged
    assert world.serve(503)[0] == "primary"
    assert state.breaker.snapshot()["state"] == "open"
    assert state.breaker.snapshot()["open_duration_s"] == 5.0  # the base period: no backoff kept


def test_a_result_admitted_before_a_forced_state_ended_is_not_judged() -> None:
    world = World()
    world.force("primary", ForceMode.FORCED_CLOSED)
    held = [world.guard.decide(REC) for _ in range(6)]
    world.force("primary", ForceMode.AUTO)
    for ticket in held:
        world.guard.record(ticket, 503, None)
    state = world.registry.get("recommender", "primary")
    assert state.breaker.state is BreakerState.CLOSED
    assert state.breaker.snapshot()["calls"] == 0
    assert state.inflight == 0


def test_an_expiry_returns_the_tier_to_auto_on_the_next_request() -> None:
    world = World()
    world.force("primary", ForceMode.FORCED_OPEN, until=world.wall.now + 30)
    world.step(29.9)
    assert world.serve() == ("light", "forced")
    world.step(0.1)
    assert world.serve() == ("primary", "ok")
    last = world.changes[-1]
    assert (last.from_state, last.to_state, last.ended_by) == ("forced_open", "closed", EXPIRY)
    assert world.registry.orders() == {}
    assert world.registry.get("recommender", "primary").forced_changes == {"forced_open": 1, "auto": 1}


def test_an_expiry_without_traffic_is_acted_on_by_expire_due() -> None:
    world = World()
    world.force("primary", ForceMode.FORCED_CLOSED, until=world.wall.now + 5)
    world.step(4)
    world.registry.expire_due()
    assert world.registry.get("recommender", "primary").state_name == "forced_closed"
    world.step(1)
    world.registry.expire_due()
    assert world.registry.get("recommender", "primary").state_name == "closed"
    assert world.changes[-1].ended_by == EXPIRY


def test_forced_closed_expires_on_the_request_path_too() -> None:
    world = World()
    world.force("primary", ForceMode.FORCED_CLOSED, until=world.wall.now + 1)
    for _ in range(4):
        world.serve(503)
    world.step(1)
    world.serve(503)  # judged by the breaker again, from a fresh window
    assert world.registry.get("recommender", "primary").breaker.snapshot()["calls"] == 1


def test_an_order_outlives_a_reload_and_a_tier_that_leaves_and_comes_back() -> None:
    world = World()
    world.force("primary", ForceMode.FORCED_OPEN)
    reloaded = Guard(parse_policy(POLICY.replace("rec-primary", "rec-primary-v2")), world.registry)
    reloaded.adopt()
    assert reloaded.decide(REC).decision.reason == "forced"  # a new route: a new breaker, same order
    without = Guard(parse_policy(POLICY.replace("      - {name: primary, route: rec-primary}\n", "")), world.registry)
    without.adopt()
    assert without.decide(REC).decision.tier_name == "light"
    back = Guard(parse_policy(POLICY), world.registry)
    back.adopt()
    ticket = back.decide(REC)
    assert (ticket.decision.tier_name, ticket.decision.reason) == ("light", "forced")


def test_unknown_names_are_refused_with_the_names_there_are() -> None:
    world = World()
    with pytest.raises(UnknownTier, match="no model 'ranker'; models: recommender"):
        world.registry.force("ranker", "primary", world.order(ForceMode.FORCED_OPEN))
    with pytest.raises(UnknownTier, match="no routed tier 'fallback'; its routed tiers: primary, light"):
        world.registry.force("recommender", "fallback", world.order(ForceMode.FORCED_OPEN))
    with pytest.raises(UnknownTier):
        world.registry.reset("recommender", "nope", "sre")
    assert world.changes == []


def test_restore_applies_orders_read_back_and_hands_back_those_gone() -> None:
    world = World()
    order = world.order(ForceMode.FORCED_OPEN)
    dormant = world.order(ForceMode.FORCED_CLOSED)
    changes = world.registry.restore({("recommender", "primary"): order, ("ranker", "primary"): dormant})
    assert [(c.tier, c.to_state) for c in changes] == [("primary", "forced_open")]
    assert world.serve() == ("light", "forced")
    assert world.registry.restore(world.registry.orders()) == []  # the same orders: nothing to do
    changes = world.registry.restore({})
    assert [(c.tier, c.to_state, c.ended_by) for c in changes] == [("primary", "closed", "state store")]
    assert world.serve() == ("primary", "ok")


def test_reset_closes_an_open_breaker_with_a_fresh_window() -> None:
    world = World()
    for _ in range(4):
        world.serve(503)
    world.registry.reset("recommender", "primary", "sre@host")
    breaker = world.registry.get("recommender", "primary").breaker
    assert breaker.state is BreakerState.CLOSED and breaker.snapshot()["calls"] == 0
    assert world.serve() == ("primary", "ok")


def test_every_change_is_counted_by_the_state_it_moved_to() -> None:
    world = World()
    world.force("primary", ForceMode.FORCED_OPEN)
    world.force("primary", ForceMode.FORCED_CLOSED)
    world.force("primary", ForceMode.AUTO)
    assert world.registry.get("recommender", "primary").forced_changes == {
        "forced_open": 1,
        "forced_closed": 1,
        "auto": 1,
    }
    assert [c.to_state for c in world.changes] == ["forced_open", "forced_closed", "closed"]


def test_auto_on_a_tier_that_is_not_forced_changes_nothing() -> None:
    world = World()
    for _ in range(4):
        world.serve(503)
    change = world.force("primary", ForceMode.AUTO)
    assert (change.from_state, change.to_state) == ("open", "open")
    assert world.changes == [] and world.registry.get("recommender", "primary").forced_changes == {}


def test_an_order_kept_for_a_tier_the_policy_lacks_can_be_forgotten() -> None:
    world = World()
    world.registry.restore({("ranker", "primary"): world.order(ForceMode.FORCED_OPEN)})
    with pytest.raises(UnknownTier):
        world.registry.forget("recommender", "primary", "sre")  # live, and not an order kept
    change = world.registry.forget("ranker", "primary", "sre")
    assert (change.from_state, change.to_state, change.ended_by) == ("forced_open", "auto", "sre")
    assert world.registry.orders() == {} and world.changes == [change]
    with pytest.raises(UnknownTier):
        world.registry.forget("ranker", "primary", "sre")


def test_forced_closed_keeps_recording_after_a_reset_and_a_tighter_reload_does_not_trip_it() -> None:
    world = World()
    world.force("primary", ForceMode.FORCED_CLOSED)
    world.registry.reset("recommender", "primary", "sre")
    for _ in range(3):
        world.serve(503)
    assert world.registry.get("recommender", "primary").breaker.figures().calls == 3
    tighter = Guard(parse_policy(POLICY.replace("min_calls: 4", "min_calls: 2")), world.registry)
    tighter.adopt()
    state = world.registry.get("recommender", "primary")
    assert state.breaker.state is BreakerState.CLOSED and state.transitions == {}
    assert tighter.models[0].tiers[0].snapshot()["would_open"] == "failure_rate"
    assert tighter.decide(REC).decision.tier_name == "primary"


def test_an_unknown_name_lists_at_most_twenty_names() -> None:
    models = "".join(
        f"  - {{name: m{i}, match: {{path_prefix: /m{i}}}, tiers: [{{name: t, route: r}}]}}\n" for i in range(500)
    )
    world = World("models:\n" + models)
    with pytest.raises(UnknownTier) as refused:
        world.registry.force("x" * 10_000, "t", world.order(ForceMode.FORCED_OPEN))
    assert str(refused.value).endswith("m19 and 480 more") and len(str(refused.value)) < 400


def test_an_order_kept_for_an_absent_tier_expires_too_and_says_so() -> None:
    world = World()
    order = world.order(ForceMode.FORCED_OPEN, until=world.wall.now + 5)
    world.registry.restore({("ranker", "primary"): order})
    world.step(5)
    world.registry.expire_due()
    assert world.registry.orders() == {}
    assert [(c.model, c.ended_by, c.order) for c in world.changes] == [("ranker", EXPIRY, order)]
