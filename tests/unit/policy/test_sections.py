"""The section machinery on a table of its own, as a new section (canary:, overload:) would use it,
and the policy's own tables checked against their models."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from ext_proc.policy import BreakerSettings, FailureSettings, Respond
from ext_proc.policy.fields import Duration, Integer, OneOf, Ratio
from ext_proc.policy.sections import Collector, Exclusive, Rule, Section, Values, merged
from ext_proc.policy.tables import BREAKER, FAILURE, RESPOND


@dataclass(frozen=True, slots=True)
class Canary:
    weight: float = 0.1
    requests: int | None = None
    duration: float | None = 300.0
    mode: str = "route"
    cooldown: float = 60.0


def _short_cooldown(values: Values) -> str | None:
    cooldown, duration = values["cooldown"], values["duration"]
    if cooldown is not None and duration is not None and cooldown > duration:
        return "must not exceed duration"
    return None


def _heavy_mirror(values: Values) -> str | None:
    return "must be at most 0.5 to mirror" if values["mode"] == "mirror" and values["weight"] > 0.5 else None


CANARY = Section(
    Canary,
    {
        "weight": Ratio(),
        "mode": OneOf({"route": "route", "mirror": "mirror"}),
        "requests": Integer(1, 1000),
        "duration": Duration(1.0, 3600.0),
        "cooldown": Duration(1.0, 3600.0),
    },
    exclusive=(Exclusive(("duration", "requests"), "set duration or requests, not both"),),
    derived={"cooldown": lambda values: values["duration"] / 5 if values["duration"] else 60.0},
    rules=(Rule("cooldown", _short_cooldown), Rule("weight", _heavy_mirror, after="mode")),
)


def _read(raw: object, path: str = "canary") -> tuple[Canary | None, list[str]]:
    errors: list[str] = []
    return Collector(errors).section(raw, path, CANARY), errors


def test_defaults_come_from_the_dataclass_and_derived_ones_from_other_values() -> None:
    canary, errors = _read({})
    assert errors == [] and canary == Canary(cooldown=60.0)
    assert _read({"duration": "10m"})[0] == Canary(duration=600.0, cooldown=120.0)


def test_values_are_read_and_built() -> None:
    canary, errors = _read({"weight": 0.5, "mode": "mirror", "cooldown": "5s"})
    assert errors == [] and canary == Canary(weight=0.5, mode="mirror", cooldown=5.0)


def test_setting_one_exclusive_key_unsets_the_other() -> None:
    assert _read({"requests": 50})[0] == Canary(requests=50, duration=None, cooldown=60.0)


def test_both_exclusive_keys_one_error_and_only_the_second_read() -> None:
    canary, errors = _read({"duration": "bad", "requests": 0})
    assert canary is None
    assert errors == [
        "canary: set duration or requests, not both",
        "canary.requests: must be a whole number from 1 to 1000, got 0",
    ]


def test_errors_in_table_order_with_rules_where_they_run() -> None:
    raw = {"cooldown": "1h", "duration": "1m", "weight": 0.9, "mode": "mirror", "stray": 1}
    canary, errors = _read(raw)
    assert canary is None
    assert errors == [
        "canary.stray: unknown key (expected one of: cooldown, duration, mode, requests, weight)",
        "canary.weight: must be at most 0.5 to mirror",  # after mode, before the fields that follow it
        "canary.cooldown: must not exceed duration",  # after every field
    ]


def test_a_refused_value_reads_as_none_for_the_rules() -> None:
    canary, errors = _read({"duration": "1m", "cooldown": "forever"})
    assert canary is None
    assert len(errors) == 1 and errors[0].startswith("canary.cooldown: must be a duration such as")


def test_an_unknown_key_alone_reports_but_does_not_fail_the_section() -> None:
    canary, errors = _read({"wieght": 0.2})
    assert canary == Canary()
    assert errors == ["canary.wieght: unknown key (expected one of: cooldown, duration, mode, requests, weight)"]


def test_not_a_mapping() -> None:
    assert _read([1]) == (None, ["canary: must be a mapping, got a list"])


def test_merged_drops_the_defaults_exclusive_partner() -> None:
    assert merged(CANARY, {"duration": "1m", "weight": 0.2}, {"requests": 5}) == {"weight": 0.2, "requests": 5}
    assert merged(CANARY, {"requests": 5}, {"duration": "1m"}) == {"duration": "1m"}
    assert merged(CANARY, {"weight": 0.2}, None) == {"weight": 0.2}
    assert merged(CANARY, [1], None) == [1]


def test_a_table_naming_a_key_it_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="names a key the table lacks"):
        Section(Canary, {"weight": Ratio()}, rules=(Rule("weight", _heavy_mirror, after="mode"),))
    with pytest.raises(ValueError, match="names a key the table lacks"):
        Section(Canary, {"weight": Ratio()}, derived={"cooldown": lambda values: 1.0})


@pytest.mark.parametrize(
    ("table", "model"), [(BREAKER, BreakerSettings), (RESPOND, Respond), (FAILURE, FailureSettings)]
)
def test_every_model_field_is_a_key_and_its_default_is_the_models(table: Section[object], model: type) -> None:
    names = [field.name for field in dataclasses.fields(model)]
    assert sorted(table.fields) == sorted(names)
    assert table.defaults == model()
    assert table.base == {name: getattr(model(), name) for name in names}
