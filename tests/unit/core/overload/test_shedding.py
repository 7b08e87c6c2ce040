"""The shedding order over real limits and breakers, on a fake clock (README, "Shedding")."""

from __future__ import annotations

import random

from ext_proc.core import reasons
from ext_proc.core.clock import ManualClock
from ext_proc.core.guard import Guard, Ticket
from ext_proc.core.registry import StateRegistry
from ext_proc.policy import parse_policy

POLICY = """
models:
  - name: rec
    match: {path_prefix: /v2/models/rec}
    overload: {honoured: [critical, standard, sheddable], sheddable_share: 0.5, critical_share: 1.5,
               retry_after: 3}
    tiers:
      - {name: primary, route: rec-primary, limit: {max_inflight: 4}, deadline: 250ms}
      - {name: light, route: rec-light, limit: {max_inflight: 2}}
      - name: default
        respond: {status: 200, body: '{"items": []}'}
  - name: rank
    match: {path_prefix: /v2/models/rank}
    overload: {honoured: [critical, standard, sheddable]}
    tiers:
      - {name: primary, route: rank-primary, limit: {max_inflight: 2}}
  - name: plain
    match: {path_prefix: /v2/models/plain}
    tiers:
      - {name: primary, route: plain-primary}
"""


def request(model: str, criticality: str | None = None) -> dict[str, str]:
    headers = {":method": "POST", ":path": f"/v2/models/{model}/infer"}
    if criticality is not None:
        headers["x-request-criticality"] = criticality
    return headers


def make(policy: str = POLICY) -> tuple[Guard, ManualClock]:
    clock = ManualClock()
    return Guard(parse_policy(policy), StateRegistry(clock, random.Random(1))), clock


def where(ticket: Ticket) -> tuple[str, str]:
    return ticket.decision.tier_name, ticket.decision.reason


def take(guard: Guard, count: int, model: str = "rec", criticality: str | None = None) -> list[Ticket]:
    return [guard.decide(request(model, criticality)) for _ in range(count)]


def limiter_inflight(guard: Guard, model: str, tier: str) -> int:
    limiter = guard.registry.get(model, tier).limiter
    assert limiter is not None
    return limiter.inflight


def test_standard_requests_step_down_the_ladder_as_each_tier_fills() -> None:
    guard, _ = make()
    tickets = take(guard, 7)
    assert [where(t) for t in tickets] == [("primary", "ok")] * 4 + [("light", "overload")] * 2 + [
        ("default", "overload")
    ]
    assert tickets[4].decision.degraded and tickets[4].decision.holds_retries
    assert not tickets[0].decision.holds_retries


def test_without_a_tier_to_step_down_to_standard_requests_get_429() -> None:
    guard, _ = make()
    take(guard, 2, "rank")
    refused = guard.decide(request("rank"))
    decision = refused.decision
    assert (decision.tier_name, decision.reason) == ("none", "overload")
    assert decision.respond is not None and decision.respond.status == 429 and decision.route is None
    assert refused.done


def test_sheddable_requests_are_shed_at_once_before_standard_ones_step_down() -> None:
    guard, _ = make()
    assert [where(t) for t in take(guard, 2, criticality="sheddable")] == [("primary", "ok")] * 2
    shed = guard.decide(request("rec", "sheddable"))
    assert where(shed) == ("primary", reasons.SHED)
    decision = shed.decision
    assert decision.respond is not None and decision.respond.status == 429 and decision.respond.grpc_status == 8
    assert decision.retry_after == 3 and decision.route is None and shed.done
    # standard requests still have the rest of the primary's limit
    assert [where(t) for t in take(guard, 2)] == [("primary", "ok")] * 2
    assert limiter_inflight(guard, "rec", "primary") == 4


def test_critical_requests_go_past_the_limit_step_down_and_are_never_shed() -> None:
    guard, _ = make()
    take(guard, 4)  # the primary is at its limit
    critical = take(guard, 2, criticality="critical")
    assert [where(t) for t in critical] == [("primary", "overload")] * 2  # up to 1.5 x the limit
    assert critical[0].decision.holds_retries and not critical[0].decision.degraded
    take(guard, 2)  # light fills up with standard requests
    stepped = take(guard, 1, criticality="critical")
    assert [where(t) for t in stepped] == [("light", "overload")]
    past = take(guard, 3, criticality="critical")  # no tier has room: past the first tier's limit
    assert [where(t) for t in past] == [("primary", "overload")] * 3
    assert limiter_inflight(guard, "rec", "primary") == 9
    assert limiter_inflight(guard, "rec", "light") == 3


