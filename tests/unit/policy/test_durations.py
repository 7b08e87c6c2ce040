"""parse_duration / format_duration: units are required, bad input fails with a clear message."""

from __future__ import annotations

import pytest

from ext_proc.policy.durations import format_duration, parse_duration, shown


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1ms", 0.001),
        ("10s", 10.0),
        ("0s", 0.0),
        ("1m", 60.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("2.5m", 150.0),
        ("0.5h", 1800.0),
        ("250ms", 0.25),
        (" 10s ", 10.0),
        ("10 s", 10.0),
    ],
)
def test_parses_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_returns_float() -> None:
    assert isinstance(parse_duration("10s"), float)


@pytest.mark.parametrize("value", [10, 0, 1.5, 10.0, -1, None, ["10s"], {"s": 10}])
def test_non_strings_are_refused_with_a_unit_hint(value: object) -> None:
    with pytest.raises(ValueError, match=r"must be a duration string with a unit such as 500ms, 10s or 1m"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_refused(value: bool) -> None:
    # bool is an int subclass; it must not slip through as 1 or 0 seconds.
    with pytest.raises(ValueError, match=r"with a unit") as info:
        parse_duration(value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "10",
        "10 sec",
        "",
        "   ",
        "-1s",
        "-500ms",
        "s",
        "ms",
        "1.s",
        ".5s",
        "1e3s",
        "10S",
        "10sec",
        "1d",
        "1m30s",
        "ten s",
    ],
)
def test_malformed_strings_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"must be a duration such as 500ms, 10s or 1m") as info:
        parse_duration(text)
    # The message quotes what was given, so the user sees the offending value.
    assert repr(text) in str(info.value)


def test_bare_number_string_message_names_the_value() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("10")
    assert str(info.value) == "must be a duration such as 500ms, 10s or 1m, got '10'"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "500ms"),
        (0.001, "1ms"),
        (0.1, "100ms"),
        (1.0, "1s"),
        (10.0, "10s"),
        (60.0, "60s"),
        (1.5, "1.5s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["500ms", "1s", "10s", "1.5s", "250ms"])
def test_format_round_trips(text: str) -> None:
    assert parse_duration(format_duration(parse_duration(text))) == pytest.approx(parse_duration(text))


@pytest.mark.parametrize(
    "text",
    [
        "\uff11\uff10s",  # full-width 10s: float() reads it as 10
        "1\uff10s",
        "\u0663s",  # Arabic-Indic 3
        "1.\u0665s",
        "10s\u3000x",
    ],
)
def test_only_ascii_digits(text: str) -> None:
    with pytest.raises(ValueError, match=r"must be a duration such as"):
        parse_duration(text)


def test_no_unicode_spaces_around_the_number() -> None:
    # \s without re.ASCII also takes U+3000 (ideographic space) and U+00A0.
    for text in ("\u300010s", "10\u00a0s"):
        with pytest.raises(ValueError):
            parse_duration(text)


def _bomb(levels: int) -> list[object]:
    value: list[object] = ["lol"] * 10
    for _ in range(levels):
        value = [value] * 10  # 10**levels references, all shared, as a YAML alias bomb builds
    return value


def test_error_quotes_a_bounded_rendering_of_a_huge_value() -> None:
    # repr() of this walks 10**30 references: the test would never finish.
    with pytest.raises(ValueError) as info:
        parse_duration(_bomb(30))
    assert len(str(info.value)) < 200
    with pytest.raises(ValueError) as info:
        parse_duration("9" * 1_000_000 + "x")
    assert len(str(info.value)) < 200


def test_shown_is_short_and_repr_like() -> None:
    assert shown("10") == "'10'"
    assert shown(12) == "12"
    assert shown({"a": 1}) == "{'a': 1}"
    for value in (_bomb(30), "x" * 10_000, {str(i): _bomb(20) for i in range(1000)}, 10**4000, b"\x00" * 10_000):
        assert len(shown(value)) <= 60
    assert shown("\x1b[31m") == repr("\x1b[31m")  # escaped, never raw control characters on a terminal
