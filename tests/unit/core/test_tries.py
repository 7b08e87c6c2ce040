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
  - name: ranker
    match: {path_prefix: /v2/models/ranker}
    tiers: [{name: primary, route: rank-primary}]
"""
INFER = {":method": "POST", ":path": "/v2/models/recommender/infer"}
HOSTS = ("10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000")
LIGHT_HOSTS = ("10.0.1.1:8000", "10.0.1.2:8000")


def make(logged: bool = True) -> tuple[Guard, ManualClock]:
    clock = ManualClock()
    registry = StateRegistry(clock, random.Random(1))
    registry.tries_logged = logged
    return Guard(parse_policy(POLICY), registry), clock


def failed_try(
    cluster: str = "rec-primary", host: str = HOSTS[0], status: int = 503, tier: str = "", route: str = "rec-primary"
) -> LoggedTry:
    return LoggedTry(INFER, route, tier, "", cluster, host, status, 0.01)


def answer(guard: Guard, status: int, host: str, attempts: int = 1) -> str:
    ticket = guard.decide(INFER)
    guard.record(ticket, status, None, host=host, attempts=attempts, tries_logged=True)
    return ticket.decision.tier_name


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
    assert guard.record(ticket, 503, None, host=HOSTS[0], tries_logged=True) == "failure"  # the tier's counter
    assert breaker_of(guard) == (BreakerState.CLOSED, 1, 1)
    assert guard.registry.get("recommender", "primary").outcomes["failure"] == 1


def test_an_envoy_that_logs_nothing_is_judged_on_its_answers() -> None:
    """A log stream is open (another Envoy's, or anyone's), but this call's stream did not say its
    Envoy logs its tries: its failures must count from the answer, or they would be lost."""
    guard, _ = make()
    guard.record(guard.decide(INFER), 503, None, host=HOSTS[0], tries_logged=False)
    assert breaker_of(guard) == (BreakerState.CLOSED, 1, 1)
    without_stream, _ = make(logged=False)
    without_stream.record(without_stream.decide(INFER), 503, None, host=HOSTS[0], tries_logged=True)
    assert breaker_of(without_stream) == (BreakerState.CLOSED, 1, 1)


def test_a_failure_retried_onto_the_next_tier_opens_the_primary() -> None:
    """Every primary try fails and Envoy retries it on the light tier, which answers: the clients
    see light's answers, the log brings the primary's failures, from every host."""
    guard, _ = make()
    answer(guard, 200, HOSTS[0])
    for index in range(5):
        assert answer(guard, 200, LIGHT_HOSTS[0], attempts=3) == "primary"
        assert breaker_of(guard)[1:] == (1 + index, index), "light's answer is not the primary's success"
        assert guard.judge_try(failed_try(host=HOSTS[index % 3]))
    assert breaker_of(guard)[0] is BreakerState.OPEN
    assert guard.decide(INFER).decision.tier_name == "light"


def test_without_the_log_a_retried_answer_would_hide_the_fault() -> None:
    """What the log is for: the same calls judged on their answers alone keep the primary closed."""
    guard, _ = make(logged=False)
    for _ in range(30):
        answer(guard, 200, LIGHT_HOSTS[0], attempts=3)
    assert breaker_of(guard)[0] is BreakerState.CLOSED


def test_answers_before_the_log_stream_opens_never_make_the_next_tiers_host_the_primarys() -> None:
    """Envoy opens its log stream at the first failed try, so the first retried calls are answered
    before it is open. Light's host must not become one of the primary's: with one primary host,
    the primary would then need failures from two hosts to open, and never get them."""
    guard, _ = make(logged=False)
    for _ in range(3):
        assert answer(guard, 200, LIGHT_HOSTS[0], attempts=3) == "primary"
    assert breaker_of(guard)[1:] == (0, 0), "light's answers are not the primary's successes"
    guard.registry.tries_logged = True  # the stream is open: the failed tries arrive
    for _ in range(5):
        assert guard.judge_try(failed_try(host=HOSTS[0]))
    assert breaker_of(guard)[0] is BreakerState.OPEN


def test_without_an_open_log_a_failed_answer_is_judged_from_the_response() -> None:
    """The log may never come (a broken access-log cluster): a failed answer is counted from the
    response while no log stream is open, even when its Envoy declares the log."""
    guard, _ = make(logged=False)
    answer(guard, 503, HOSTS[0], attempts=3)
    assert breaker_of(guard)[1:] == (1, 1)


def test_the_next_tiers_answers_count_for_it() -> None:
    """Light tries fail now and then while the primary sends it nothing directly: the answers light
    gives to retried calls are its evidence too, or scattered failures would open it (nothing
    between them to break the run)."""
    guard, clock = make()
    for _ in range(3):
        answer(guard, 200, HOSTS[0])
    for _ in range(8):
        guard.judge_try(failed_try(cluster="rec-light", host=LIGHT_HOSTS[0]))  # the light host is now known
        for _ in range(5):
            answer(guard, 200, LIGHT_HOSTS[0], attempts=3)  # retried onto light, which answered
        clock.advance(60.0)
    assert breaker_of(guard, 1)[0] is BreakerState.CLOSED
    assert breaker_of(guard)[0] is BreakerState.CLOSED


def test_a_retry_on_another_replica_of_the_tier_is_its_success() -> None:
    """One bad replica: its tries fail and are logged, the retry on a healthy replica answers; the
    tier served the call (for its window, a probe and a canary's stable arm alike)."""
    guard, _ = make()
    for host in HOSTS:
        answer(guard, 200, host)
    for _ in range(40):
        guard.judge_try(failed_try(host=HOSTS[0]))
        answer(guard, 200, HOSTS[1], attempts=2)
    state, calls, failures = breaker_of(guard)  # each call: the bad replica's try, and the good one's answer
    assert state is BreakerState.CLOSED and (calls, failures) == (83, 40)


def test_a_probe_answered_by_the_next_tier_failed() -> None:
    guard, clock = make()
    answer(guard, 200, HOSTS[0])
    for index in range(5):
        guard.judge_try(failed_try(host=HOSTS[index % 2]))
    assert breaker_of(guard)[0] is BreakerState.OPEN
    clock.advance(1.5)
    probe = guard.decide(INFER)
    assert probe.decision.reason == "half_open_probe"
    guard.record(probe, 200, None, host=LIGHT_HOSTS[0], attempts=3, tries_logged=True)
    assert breaker_of(guard)[0] is BreakerState.OPEN


def test_tries_count_for_the_tier_that_took_them() -> None:
    guard, _ = make()
    assert guard.judge_try(failed_try(cluster="rec-light"))
    assert breaker_of(guard, 1)[1:] == (1, 1) and breaker_of(guard)[1:] == (0, 0)
    # a cluster that is no route of the policy (Istio's names): the tier modelguard chose
    assert guard.judge_try(failed_try(cluster="outbound|8000|light|rec", tier="light"))
    assert breaker_of(guard, 1)[1:] == (2, 2)
    # an Istio subset cluster names its route: a primary call's retry on the light subset is light's
    istio_light = "outbound|8080|rec-light|rec.models.svc.cluster.local"
    assert guard.judge_try(failed_try(cluster=istio_light, tier="primary"))
    assert breaker_of(guard, 1)[1:] == (3, 3) and breaker_of(guard)[1:] == (0, 0)
    # a subset-less Istio cluster names no route: the tier modelguard chose
    assert guard.judge_try(failed_try(cluster="outbound|8080||rec.models.svc.cluster.local", tier="primary"))
    assert breaker_of(guard)[1:] == (1, 1)


def test_the_model_is_the_one_modelguard_routed_to_whatever_the_path_says() -> None:
    """A client chooses its path (and x-envoy-original-path), not x-modelguard-route: a failing call
    of the ranker cannot be charged to the recommender."""
    guard, _ = make()
    spoofed = LoggedTry(INFER, "rank-primary", "primary", "", "rank-primary", HOSTS[0], 503, 0.0)
    assert guard.judge_try(spoofed)  # the recommender's path on a call modelguard routed to the ranker
    assert breaker_of(guard)[1:] == (0, 0)
    ranker = guard.models[1].tiers[0].state
    assert ranker is not None and ranker.breaker.figures().failures == 1


def test_what_is_not_a_failed_inference_call_of_a_tier_is_ignored() -> None:
    guard, _ = make()
    assert not guard.judge_try(failed_try(status=400))  # the client's fault
    assert not guard.judge_try(failed_try(cluster="elsewhere"))  # no tier of the model
    ready = {":method": "GET", ":path": "/v2/models/recommender/ready"}
    assert not guard.judge_try(LoggedTry(ready, "rec-primary", "", "", "rec-primary", HOSTS[0], 503, 0.0))
    assert not guard.judge_try(failed_try(route=""))  # modelguard routed no call: no model's
    assert breaker_of(guard)[1:] == (0, 0)


def test_a_404_answer_is_judged_from_the_response_even_with_the_log() -> None:
    """The log keeps tries of 500 and up; a 404 (the tier does not serve the model) is not among them."""
    guard, _ = make()
    answer(guard, 404, HOSTS[0])
    assert breaker_of(guard)[1:] == (1, 1)
