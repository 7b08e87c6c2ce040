"""Only inference calls are judged: readiness and metadata calls pass through and never dilute a breaker."""

from __future__ import annotations

import random

import pytest

from ext_proc.core.calls import CallRule, literal_ending
from ext_proc.core.clock import ManualClock
from ext_proc.core.guard import Guard
from ext_proc.core.registry import StateRegistry
from ext_proc.policy import Calls, PolicyError, parse_policy
from ext_proc.protocol.paths import routed_path

POLICY = """
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: rec-primary}
      - name: default
        respond: {status: 503, body: '{"error": "unavailable"}'}
    breaker: {min_calls: 10, failure_rate: 0.5, consecutive_failures: 0}
  - name: chat
    match: {path_prefix: /openai}
    tiers: [{name: primary, route: chat-primary}]
    calls: {paths: [/v1/chat/completions, ":predict"]}
  - name: everything
    match: {header: {name: x-model, value: everything}}
    tiers: [{name: primary, route: all-primary}]
    calls: {judge: all}
"""


def make() -> Guard:
    return Guard(parse_policy(POLICY), StateRegistry(ManualClock(), random.Random(1)))


def call(path: str, method: str = "POST", **more: str) -> dict[str, str]:
    return {":method": method, ":path": path, **more}


def grpc(method: str, http_method: str = "POST", content_type: str = "application/grpc") -> dict[str, str]:
    return call(f"/v2/models/recommender/{method}", http_method, **{"content-type": content_type})


@pytest.mark.parametrize(
    "headers",
    [
        call("/v2/models/recommender/infer"),
        call("/v2/models/recommender/versions/3/infer"),
        call("/v2/models/recommender/infer/"),
        call("/v2/models/recommender/infer?trace=1"),
        call("/v2/models/recommender//./infer"),
        call("/v2/models/recommender/inf%65r"),
        call("/v2/models/recommender/generate"),
        call("/v2/models/recommender/generate_stream"),
        call("/v2/models/recommender/anything", **{"content-type": "application/grpc+proto"}),
        grpc("inference.GRPCInferenceService/ModelInfer", content_type="Application/GRPC"),
    ],
)
def test_inference_calls_are_judged(headers: dict[str, str]) -> None:
    ticket = make().decide(headers)
    assert (ticket.decision.tier_name, ticket.decision.reason, ticket.decision.route) == (
        "primary",
        "ok",
        "rec-primary",
    )
    assert not ticket.done  # a response will be judged


@pytest.mark.parametrize(
    "headers",
    [
        call("/v2/models/recommender/ready", "GET"),
        call("/v2/models/recommender", "GET"),
        call("/v2/models/recommender/versions/3", "GET"),
        call("/v2/models/recommender/infer", "GET"),
        call("/v2/models/recommender/infer", "post"),
        call("/v2/models/recommender/infer/ready"),
        call("/v2/models/recommender/inferx"),
        call("/v2/models/recommender/ready?x=/infer"),
        {":path": "/v2/models/recommender/infer"},
        grpc("inference.GRPCInferenceService/ModelReady"),
        grpc("inference.GRPCInferenceService/ServerLive/"),
        grpc("grpc.health.v1.Health/Check", content_type="application/grpc+proto"),
        grpc("x.Service/ModelInfer", "GET"),
    ],
)
def test_other_calls_pass_through_untagged_and_unjudged(headers: dict[str, str]) -> None:
    guard = make()
    ticket = guard.decide(headers)
    decision = ticket.decision
    assert decision.passes_through and decision.route is None and not decision.degraded
    assert (decision.model_name, decision.tier_name, decision.reason) == ("recommender", "none", "pass_through")
    assert ticket.done and guard.record(ticket, 200, None) is None
    assert decision.count == 1


def test_ready_checks_do_not_keep_a_failing_breaker_closed() -> None:
    """The trap seen with tritonclient: two ready checks per failing infer held the failure rate at 1/3."""
    guard = make()
    for _ in range(10):
        for _ in range(2):
            guard.record(guard.decide(call("/v2/models/recommender/ready", "GET")), 200, None)
        guard.record(guard.decide(call("/v2/models/recommender/infer")), 503, None)
    after = guard.decide(call("/v2/models/recommender/infer"))
    assert after.decision.tier_name == "default"
    ready = guard.decide(call("/v2/models/recommender/ready", "GET"))
    assert ready.decision.passes_through  # never answered with an inference body, even now


