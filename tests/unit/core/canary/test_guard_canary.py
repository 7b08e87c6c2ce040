"""The canary in the guard: arms, the canary route's own breaker, the ladder, states, orders and
reloads, stepped on fake clocks."""

from __future__ import annotations

import random

import pytest

from ext_proc.core.canary.book import RouteChanged, UnknownCanary
from ext_proc.core.canary.run import JUDGE, Action, CanaryChange, CanaryOrder
from ext_proc.core.clock import ManualClock
from ext_proc.core.forcing import ForceMode, ForceOrder
from ext_proc.core.guard import Guard
from ext_proc.core.registry import StateRegistry
from ext_proc.policy import BUCKETS, parse_policy

PATH = "/v2/models/recommender/infer"
POLICY = """
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: rec-v1}
      - {name: light, route: rec-light}
      - {name: fallback, respond: {status: 200, body: '{}'}}
    breaker: {min_calls: 10, failure_rate: 0.5, consecutive_failures: 0, jitter: 0}
    canary:
      route: rec-v2
      weight: 10%
      sticky_header: x-user-id
      exclude: {header: x-request-criticality, values: [critical]}
      guardrails: {min_calls: 20}
      RAMP
"""


def state(world: World) -> str:
    return world.run.state.value


class World:
    def __init__(self, ramp: str = "", rng_seed: int = 1) -> None:
        self.clock = ManualClock(1000.0)
        self.wall = ManualClock(1_800_000_000.0)
        self.changes: list[CanaryChange] = []
        self.registry = StateRegistry(
            self.clock, random.Random(rng_seed), wall=self.wall, on_canary=self.changes.append
        )
        self.text = POLICY.replace("RAMP", ramp)
        self.guard = Guard(parse_policy(self.text), self.registry)
        self.guard.adopt()
        self.run = self.registry.canaries.find("recommender")

    def headers(self, user: str | None, more: dict[str, str] | None = None) -> dict[str, str]:
        found = {":method": "POST", ":path": PATH, **(more or {})}
        if user is not None:
            found["x-user-id"] = user
        return found

    def serve(
        self, user: str | None, status: int = 200, latency: float = 0.02, more: dict[str, str] | None = None
    ) -> tuple[str, str, str | None]:
        ticket = self.guard.decide(self.headers(user, more))
        self.clock.advance(latency)
        self.wall.advance(latency)
        self.guard.record(ticket, status, None)
        decision = ticket.decision
        return decision.route or "", decision.reason, decision.arm

    def users(self, arm: bool, count: int) -> list[str]:
        found = [f"user-{i}" for i in range(5000) if (self.run.buckets.of(f"user-{i}") < self.run.weight) == arm]
        return found[:count]


def test_a_key_in_the_canary_share_goes_to_the_canary_route_as_arm_canary() -> None:
    world = World()
    canary_user, stable_user = world.users(True, 1)[0], world.users(False, 1)[0]
    assert world.serve(canary_user) == ("rec-v2", "canary", "canary")
    assert world.serve(stable_user) == ("rec-v1", "ok", "stable")
    assert world.serve(canary_user) == ("rec-v2", "canary", "canary")  # sticky
    assert world.run.evidence.canary.calls == 2 and world.run.evidence.stable.calls == 1


def test_the_request_id_is_the_key_without_the_sticky_header_and_a_draw_without_either() -> None:
    world = World()
    by_id = {
        world.guard.decide({":method": "POST", ":path": PATH, "x-request-id": "r-17"}).decision.arm for _ in range(20)
    }
    assert len(by_id) == 1
    drawn = [world.guard.decide({":method": "POST", ":path": PATH}).decision.arm for _ in range(2000)]
    assert 120 < drawn.count("canary") < 280  # 10% of 2000, per request


def test_excluded_requests_stay_stable_and_are_no_evidence() -> None:
    world = World()
    canary_user = world.users(True, 1)[0]
    assert world.serve(canary_user, more={"x-request-criticality": "critical"}) == ("rec-v1", "ok", "stable")
    assert world.run.evidence.stable.calls == 0 and world.run.evidence.canary.calls == 0
    assert world.serve(canary_user, more={"x-request-criticality": "standard"})[0] == "rec-v2"


