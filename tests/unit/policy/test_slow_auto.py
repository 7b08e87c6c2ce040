"""``slow_call_duration: auto`` and its ``slow_call_auto`` settings, read and refused by their paths."""

from __future__ import annotations

import pytest

from ext_proc.policy import AutoSlow, BreakerSettings, PolicyError, parse_policy

POLICY = """
models:
  - name: m
    match: {path_prefix: /v2/models/m}
    tiers: [{name: primary, route: m-primary}]
    breaker: BREAKER
"""


def breaker(text: str) -> BreakerSettings:
    return parse_policy(POLICY.replace("BREAKER", text)).models[0].breaker


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(POLICY.replace("BREAKER", text))
    return info.value.errors


def test_auto_alone_takes_the_defaults_and_starts_from_their_initial_threshold() -> None:
    settings = breaker("{slow_call_duration: auto}")
    assert settings.slow_call_auto == AutoSlow()
    assert settings.slow_call_duration == 10.0 and settings.max_probe_duration == 10.0


def test_auto_settings_are_read_and_a_probe_bound_given_is_kept() -> None:
    settings = breaker("{slow_call_duration: auto, slow_call_auto: {initial: 2s, factor: 4, floor: 100ms}, "
                       "max_probe_duration: 3s}")  # fmt: skip
    assert settings.slow_call_auto == AutoSlow(initial=2.0, factor=4.0, floor=0.1)
    assert settings.slow_call_duration == 2.0 and settings.max_probe_duration == 3.0


def test_a_fixed_duration_has_no_auto_settings() -> None:
    assert breaker("{slow_call_duration: 500ms}").slow_call_auto is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{slow_call_duration: 1s, slow_call_auto: {factor: 2}}",
         "models[0].breaker.slow_call_auto: only with slow_call_duration: auto"),
        ("{slow_call_duration: automatic}",
         "models[0].breaker.slow_call_duration: must be a duration such as 500ms, 10s or 1m,"
         " got 'automatic' (or auto)"),
        ("{slow_call_duration: auto, slow_call_auto: {floor: 2s, ceiling: 1s}}",
         "models[0].breaker.slow_call_auto.ceiling: must be at least floor"),
        ("{slow_call_duration: auto, slow_call_auto: {quantile: 1.5}}",
         "models[0].breaker.slow_call_auto.quantile: must be a number from 0.5 to 0.9999, got 1.5"),
    ],
)  # fmt: skip
def test_mistakes_are_named_by_their_path(text: str, error: str) -> None:
    assert error in errors(text)