def test_policy_paths_and_judge_all() -> None:
    guard = make()
    assert guard.decide(call("/openai/v1/chat/completions")).decision.route == "chat-primary"
    assert guard.decide(call("/openai/v1/models/x:predict")).decision.route == "chat-primary"
    assert guard.decide(call("/openai/v1/embeddings")).decision.passes_through  # not in its list
    assert guard.decide(call("/ready", "GET", **{"x-model": "everything"})).decision.route == "all-primary"


def test_the_rule_reads_only_its_headers() -> None:
    rule = CallRule(Calls())
    assert rule.judged({":method": "POST", ":path": "/v1/completions"})
    assert not rule.judged({":method": "POST", ":path": "/v1/completion"})
    assert not rule.judged({})


@pytest.mark.parametrize(
    ("calls", "error"),
    [
        ("{judge: some}", "models[0].calls.judge: must be one of inference, all"),
        ("{paths: [infer]}", "models[0].calls.paths[0]: must be a path ending starting with '/' or ':'"),
        ("{paths: ['/infer?x']}", "models[0].calls.paths[0]: must be a path ending"),
        ("{paths: []}", "models[0].calls.paths: must be a list of 1 to 64 values"),
        ("{methods: [post]}", "models[0].calls.methods[0]: must be an HTTP method in capitals"),
        ("{verbs: [POST]}", "models[0].calls"),
    ],
)
def test_bad_calls_are_named_by_their_path(calls: str, error: str) -> None:
    policy = f"models: [{{name: m, match: {{path_prefix: /m}}, tiers: [{{name: t, route: r}}], calls: {calls}}}]"
    with pytest.raises(PolicyError) as caught:
        parse_policy(policy)
    assert any(line.startswith(error) for line in caught.value.errors), caught.value.errors


def test_defaults_calls_apply_to_every_model() -> None:
    policy = parse_policy(
        "defaults: {calls: {judge: all}}\nmodels: [{name: m, match: {path_prefix: /m}, tiers: [{name: t, route: r}]}]"
    )
    assert policy.models[0].calls.judge == "all"


_PIECES = ["/", "//", "/.", "/..", ".", "%2F", "%2e", "%3F", "%69nfer", "\\", "infer", "/infer", ":predict", "x"]
_PIECES += ["?", "#"]


@pytest.mark.parametrize("endings", [("/infer",), ("/infer", ":predict"), ("/v1/chat/completions",)])
def test_the_shortcut_for_ordinary_paths_judges_as_routing_would(endings: tuple[str, ...]) -> None:
    """A path ending with a listed ending is judged without normalizing it: the answer must be the
    one the routed path gives, for any spelling around the ending (random paths, seeded)."""
    rule = CallRule(Calls(paths=frozenset(endings)))
    rng = random.Random(13)
    shortcut_taken = 0
    for _ in range(20_000):
        path = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 6))) + rng.choice([*endings, "", "/"])
        expected = routed_path(path).endswith(endings)
        assert rule.judged({":method": "POST", ":path": path}) is expected, path
        shortcut_taken += path.startswith("/") and path.endswith(endings) and "?" not in path and "#" not in path
    assert shortcut_taken > 1000


@pytest.mark.parametrize(
    ("ending", "literal"),
    [
        ("/infer", True),
        (":predict", True),
        ("/infer/", False),
        ("/%69nfer", False),
        ("/a//b", False),
        ("/a/./b", False),
    ],
)
def test_an_ending_with_something_to_normalize_is_checked_the_long_way(ending: str, literal: bool) -> None:
    assert literal_ending(ending) is literal
    rule = CallRule(Calls(paths=frozenset({ending})))
    assert rule.judged({":method": "POST", ":path": "/m" + ending}) is routed_path("/m" + ending).endswith(ending)


def test_an_escaped_question_mark_is_part_of_the_path() -> None:
    rule = CallRule(Calls())
    assert rule.judged({":method": "POST", ":path": "/v2/models/a%3Fb/infer"})
    assert not rule.judged({":method": "POST", ":path": "/v2/models/a/infer%3F"})