def test_the_header_names_the_guard_reads_include_the_canary_keys() -> None:
    assert {"x-user-id", "x-request-id", "x-request-criticality"} <= World().guard.header_names


def test_a_failing_canary_is_aborted_and_every_key_goes_back_to_stable_durably_ordered() -> None:
    world = World()
    canary_users = world.users(True, 150)
    stable_users = world.users(False, 10)
    for round_ in range(150):  # a third of canary calls fail: under the breaker's 50%, over the guardrails
        for user in stable_users:
            world.serve(user)
        world.serve(canary_users[round_], status=503 if round_ % 3 == 0 else 200)
        if state(world) == "aborted":
            break
    assert state(world) == "aborted"
    assert world.run.evidence.canary.failures <= 20
    assert all(world.serve(user)[2] == "stable" and world.serve(user)[0] == "rec-v1" for user in canary_users)
    aborted = world.changes[-1]
    assert aborted.to_state == "aborted" and aborted.caller == JUDGE and aborted.order is not None
    assert aborted.evidence["arms"]["canary"]["failures"] == world.run.evidence.canary.failures  # type: ignore[index]
    assert world.registry.canaries.orders()["recommender"].action is Action.ABORT


def test_a_stream_that_ends_without_a_response_is_released_not_judged() -> None:
    world = World()
    ticket = world.guard.decide(world.headers(world.users(True, 1)[0]))
    world.guard.release(ticket)
    assert world.run.evidence.canary.calls == 0
    assert world.registry.get("recommender", "primary@canary").inflight == 0


def test_the_canary_route_has_its_own_breaker_and_canary_keys_fall_back_to_stable_when_it_opens() -> None:
    world = World()
    world.registry.force("recommender", "primary@canary", ForceOrder(ForceMode.FORCED_OPEN, "", "t", 0.0))
    user = world.users(True, 1)[0]
    assert world.serve(user) == ("rec-v1", "ok", "stable")
    assert world.run.evidence.stable.calls == 1


def test_when_the_first_tier_refuses_canary_keys_take_the_ladder_as_before() -> None:
    world = World()
    world.registry.force("recommender", "primary", ForceOrder(ForceMode.FORCED_OPEN, "", "t", 0.0))
    assert world.serve(world.users(True, 1)[0])[:2] == ("rec-light", "forced")


def test_a_half_open_probe_of_the_first_tier_tests_the_stable_route_even_for_a_canary_key() -> None:
    world = World()
    stable = world.users(False, 30)
    for user in stable[:12]:
        world.serve(user, status=503)
    assert world.registry.get("recommender", "primary").breaker.state.value == "open"
    world.clock.advance(10)
    assert world.serve(world.users(True, 1)[0]) == ("rec-v1", "half_open_probe", "stable")


def test_the_ramp_raises_the_weight_only_after_min_calls_and_completes_at_max() -> None:
    world = World(ramp="ramp: {step: 10%, every: 1m, max: 30%}")
    assert state(world) == "ramping" and world.run.weight == 1000
    world.clock.advance(61)
    world.serve("nobody-in-particular")
    assert world.run.weight == 1000  # no canary calls yet: not shown healthy
    for user in world.users(True, 25):
        world.serve(user)
    world.clock.advance(1)
    world.serve("x")
    assert world.run.weight == 2000 and state(world) == "ramping"
    in_at_10 = world.users(True, 100)
    world.clock.advance(61)
    world.serve("x")
    assert world.run.weight == 3000 and state(world) == "complete"
    assert all(world.run.arm(world.headers(user), world.clock()) for user in in_at_10)  # monotone
    assert [change.to_weight for change in world.changes] == [0.2, 0.3]