def test_settled_tickets_give_their_places_back() -> None:
    guard, clock = make()
    tickets = take(guard, 6)
    clock.advance(0.1)
    for ticket in tickets[:3]:
        guard.record(ticket, 200, None)
    for ticket in tickets[3:]:
        guard.release(ticket)
    guard.release(tickets[0])  # settled already: nothing more
    assert limiter_inflight(guard, "rec", "primary") == 0
    assert limiter_inflight(guard, "rec", "light") == 0
    assert where(guard.decide(request("rec"))) == ("primary", "ok")


def test_a_limit_refusal_releases_the_gate_so_a_probe_is_not_lost() -> None:
    guard, clock = make(
        POLICY.replace("limit: {max_inflight: 4}, deadline: 250ms}", "limit: {max_inflight: 1}}").replace(
            "retry_after: 3}",
            "retry_after: 3}\n    breaker: {min_calls: 1, half_open_probes: 1, open_duration: 1s, jitter: 0}",
        )
    )
    guard.record(guard.decide(request("rec")), 503, None)  # opens the primary
    clock.advance(1.5)
    probe = guard.decide(request("rec"))
    assert where(probe) == ("primary", "half_open_probe") and probe.decision.holds_retries
    assert probe.decision.deadline_ms is None
    assert where(guard.decide(request("rec"))) == ("light", "breaker_open")
    guard.record(probe, 200, None)
    assert where(guard.decide(request("rec"))) == ("primary", "ok")


def test_a_deadline_comes_with_held_retries_only() -> None:
    guard, _ = make()
    tickets = take(guard, 6, criticality="critical")
    assert tickets[0].decision.deadline_ms is None
    assert tickets[5].decision.deadline_ms == 250  # past the primary's limit: retries held, deadline set


def test_a_model_without_limits_sheds_nothing() -> None:
    guard, _ = make(
        POLICY.split("  - name: rank")[0]
        .replace("limit: {max_inflight: 4}, ", "")
        .replace(", limit: {max_inflight: 2}", "")
    )
    assert all(d.reason != reasons.SHED for d in guard.decisions())
    assert [where(t) for t in take(guard, 50, criticality="sheddable")] == [("primary", "ok")] * 50


def test_the_state_shows_each_limit() -> None:
    guard, _ = make()
    take(guard, 3)
    tiers = guard.snapshot()["models"]["rec"]["tiers"]  # type: ignore[index]
    assert tiers["primary"]["limit"] == {"kind": "static", "limit": 4, "inflight": 3}
    assert "limit" not in tiers["default"]


CANARY_POLICY = """
models:
  - name: rec
    match: {path_prefix: /v2/models/rec}
    tiers:
      - {name: primary, route: rec-primary, limit: {max_inflight: 10}}
      - {name: light, route: rec-light}
    canary: {route: rec-v2, weight: 50%}
"""


def test_the_canarys_calls_count_in_the_first_tiers_limit() -> None:
    guard, _ = make(CANARY_POLICY)
    tickets = [guard.decide({**request("rec"), "x-request-id": f"r{index}"}) for index in range(12)]
    arms = [t.decision.arm for t in tickets[:10]]
    assert "canary" in arms and "stable" in arms  # both arms took places
    assert limiter_inflight(guard, "rec", "primary") == 10
    assert [where(t) for t in tickets[10:]] == [("light", "overload")] * 2
    for ticket in tickets:
        guard.record(ticket, 200, None)
    assert limiter_inflight(guard, "rec", "primary") == 0


PROBE_POLICY = """
models:
  - name: rec
    match: {path_prefix: /v2/models/rec}
    overload: {honoured: [critical], critical_share: 1.0}
    tiers:
      - {name: primary, route: rec-primary, limit: {max_inflight: 1}}
      - {name: light, route: rec-light}
    breaker: {min_calls: 1, consecutive_failures: 1, half_open_probes: 1, open_duration: 1s, jitter: 0}
"""


def test_a_critical_request_served_below_gives_back_the_probe_it_held_above() -> None:
    guard, clock = make(PROBE_POLICY)
    holder = guard.decide(request("rec"))  # the primary's one place
    state = guard.registry.get("rec", "primary")
    state.breaker.judge_try("10.0.0.1:80", clock(), 0.1)  # a failed try from the log: the primary opens
    clock.advance(1.5)  # half-open: one probe
    critical = guard.decide(request("rec", "critical"))
    assert where(critical) == ("light", "overload")  # the probe slot was taken, the limit full, light took it
    guard.record(holder, 200, None)
    assert where(guard.decide(request("rec"))) == ("primary", "half_open_probe")  # the slot came back
