"""Upstream pushback on a fake clock: a tier answering 429 above its share is overloaded, not
broken: its requests but the critical ones step down for the advertised time."""

from __future__ import annotations

import random

from ext_proc.core.clock import ManualClock
from ext_proc.core.guard import Guard, Ticket
from ext_proc.core.registry import StateRegistry
from ext_proc.policy import parse_policy

POLICY = """
models:
  - name: rec
    match: {path_prefix: /v2/models/rec}
    overload: {honoured: [critical, standard, sheddable], pushback_share: 0.5, pushback_min: 3, max_pushback: 10s}
    tiers:
      - {name: primary, route: rec-primary}
      - {name: light, route: rec-light}
    breaker: {min_calls: 2, consecutive_failures: 2}
  - name: solo
    match: {path_prefix: /v2/models/solo}
    tiers:
      - {name: primary, route: solo-primary}
"""


def make() -> tuple[Guard, ManualClock]:
    clock = ManualClock()
    return Guard(parse_policy(POLICY), StateRegistry(clock, random.Random(1))), clock


def call(model: str = "rec", criticality: str | None = None) -> dict[str, str]:
    headers = {":method": "POST", ":path": f"/v2/models/{model}/infer"}
    if criticality is not None:
        headers["x-request-criticality"] = criticality
    return headers


def where(ticket: Ticket) -> tuple[str, str]:
    return ticket.decision.tier_name, ticket.decision.reason


def answer(guard: Guard, status: int, retry_after: float | None = None, model: str = "rec") -> None:
    guard.record(guard.decide(call(model)), status, None, retry_after=retry_after)


def test_429s_above_the_share_step_standard_traffic_down_for_the_advertised_time() -> None:
    guard, clock = make()
    answer(guard, 200)
    for _ in range(3):
        answer(guard, 429, retry_after=4)
    state = guard.registry.get("rec", "primary")
    assert state.breaker.state.value == "closed"  # overloaded, not broken
    assert where(guard.decide(call())) == ("light", "overload")
    assert where(guard.decide(call(criticality="sheddable"))) == ("light", "overload")
    assert where(guard.decide(call(criticality="critical"))) == ("primary", "ok")
    clock.advance(3.9)
    assert where(guard.decide(call())) == ("light", "overload")
    clock.advance(0.2)
    assert where(guard.decide(call())) == ("primary", "ok")
    assert state.pushbacks == 1


def test_a_few_429s_below_the_share_or_the_minimum_change_nothing() -> None:
    guard, _ = make()
    for _ in range(4):
        answer(guard, 200)
    for _ in range(3):
        answer(guard, 429, retry_after=4)  # 3 of 7: under half
    assert where(guard.decide(call())) == ("primary", "ok")
    fresh, _ = make()
    for _ in range(2):
        answer(fresh, 429)  # every answer, but fewer than pushback_min
    assert where(fresh.decide(call())) == ("primary", "ok")


def test_the_wait_is_capped_and_defaults_to_a_second() -> None:
    guard, clock = make()
    for _ in range(3):
        answer(guard, 429, retry_after=3600)
    state = guard.registry.get("rec", "primary")
    assert state.pushed_until == clock() + 10.0
    other, clock = make()
    for _ in range(3):
        answer(other, 429)
    assert other.registry.get("rec", "primary").pushed_until == clock() + 1.0


def test_a_last_tier_pushed_back_answers_429_to_standard_requests() -> None:
    guard, _ = make()
    for _ in range(5):
        answer(guard, 429, model="solo")
    refused = guard.decide(call("solo"))
    assert where(refused) == ("none", "overload")
    assert refused.decision.respond is not None and refused.decision.respond.status == 429


def test_the_state_shows_the_pushback() -> None:
    guard, clock = make()
    for _ in range(3):
        answer(guard, 429, retry_after=2)
    clock.advance(0.5)
    primary = guard.snapshot()["models"]["rec"]["tiers"]["primary"]  # type: ignore[index]
    assert primary["pushed_back_s"] == 1.5 and primary["pushbacks"] == 1


DEFAULTS = """
models:
  - name: rec
    match: {path_prefix: /v2/models/rec}
    tiers:
      - {name: primary, route: rec-primary}
      - {name: light, route: rec-light}
"""


def test_by_default_one_clients_rate_limit_does_not_push_the_tier_back_for_everyone() -> None:
    """A server answering 429 to one client over its own quota (a third of the answers here) is not
    overloaded: only when most answers say so does the tier step everyone down."""
    clock = ManualClock()
    guard = Guard(parse_policy(DEFAULTS), StateRegistry(clock, random.Random(1)))
    for index in range(60):
        answer(guard, 429 if index % 3 == 0 else 200, retry_after=30)
    assert where(guard.decide(call())) == ("primary", "ok")
    for _ in range(22):  # now half the answers are 429 (from the 20th on): the tier itself is overloaded
        answer(guard, 429, retry_after=2)
    assert where(guard.decide(call())) == ("light", "overload")
