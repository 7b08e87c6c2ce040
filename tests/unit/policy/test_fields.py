"""Field specs on their own: the typed value, or Invalid with the message and where in a list."""

from __future__ import annotations

import re

import pytest

from ext_proc.policy.fields import CodeSet, Duration, GrpcCode, HttpStatus, Integer, Invalid, OneOf, Ratio, Text


def _refused(spec: object, value: object) -> list[tuple[str, str]]:
    with pytest.raises(Invalid) as info:
        spec.read(value)  # type: ignore[attr-defined]
    return info.value.problems


def test_integer_bounds_and_booleans() -> None:
    spec = Integer(1, 10)
    assert (spec.read(1), spec.read(10)) == (1, 10)
    assert _refused(spec, 11) == [("", "must be a whole number from 1 to 10, got 11")]
    assert _refused(spec, True) == [("", "must be a whole number from 1 to 10, got True")]
    assert _refused(spec, 2.0) == [("", "must be a whole number from 1 to 10, got 2.0")]


def test_integer_with_its_own_message() -> None:
    assert _refused(Integer(200, 599, "must be an HTTP status"), 600) == [("", "must be an HTTP status")]


def test_ratio_zero_only_when_allowed() -> None:
    assert Ratio(allow_zero=True).read(0) == 0.0
    assert isinstance(Ratio().read(1), float)
    assert _refused(Ratio(), 0) == [("", "must be between 0 and 1 (above 0, at most 1), got 0")]
    assert _refused(Ratio(allow_zero=True), 1.5) == [("", "must be from 0 to 1, got 1.5")]
    assert _refused(Ratio(), 10**400)[0][1].startswith("must be between 0 and 1")


def test_duration_bounds_in_the_message() -> None:
    spec = Duration(0.01, 86400.0)
    assert spec.read("5s") == 5.0
    assert _refused(spec, "5ms") == [("", "must be from 10ms to 86400s, got '5ms'")]
    assert _refused(spec, 5)[0][1].startswith("must be a duration string with a unit")


def test_text_whole_value_or_any_string() -> None:
    spec = Text(re.compile(r"[a-z]+"), "letters")
    assert spec.read("abc") == "abc"
    assert _refused(spec, "abc\n") == [("", "letters")]
    assert Text(None, "a string").read("") == ""
    assert _refused(Text(None, "a string"), 5) == [("", "a string")]


def test_one_of_is_exact() -> None:
    spec = OneOf({"reject": 1, "queue": 2})
    assert spec.read("queue") == 2
    assert _refused(spec, "Queue") == [("", "must be one of reject, queue, got 'Queue'")]
    assert _refused(spec, 1) == [("", "must be one of reject, queue, got 1")]


def test_grpc_code_names_numbers_and_ok() -> None:
    assert GrpcCode().read("unavailable") == 14
    assert GrpcCode().read(0) == 0
    assert _refused(GrpcCode(), "\u0131nternal")[0][1].startswith("unknown gRPC status")
    assert _refused(GrpcCode(), True)[0][1].startswith("unknown gRPC status")
    assert _refused(GrpcCode(ok_refused="no OK"), "ok") == [("", "no OK")]


@pytest.mark.parametrize(
    ("value", "codes"), [(503, range(503, 504)), ("5xx", range(500, 600)), (" 404 ", range(404, 405))]
)
def test_http_status_entries(value: object, codes: range) -> None:
    assert HttpStatus().read(value) == codes


@pytest.mark.parametrize("value", [600, 99, True, "6xx", "\uff15\uff10\uff13", 500.0])
def test_http_status_entries_refused(value: object) -> None:
    assert _refused(HttpStatus(), value)[0][1].startswith("must be an HTTP status (100-599)")


def test_code_set_reports_every_bad_entry_at_its_index_then_refused_codes() -> None:
    spec = CodeSet(GrpcCode(), "gRPC status names", refused=((0, "must not contain OK"),))
    assert spec.read(["internal", 14, "INTERNAL"]) == frozenset({13, 14})
    problems = _refused(spec, ["NOPE", "OK", 17])
    assert [suffix for suffix, _ in problems] == ["[0]", "[2]", ""]
    assert problems[-1] == ("", "must not contain OK")


def test_code_set_is_bounded_before_it_is_walked() -> None:
    spec = CodeSet(HttpStatus(), "HTTP statuses")
    assert spec.read(["5xx", 429]) == frozenset({*range(500, 600), 429})
    assert _refused(spec, "5xx") == [("", "must be a list of HTTP statuses")]
    assert _refused(spec, [])[0][1].startswith("must list at least one status")
    assert _refused(spec, [503] * 101) == [("", "at most 100 entries, got 101")]