def test_operators_abort_promote_set_the_weight_and_resume_with_fresh_evidence() -> None:
    world = World(ramp="ramp: {step: 10%, every: 1m, max: 30%}")
    book = world.registry.canaries
    inside = world.users(True, 5)
    for user in inside:
        world.serve(user)
    order = CanaryOrder(Action.WEIGHT, "rec-v2", "hold", "sre", world.wall(), weight=2500)
    book.give("recommender", order, "sre")
    assert state(world) == "active" and world.run.weight == 2500
    outside = world.users(False, 1)[0]
    book.give("recommender", CanaryOrder(Action.PROMOTE, "rec-v2", "", "sre", world.wall()), "sre")
    assert world.run.weight == BUCKETS and world.serve(outside)[2] == "canary"
    book.give("recommender", CanaryOrder(Action.ABORT, "rec-v2", "bad", "sre", world.wall()), "sre")
    assert state(world) == "aborted" and world.serve(inside[0])[2] == "stable"
    evidence = world.run.evidence
    book.give("recommender", None, "sre")
    assert state(world) == "ramping" and world.run.weight == 1000
    assert world.run.evidence is not evidence and world.run.evidence.canary.calls == 0
    with pytest.raises(UnknownCanary, match="models with a canary: recommender"):
        book.give("ranker", None, "sre")


def test_a_late_result_from_before_a_resume_does_not_land_in_the_fresh_evidence() -> None:
    world = World()
    ticket = world.guard.decide(world.headers(world.users(True, 1)[0]))
    world.registry.canaries.give("recommender", None, "sre")
    world.guard.record(ticket, 503, None)
    assert world.run.evidence.canary.calls == 0


def test_an_order_outlives_a_restart_for_its_route_only() -> None:
    first = World()
    first.registry.canaries.give("recommender", CanaryOrder(Action.ABORT, "rec-v2", "bad", "sre", 1.0), "sre")
    kept = first.registry.canaries.orders()
    second = World()
    changes = second.registry.canaries.restore(kept)
    assert state(second) == "aborted" and changes[0].to_state == "aborted"
    third = World()
    third.registry.canaries.restore({"recommender": CanaryOrder(Action.ABORT, "rec-v1-old", "", "sre", 1.0)})
    assert state(third) == "active"  # an order for another version does not hold this one


def test_a_reload_keeps_the_run_for_the_same_route_and_starts_afresh_for_a_new_one() -> None:
    world = World()
    world.serve(world.users(True, 1)[0])
    run = world.run
    same = Guard(parse_policy(world.text.replace("weight: 10%", "weight: 20%")), world.registry)
    same.adopt()
    assert world.registry.canaries.find("recommender") is run and run.weight == 2000 and run.evidence.canary.calls == 1
    other = Guard(parse_policy(world.text.replace("rec-v2", "rec-v3")), world.registry)
    other.adopt()
    fresh = world.registry.canaries.find("recommender")
    assert fresh is not run and fresh.evidence.canary.calls == 0
    gone = Guard(parse_policy(world.text.split("    canary:")[0]), world.registry)
    gone.adopt()
    with pytest.raises(UnknownCanary):
        world.registry.canaries.find("recommender")


def test_metrics_states_and_snapshots_include_the_canary_route() -> None:
    world = World()
    world.serve(world.users(True, 1)[0], status=503)
    names = [state.name for state in world.guard.states()]
    assert "primary@canary" in names
    canary = world.guard.snapshot()["models"]["recommender"]["canary"]  # type: ignore[index]
    assert canary["state"] == "active" and canary["weight"] == 0.1 and canary["route"] == "rec-v2"
    assert canary["arms"]["canary"]["failures"] == 1
    assert canary["breaker"]["tier"] == "primary@canary"
    assert any(decision.reason == "canary" and decision.count == 1 for decision in world.guard.decisions())


def test_a_late_result_of_a_replaced_version_neither_judges_nor_overrides_the_new_one() -> None:
    world = World()
    in_flight = [world.guard.decide(world.headers(user)) for user in world.users(True, 30)]
    new = Guard(parse_policy(world.text.replace("rec-v2", "rec-v3")), world.registry)
    new.adopt()
    v3 = world.registry.canaries.find("recommender")
    world.registry.canaries.give("recommender", CanaryOrder(Action.WEIGHT, "rec-v3", "", "sre", 1.0, 300), "sre")
    for ticket in in_flight:
        world.guard.record(ticket, 503, None)  # the old guard's v2 streams end badly
    assert world.run.state.value == "active" and world.run.evidence.canary.calls == 0
    assert v3.weight == 300 and world.registry.canaries.orders()["recommender"].route == "rec-v3"
    assert not [change for change in world.changes if change.verdict]


