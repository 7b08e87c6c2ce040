"""What a single value of the policy may be: one spec object per kind of field.

A spec knows nothing of where its value sits in the file: it returns the typed value or raises
Invalid with the message, and the section reader (sections.py) puts the path in front. Tables of
specs (tables.py) are then all a section needs to say, so a new section is a table, not a method.

An error quotes a value only through ``shown``: an alias bomb's ``repr`` is gigabytes. Patterns
match whole values (``fullmatch``: ``$`` also matches before a trailing newline).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ext_proc.policy.durations import format_duration, parse_duration, shown
from ext_proc.policy.limits import MAX_STATUSES
from ext_proc.protocol.grpc_codes import GRPC_STATUS_CODES

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

_GRPC_CODES = frozenset(GRPC_STATUS_CODES.values())
_STATUS_CLASS_PATTERN = re.compile(r"([1-5])xx", re.ASCII)
_STATUS_CODE_PATTERN = re.compile(r"[0-9]{3}", re.ASCII)


class Invalid(ValueError):
    """A value a spec refuses. A list can be wrong in several places at once, so the problems are
    pairs of a suffix to the field's path (``""`` or ``"[3]"``) and a message, in the order found."""

    def __init__(self, message: str = "", problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [("", message)]


class Spec(Protocol[T_co]):
    def read(self, value: object) -> T_co:
        """The typed value; raise Invalid with a message fit for the operator."""
        ...


@dataclass(frozen=True, slots=True)
class Integer:
    """A whole number from low to high; a bool is not one, though Python says it is an int."""

    low: int
    high: int
    message: str | None = None
    """What to say instead of the generic range message, for a number with a meaning (an HTTP status)."""

    def read(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not self.low <= value <= self.high:
            raise Invalid(self.message or f"must be a whole number from {self.low} to {self.high}, got {shown(value)}")
        return value


@dataclass(frozen=True, slots=True)
class Ratio:
    """A fraction from 0 to 1. Zero is refused unless allowed: a zero failure rate opens on the first call."""

    allow_zero: bool = False

    def read(self, value: object) -> float:
        number = None
        # An int of 309 digits has no float (OverflowError): only ints that can be in range are converted.
        if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool) and -2 < value < 2):
            number = float(value)
        if number is None or not 0.0 <= number <= 1.0 or (number == 0.0 and not self.allow_zero):
            bounds = "from 0 to 1" if self.allow_zero else "between 0 and 1 (above 0, at most 1)"
            raise Invalid(f"must be {bounds}, got {shown(value)}")
        return number


@dataclass(frozen=True, slots=True)
class Duration:
    """A duration string with a unit (durations.py says why a bare number is refused), in seconds."""

    low: float
    high: float

    def read(self, value: object) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if not self.low <= seconds <= self.high:
            low, high = format_duration(self.low), format_duration(self.high)
            raise Invalid(f"must be from {low} to {high}, got {shown(value)}")
        return seconds


@dataclass(frozen=True, slots=True)
class Text:
    """A string matching pattern as a whole, or any string without one. Most text ends up in a header
    value for Envoy, so the message says what is allowed rather than quoting what was not."""

    pattern: re.Pattern[str] | None
    message: str

    def read(self, value: object) -> str:
        if not isinstance(value, str) or (self.pattern is not None and not self.pattern.fullmatch(value)):
            raise Invalid(self.message)
        return value


@dataclass(frozen=True, slots=True)
class OneOf(Generic[T]):
    """One of a few words, as the value it stands for. Exact: a word that differs only in case is
    a typo, and the error lists what was meant."""

    choices: Mapping[str, T]

    def read(self, value: object) -> T:
        if isinstance(value, str) and value in self.choices:
            return self.choices[value]
        raise Invalid(f"must be one of {', '.join(self.choices)}, got {shown(value)}")


@dataclass(frozen=True, slots=True)
class GrpcCode:
    """A gRPC status by name (any case, ASCII only: ``"\u0131nternal".upper()`` is INTERNAL) or number."""

    ok_refused: str | None = None
    """Why OK is refused where it makes no sense; None where it is a code like the others."""

    def read(self, value: object) -> int:
        code: int | None = None
        if isinstance(value, str) and value.isascii():
            code = GRPC_STATUS_CODES.get(value.upper())
        elif isinstance(value, int) and not isinstance(value, bool) and value in _GRPC_CODES:
            code = value
        if code is None:
            raise Invalid(f"unknown gRPC status {shown(value)} (expected a name such as UNAVAILABLE)")
        if code == 0 and self.ok_refused is not None:
            raise Invalid(self.ok_refused)
        return code


@dataclass(frozen=True, slots=True)
class HttpStatus:
    """An HTTP status (100-599) or a class such as 5xx, as the codes it names. ASCII digits only:
    ``int()`` reads full-width 503 too."""

    def read(self, value: object) -> range:
        if isinstance(value, int) and not isinstance(value, bool):
            if 100 <= value <= 599:
                return range(value, value + 1)
        elif isinstance(value, str):
            text = value.strip(" \t").lower()
            if _STATUS_CLASS_PATTERN.fullmatch(text):
                base = int(text[0]) * 100
                return range(base, base + 100)
            if _STATUS_CODE_PATTERN.fullmatch(text) and 100 <= int(text) <= 599:
                return range(int(text), int(text) + 1)
        raise Invalid(f"must be an HTTP status (100-599) or a class such as 5xx, got {shown(value)}")


@dataclass(frozen=True, slots=True)
class CodeSet:
    """A list of status entries as the set of codes they name. The list is bounded before anything
    walks it (an alias repeats a million times cheaply), and every bad entry is reported at its index."""

    entry: Spec[int | range]
    what: str
    """The entries, as "must be a list of ..." names them."""
    refused: tuple[tuple[int, str], ...] = ()
    """Codes the set must not contain, each with its message: a valid entry, wrong in a set."""

    def read(self, value: object) -> frozenset[int]:
        entries = self._bounded(value)
        codes: set[int] = set()
        problems: list[tuple[str, str]] = []
        for index, item in enumerate(entries):
            try:
                found = self.entry.read(item)
            except Invalid as exc:
                problems.extend((f"[{index}]{suffix}", message) for suffix, message in exc.problems)
                continue
            if isinstance(found, range):
                codes.update(found)
            else:
                codes.add(found)
        problems.extend(("", message) for code, message in self.refused if code in codes)
        if problems:
            raise Invalid(problems=problems)
        return frozenset(codes)

    def _bounded(self, value: object) -> list[object]:
        if not isinstance(value, list):
            raise Invalid(f"must be a list of {self.what}")
        if not value:
            # An empty list would make a breaker that never opens on errors, and say nothing.
            raise Invalid(
                "must list at least one status: a breaker with none never opens on errors (omit the key"
                " for the defaults)"
            )
        if len(value) > MAX_STATUSES:
            raise Invalid(f"at most {MAX_STATUSES} entries, got {len(value)}")
        return value
