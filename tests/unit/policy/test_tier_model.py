"""A tier's `model:`: the name its servers know the model by, read and refused by its path."""

from __future__ import annotations

import random

import pytest

from ext_proc.core.clock import ManualClock
from ext_proc.core.guard import Guard
from ext_proc.core.registry import StateRegistry
from ext_proc.policy import PolicyError, Tier, parse_policy
from ext_proc.policy.limits import MAX_SERVED_NAME
from ext_proc.protocol.paths import named_model

POLICY = """
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: recommender-resnet50}
      - {name: light, route: recommender-light, model: recommender-light}
      - {name: default, respond: {status: 503}}
"""


def _errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    return info.value.errors


def test_a_routed_tier_names_the_model_its_servers_serve() -> None:
    tiers = parse_policy(POLICY).models[0].tiers
    assert tiers[1] == Tier(name="light", route="recommender-light", model="recommender-light")
    assert tiers[0].model is None and tiers[2].model is None, "no model: the path's name is the servers' name"


def test_the_state_endpoint_shows_the_model_a_tier_serves() -> None:
    guard = Guard(parse_policy(POLICY), StateRegistry(ManualClock(), random.Random(1)))
    tiers = guard.snapshot()["models"]["recommender"]["tiers"]  # type: ignore[index]
    assert [tiers[name]["model"] for name in ("primary", "light", "default")] == [None, "recommender-light", None]


@pytest.mark.parametrize(
    "name", ["recommender_light", "Recommender.v2", "a", "9-lives", "r" * MAX_SERVED_NAME, "a..b", "x."]
)
def test_model_names_within_the_segment_charset_are_read(name: str) -> None:
    assert parse_policy(POLICY.replace("model: recommender-light", f"model: '{name}'")).models[0].tiers[1].model == name


@pytest.mark.parametrize(
    "value",
    [
        "''",
        "'.'",
        "'..'",
        "'-light'",
        "'_light'",
        "'a/b'",
        "'a b'",
        "'a:predict'",
        "'a?x=1'",
        "'a%2Fb'",
        "'a\\\\1'",
        '"light\\n"',
        "'caf\u00e9'",
        "'" + "r" * (MAX_SERVED_NAME + 1) + "'",
        "5",
        "true",
        "[light]",
        "{name: light}",
        "null",
    ],
)
def test_a_model_name_that_is_not_one_safe_path_segment_is_refused(value: str) -> None:
    errors = _errors(POLICY.replace("model: recommender-light", f"model: {value}"))
    assert errors == [
        "models[0].tiers[1].model: must be the model's name on the tier's servers: 1-63 characters of letters,"
        " digits, '_', '.', '-', starting with a letter or digit"
    ]


def test_a_respond_tier_serves_no_model() -> None:
    errors = _errors(POLICY.replace("respond: {status: 503}", "respond: {status: 503}, model: recommender"))
    assert errors == [
        "models[0].tiers[2].model: only a tier with a route serves a model: modelguard answers a respond tier"
    ]


def test_a_respond_tier_with_a_model_still_has_its_other_errors_reported() -> None:
    errors = _errors(POLICY.replace("respond: {status: 503}", "respond: {status: 99}, model: recommender"))
    assert [e.split(":", 1)[0] for e in errors] == ["models[0].tiers[2].model", "models[0].tiers[2].respond.status"]


@pytest.mark.parametrize(
    "match",
    [
        "{header: {name: x-model, value: recommender}}",
        "{authority: recommender.example.com}",
        "{path_prefix: /v2/models/}",  # no name to rewrite
        "{path_prefix: /recommender}",  # the name is not where KServe paths carry it
        "{path_prefix: /v2/models/recommender/versions/2}",
        "{path_prefix: '/v1/models/recommender:predict'}",
    ],
)
def test_a_model_needs_a_path_prefix_naming_the_model(match: str) -> None:
    errors = _errors(POLICY.replace("{path_prefix: /v2/models/recommender}", match))
    assert len(errors) == 1 and errors[0].startswith(
        "models[0].tiers[1].model: needs the model matched by a path_prefix ending in /models/NAME"
    )


def test_every_tier_with_a_model_is_named_and_other_errors_still_show() -> None:
    text = POLICY.replace("{path_prefix: /v2/models/recommender}", "{header: {name: x-model, value: r}}")
    text = text.replace("route: recommender-resnet50}", "route: recommender-resnet50, model: big}")
    text += "    breaker: {min_calls: 0}\n"
    assert [e.split(":", 1)[0] for e in _errors(text)] == [
        "models[0].breaker.min_calls",
        "models[0].tiers[0].model",
        "models[0].tiers[1].model",
    ]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("/v2/models/recommender", ("/v2/models/", "recommender")),
        ("/v1/models/rec", ("/v1/models/", "rec")),
        ("/team/v2/models/a.b", ("/team/v2/models/", "a.b")),
        ("/v2/models/a/models/b", ("/v2/models/a/models/", "b")),
        ("/v2/models/", None),
        ("/v2/models", None),
        ("/v2/models/rec/infer", None),
        ("/v1/models/rec:predict", None),
    ],
)
def test_where_a_path_prefix_names_its_model(prefix: str, expected: tuple[str, str] | None) -> None:
    assert named_model(prefix) == expected


def test_a_model_matched_by_its_body_may_have_tiers_serving_it_under_another_name() -> None:
    policy = parse_policy(
        "models:\n  - name: chat\n    match: {body_model: llama-3}\n"
        "    tiers: [{name: primary, route: p}, {name: light, route: l, model: llama-3-8b}]\n"
    )
    assert policy.models[0].tiers[1].model == "llama-3-8b"