def test_an_order_for_a_route_the_canary_no_longer_has_is_refused() -> None:
    world = World()
    Guard(parse_policy(world.text.replace("rec-v2", "rec-v3")), world.registry).adopt()
    with pytest.raises(RouteChanged, match="now 'rec-v3', not 'rec-v2'"):
        world.registry.canaries.give("recommender", CanaryOrder(Action.ABORT, "rec-v2", "", "sre", 1.0), "sre")
    assert state(World()) == "active"


def test_the_canary_breaker_opening_aborts_the_canary_a_forced_open_one_does_not() -> None:
    world = World()
    canary_users = world.users(True, 40)
    world.registry.force("recommender", "primary@canary", ForceOrder(ForceMode.FORCED_OPEN, "", "t", 0.0))
    world.serve(canary_users[0])
    assert state(world) == "active"
    world.registry.force("recommender", "primary@canary", ForceOrder(ForceMode.AUTO, "", "t", 0.0))
    for user in canary_users[:12]:  # min_calls 10 at 50%: the canary's own breaker opens
        world.serve(user, status=503)
    world.serve(canary_users[13])
    assert state(world) == "aborted"
    assert world.changes[-1].cause == "canary breaker open" and world.changes[-1].verdict


def test_promoting_an_aborted_canary_starts_from_fresh_evidence() -> None:
    world = World()
    book = world.registry.canaries
    for user in world.users(True, 5):
        world.serve(user, status=503)
    book.give("recommender", CanaryOrder(Action.ABORT, "rec-v2", "", "sre", 1.0), "sre")
    book.give("recommender", CanaryOrder(Action.PROMOTE, "rec-v2", "", "sre", 1.0), "sre")
    assert state(world) == "promoted" and world.run.evidence.canary.calls == 0


def test_resume_drops_an_order_kept_for_a_canary_the_policy_no_longer_has() -> None:
    world = World()
    book = world.registry.canaries
    book.give("recommender", CanaryOrder(Action.ABORT, "rec-v2", "", "sre", 1.0), "sre")
    Guard(parse_policy(world.text.split("    canary:")[0]), world.registry).adopt()
    change = book.give("recommender", None, "sre")
    assert (change.from_state, change.to_state) == ("aborted", "none") and not book.orders()
    Guard(parse_policy(world.text), world.registry).adopt()
    assert book.find("recommender").state.value == "active"


def test_the_canary_breaker_opening_aborts_only_a_canary_failing_more_than_it_may() -> None:
    world = World()
    stable, canary = world.users(False, 200), world.users(True, 40)
    for user in stable[:100]:
        world.serve(user, status=503 if user.endswith("7") else 200)  # stable fails ~10% too
    for index, user in enumerate(canary[:12]):  # 6 of 12 failing: opens the breaker (min_calls 10, 50%)
        world.serve(user, status=503 if index % 2 else 200)
    assert world.registry.get("recommender", "primary@canary").breaker.state.value == "open"
    # 50% failing against at most 10% allowed: aborted by the breaker's opening
    assert state(world) == "aborted" and world.changes[-1].cause == "canary breaker open"
    promoted = World()
    promoted.registry.canaries.give("recommender", CanaryOrder(Action.PROMOTE, "rec-v2", "", "sre", 1.0), "sre")
    for user in promoted.users(True, 12):
        promoted.serve(user, status=503)
    assert state(promoted) == "promoted"  # an operator's order stands over the breaker's verdict


def test_a_new_route_is_staged_the_live_run_judges_until_the_new_guard_goes_live() -> None:
    world = World()
    new = Guard(parse_policy(world.text.replace("rec-v2", "rec-v3")), world.registry)
    assert world.registry.canaries.find("recommender") is world.run and not world.run.retired
    for user in world.users(True, 3):
        world.serve(user)
    assert world.run.evidence.canary.calls == 3
    new.adopt()
    assert world.run.retired and world.registry.canaries.find("recommender").route == "rec-v3"
