"""The degrade ladder over real breakers, on a fake clock."""

from __future__ import annotations

import random

from ext_proc.core.clock import ManualClock
from ext_proc.core.guard import Guard, Ticket
from ext_proc.core.registry import StateRegistry
from ext_proc.policy import parse_policy

POLICY = """
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: rec-primary}
      - {name: light, route: rec-light}
      - name: default
        respond: {status: 200, body: '{"items": []}'}
    breaker: {window: 10s, min_calls: 4, failure_rate: 0.5, consecutive_failures: 0,
              open_duration: 2s, max_open_duration: 8s, half_open_probes: 2, jitter: 0,
              slow_call_duration: 1s, slow_call_rate: 1.0}
  - name: ranker
    match: {header: {name: x-model, value: ranker}}
    tiers:
      - {name: primary, route: ranker-v1}
"""

REC = {":method": "POST", ":path": "/v2/models/recommender/infer"}


def make() -> tuple[Guard, ManualClock]:
    clock = ManualClock()
    return Guard(parse_policy(POLICY), StateRegistry(clock, random.Random(1))), clock


def serve(guard: Guard, headers: dict[str, str], status: int = 200) -> Ticket:
    ticket = guard.decide(headers)
    guard.record(ticket, status, None)
    return ticket


def route(ticket: Ticket) -> tuple[str, str, str]:
    d = ticket.decision
    return d.model_name, d.tier_name, d.reason


def test_healthy_primary_serves() -> None:
    guard, _ = make()
    assert route(guard.decide(REC)) == ("recommender", "primary", "ok")
    assert route(guard.decide({":method": "POST", ":path": "/x/infer", "x-model": "ranker"})) == (
        "ranker",
        "primary",
        "ok",
    )


def test_unmatched_passes_through_and_is_counted() -> None:
    guard, _ = make()
    ticket = guard.decide({":method": "POST", ":path": "/v2/models/other/infer"})
    assert ticket.decision.passes_through
    assert route(ticket) == ("unmatched", "unmatched", "unmatched")
    assert guard.record(ticket, 503, None) is None  # nothing to judge
    assert guard.unmatched.count == 1


def test_ladder_steps_down_as_breakers_open() -> None:
    guard, _ = make()
    for _ in range(4):
        serve(guard, REC, 503)
    ticket = guard.decide(REC)
    assert route(ticket) == ("recommender", "light", "breaker_open")
    assert ticket.decision.degraded
    guard.record(ticket, 200, None)
    for _ in range(4):
        serve(guard, REC, 500)  # the light tier fails too
    ticket = guard.decide(REC)
    assert route(ticket) == ("recommender", "default", "breaker_open")
    assert ticket.decision.respond is not None and ticket.decision.respond.body == '{"items": []}'


def test_every_tier_refusing_gives_the_builtin_answer() -> None:
    guard, _ = make()
    for _ in range(5):  # ranker keeps the default breaker: 5 consecutive failures open it
        serve(guard, {":method": "POST", ":path": "/infer", "x-model": "ranker"}, 503)
    ticket = guard.decide({":method": "POST", ":path": "/infer", "x-model": "ranker"})
    assert route(ticket) == ("ranker", "none", "breaker_open")
    assert ticket.decision.tier_name == "none" and ticket.decision.route is None and ticket.decision.degraded


def test_half_open_probes_then_the_rest_take_the_next_tier() -> None:
    guard, clock = make()
    for _ in range(4):
        serve(guard, REC, 503)
    clock.advance(2.0)
    tickets = [guard.decide(REC) for _ in range(4)]
    assert [route(t)[1:] for t in tickets] == [
        ("primary", "half_open_probe"),
        ("primary", "half_open_probe"),
        ("light", "breaker_open"),
        ("light", "breaker_open"),
    ]
    for ticket in tickets:
        guard.record(ticket, 200, None)
    assert route(guard.decide(REC)) == ("recommender", "primary", "ok")


def test_dropped_probe_stream_releases_slot_and_inflight() -> None:
    guard, clock = make()
    for _ in range(4):
        serve(guard, REC, 503)
    clock.advance(2.0)
    probes = [guard.decide(REC), guard.decide(REC)]
    primary = guard.registry.get("recommender", "primary")
    assert primary.inflight == 2
    assert route(guard.decide(REC))[1] == "light"
    guard.release(probes[0])
    guard.release(probes[0])  # releasing twice changes nothing
    assert primary.inflight == 1
    assert primary.outcomes["dropped"] == 1
    assert route(guard.decide(REC))[1:] == ("primary", "half_open_probe")


def test_record_after_release_is_ignored() -> None:
    guard, _ = make()
    ticket = guard.decide(REC)
    guard.release(ticket)
    assert guard.record(ticket, 503, None) is None
    tier = guard.registry.get("recommender", "primary")
    assert tier.inflight == 0 and tier.outcomes["failure"] == 0


def test_latency_is_measured_from_decide_to_response() -> None:
    guard, clock = make()
    ticket = guard.decide(REC)
    clock.advance(0.3)
    guard.record(ticket, 200, None)
    histogram = guard.registry.get("recommender", "primary").latency
    assert histogram.count == 1 and abs(histogram.total - 0.3) < 1e-9


def test_answered_at_sets_latency_for_late_judged_grpc() -> None:
    guard, clock = make()
    ticket = guard.decide(REC)
    clock.advance(0.2)
    answered = clock()
    clock.advance(5.0)  # trailers come much later on a streaming answer
    guard.record(ticket, 200, 14, answered)
    tier = guard.registry.get("recommender", "primary")
    assert abs(tier.latency.total - 0.2) < 1e-9 and tier.outcomes["failure"] == 1


def test_counts_and_transitions_feed_metrics() -> None:
    guard, _clock = make()
    for _ in range(4):
        serve(guard, REC, 503)
    guard.decide(REC)
    counts = {(d.model_name, d.tier_name, d.reason): d.count for d in guard.decisions() if d.count}
    assert counts == {("recommender", "primary", "ok"): 4, ("recommender", "light", "breaker_open"): 1}
    assert guard.registry.get("recommender", "primary").transitions == {("closed", "open"): 1}


def test_snapshot_names_every_model_and_tier() -> None:
    guard, _ = make()
    for _ in range(4):
        serve(guard, REC, 503)
    state = guard.snapshot()
    models = state["models"]
    assert isinstance(models, dict)
    tiers = models["recommender"]["tiers"]
    assert list(tiers) == ["primary", "light", "default"]
    assert tiers["primary"]["state"] == "open" and tiers["primary"]["failures"] == 4
    assert tiers["default"]["respond"] is True and "state" not in tiers["default"]


def test_a_scope_limits_the_match_to_one_model() -> None:
    """A stream scoped to one model (its Service's virtual host) matches that model's match only:
    another model's path or header there is unmatched, never charged to the other model."""
    guard, _ = make()
    both = {**REC, "x-model": "ranker"}
    assert guard.decide(both).decision.model_name == "recommender", "policy order, unscoped"
    assert guard.decide(both, "ranker").decision.model_name == "ranker", "the scope's own match, whatever comes first"
    assert guard.decide(REC, "ranker").decision.model_name == "unmatched"
    assert guard.decide(REC, "recommender").decision.model_name == "recommender"
    assert guard.decide(REC, "no-such-model").decision.model_name == "unmatched"
