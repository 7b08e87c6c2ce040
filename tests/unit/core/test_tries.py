"""Failed tries from Envoy's access log: counted once, into the tier that took them, and a retry
onto the next tier no longer hides a failing model from its breaker."""

from __future__ import annotations

import random

from ext_proc.core.breaker import BreakerState
from ext_proc.core.clock import ManualClock
from ext_proc.core.guard import Guard
from ext_proc.core.registry import StateRegistry
from ext_proc.core.tries import LoggedTry
from ext_proc.policy import parse_policy

POLICY = """
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: rec-primary}
      - {name: light, route: rec-light}
      - {name: default, respond: {status: 503}}
    breaker: {window: 10s, min_calls: 10, failure_rate: 0.5, consecutive_failures: 5, jitter: 0,
              open_duration: 1s, half_open_probes: 1}
"""
INFER = {":method": "POST", ":path": "/v2/models/recommender/infer"}
HOSTS = ("10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000")


def make(logged: bool = True) -> tuple[Guard, ManualClock]:
    clock = ManualClock()
    registry = StateRegistry(clock, random.Random(1))
    registry.tries_logged = logged
    return Guard(parse_policy(POLICY), registry), clock


def failed_try(cluster: str = "rec-primary", host: str = HOSTS[0], status: int = 503, tier: str = "") -> LoggedTry:
    return LoggedTry(INFER, tier, "", cluster, host, status, 0.01)


def breaker_of(guard: Guard, index: int = 0) -> tuple[BreakerState, int, int]:
    state = guard.models[0].tiers[index].state
    assert state is not None
    figures = state.breaker.figures()
    return state.breaker.state, figures.calls, figures.failures


def test_a_logged_failure_is_counted_once() -> None:
    """The final 503 is in the log too: the answer leaves it to the log."""
    guard, _ = make()
    ticket = guard.decide(INFER)
    assert guard.judge_try(failed_try())
    assert guard.record(ticket, 503, None, host=HOSTS[0]) == "failure"  # the tier's counter still says failure
    assert breaker_of(guard) == (BreakerState.CLOSED, 1, 1)
    assert guard.registry.get("recommender", "primary").outcomes["failure"] == 1


def test_without_a_log_stream_the_answer_is_judged_as_before() -> None:
    guard, _ = make(logged=False)
    guard.record(guard.decide(INFER), 503, None, host=HOSTS[0])
    assert breaker_of(guard) == (BreakerState.CLOSED, 1, 1)


def test_a_failure_retried_onto_the_next_tier_opens_the_primary() -> None:
    """Every primary try fails and Envoy retries it on the light tier, which answers: the clients
    see light's answers, the log brings the primary's failures, from every host."""
    guard, _ = make()
    for index in range(5):
        ticket = guard.decide(INFER)
        assert ticket.decision.tier_name == "primary"
        assert guard.judge_try(failed_try(host=HOSTS[index % 3]))
        guard.record(ticket, 200, None, host="10.0.1.1:8000", attempts=2)
    assert breaker_of(guard)[0] is BreakerState.OPEN
    assert guard.decide(INFER).decision.tier_name == "light"
    assert breaker_of(guard, 1)[1:] == (0, 0), "light's answers for primary's calls are not light's evidence"


def test_without_the_log_a_retried_answer_would_hide_the_fault() -> None:
    """What the log is for: the same calls judged on their answers alone keep the primary closed."""
    guard, _ = make(logged=False)
    for _ in range(30):
        guard.record(guard.decide(INFER), 200, None, host="10.0.1.1:8000", attempts=2)
    assert breaker_of(guard)[0] is BreakerState.CLOSED


def test_one_bad_host_retried_elsewhere_stays_envoys() -> None:
    guard, _ = make()
    for index in range(40):
        ticket = guard.decide(INFER)
        if index % 3 == 0:  # the bad host's try failed; the retry on another host answered
            guard.judge_try(failed_try(host=HOSTS[0]))
            guard.record(ticket, 200, None, host=HOSTS[1], attempts=2)
        else:
            guard.record(ticket, 200, None, host=HOSTS[1 + index % 2])
    assert breaker_of(guard)[0] is BreakerState.CLOSED


def test_a_probe_retried_elsewhere_failed() -> None:
    guard, clock = make()
    for index in range(5):
        guard.judge_try(failed_try(host=HOSTS[index % 2]))
    assert breaker_of(guard)[0] is BreakerState.OPEN
    clock.advance(1.5)
    probe = guard.decide(INFER)
    assert probe.decision.reason == "half_open_probe"
    guard.record(probe, 200, None, host="10.0.1.1:8000", attempts=2)
    assert breaker_of(guard)[0] is BreakerState.OPEN


def test_tries_count_for_the_tier_that_took_them() -> None:
    guard, _ = make()
    assert guard.judge_try(failed_try(cluster="rec-light"))
    assert breaker_of(guard, 1)[1:] == (1, 1) and breaker_of(guard)[1:] == (0, 0)
    # a cluster that is no route of the policy (Istio's names): the tier modelguard chose
    assert guard.judge_try(failed_try(cluster="outbound|8000|light|rec", tier="light"))
    assert breaker_of(guard, 1)[1:] == (2, 2)


def test_what_is_not_a_failed_inference_call_of_a_tier_is_ignored() -> None:
    guard, _ = make()
    assert not guard.judge_try(failed_try(status=404 - 4))  # 400: the client's fault
    assert not guard.judge_try(failed_try(cluster="elsewhere"))  # no tier of the model
    assert not guard.judge_try(
        LoggedTry(
            {":method": "GET", ":path": "/v2/models/recommender/ready"}, "", "", "rec-primary", HOSTS[0], 503, 0.0
        )
    )
    assert not guard.judge_try(
        LoggedTry({":method": "POST", ":path": "/v2/models/other/infer"}, "", "", "rec-primary", HOSTS[0], 503, 0.0)
    )
    assert breaker_of(guard)[1:] == (0, 0)


def test_a_404_answer_is_judged_from_the_response_even_with_the_log() -> None:
    """The log keeps tries of 500 and up; a 404 (the tier does not serve the model) is not among them."""
    guard, _ = make()
    guard.record(guard.decide(INFER), 404, None, host=HOSTS[0])
    assert breaker_of(guard)[1:] == (1, 1)
