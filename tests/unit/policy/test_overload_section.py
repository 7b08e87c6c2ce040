"""A tier's ``limit:`` and ``deadline:`` and a model's ``overload:``, read and refused by their paths."""

from __future__ import annotations

import pytest

from ext_proc.policy import AdaptiveLimit, Limit, Overload, PolicyError, parse_policy

POLICY = """
defaults:
  overload: {retry_after: 2}
models:
  - name: rec
    match: {path_prefix: /v2/models/rec}
    overload: {default: sheddable, honoured: [critical], sheddable_share: 0.5, hold_retries: false}
    tiers:
      - {name: primary, route: rec-primary, limit: {max_inflight: 64, adaptive: {initial: 10, min: 2}}, deadline: 2s}
      - {name: light, route: rec-light, limit: {max_inflight: 8}}
      - {name: default, respond: {status: 503}}
"""


def _errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    return info.value.errors


def test_limits_deadlines_and_the_overload_section_are_read_with_defaults_merged() -> None:
    model = parse_policy(POLICY).models[0]
    primary, light, default = model.tiers
    assert primary.limit == Limit(max_inflight=64, adaptive=AdaptiveLimit(initial=10, min=2))
    assert primary.deadline == 2.0
    assert light.limit == Limit(max_inflight=8) and light.deadline is None
    assert default.limit is None
    assert model.overload == Overload(
        default="sheddable", honoured=frozenset({"critical"}), sheddable_share=0.5, hold_retries=False, retry_after=2
    )


def test_a_model_without_the_section_takes_the_documented_defaults() -> None:
    model = parse_policy(
        POLICY.replace(
            "    overload: {default: sheddable, honoured: [critical], sheddable_share: 0.5, hold_retries: false}\n", ""
        )
    ).models[0]
    assert model.overload == Overload(retry_after=2)
    assert model.overload.honoured == frozenset({"standard", "sheddable"})


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            "limit: {max_inflight: 64, adaptive: {initial: 10, min: 2}}",
            "models[0].tiers[0].limit.max_inflight: required: max_inflight, adaptive, or both",
        ),
        ("max_inflight: 64", "models[0].tiers[0].limit.max_inflight: must be a whole number from 1 to 1000000, got 0"),
        ("initial: 10, min: 2", "models[0].tiers[0].limit.adaptive.initial: must be from min (2) to max (1)"),
        (
            "initial: 10, min: 2",
            "models[0].tiers[0].limit.max_inflight: must be at least adaptive.min (100): it caps the adaptive limit",
        ),
        (
            "deadline: 2s",
            "models[0].tiers[0].deadline: must be a duration string with a unit such as 500ms, 10s or 1m, got 2",
        ),
        (
            "honoured: [critical]",
            "models[0].overload.honoured[0]: must be one of critical, standard, sheddable (in lower case)",
        ),
        ("hold_retries: false", "models[0].overload.hold_retries: must be true or false, got 'no thanks'"),
        ("default: sheddable", "models[0].overload.default: must be one of critical, standard, sheddable, got 'low'"),
    ],
)
def test_mistakes_are_named_by_their_path(change: str, error: str) -> None:
    replacement = {
        "limit: {max_inflight: 64, adaptive: {initial: 10, min: 2}}": "limit: {}",
        "max_inflight: 64": "max_inflight: 0",
        "initial: 10, min: 2": "initial: 10, min: 2, max: 1" if "initial" in error else "initial: 100, min: 100",
        "deadline: 2s": "deadline: 2",
        "honoured: [critical]": "honoured: [Critical]",
        "hold_retries: false": "hold_retries: no thanks",
        "default: sheddable": "default: low",
    }[change]
    assert error in _errors(POLICY.replace(change, replacement, 1))


def test_a_respond_tier_has_no_limit_nor_deadline() -> None:
    errors = _errors(
        POLICY.replace("respond: {status: 503}", "respond: {status: 503}, limit: {max_inflight: 1}, deadline: 1s")
    )
    assert errors == [
        "models[0].tiers[2].limit: only a tier with a route has a limit: modelguard answers a respond tier",
        "models[0].tiers[2].deadline: only a tier with a route has a deadline: modelguard answers a respond tier",
    ]


def test_a_mistake_in_the_defaults_is_reported_once_at_its_own_path() -> None:
    errors = _errors(POLICY.replace("overload: {retry_after: 2}", "overload: {retry_after: 0}"))
    assert errors == ["defaults.overload.retry_after: must be a whole number from 1 to 3600, got 0"]
