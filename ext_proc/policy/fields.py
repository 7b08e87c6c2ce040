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
from ext_proc.policy.limits import MAX_SERVED_NAME, MAX_STATUSES
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
class DurationOrAuto:
    """A duration, or the word ``auto`` (read as ``auto``: the caller's marker for it)."""

    duration: Duration
    auto: float

    def read(self, value: object) -> float:
        if value == "auto":
            return self.auto
        try:
            return self.duration.read(value)
        except Invalid as exc:
            raise Invalid(f"{exc} (or auto)") from None


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


@dataclass(frozen=True, slots=True)
class Flag:
    """true or false, written as such (YAML's yes/no/on/off are read as booleans by the loader too)."""

    def read(self, value: object) -> bool:
        if not isinstance(value, bool):
            raise Invalid(f"must be true or false, got {shown(value)}")
        return value


@dataclass(frozen=True, slots=True)
class Number:
    """A finite number from low to high (a bool is not one)."""

    low: float
    high: float

    def read(self, value: object) -> float:
        number = None
        if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53):
            number = float(value)
        if number is None or not self.low <= number <= self.high:  # NaN fails both comparisons
            raise Invalid(f"must be a number from {self.low:g} to {self.high:g}, got {shown(value)}")
        return number


_PERCENT_PATTERN = re.compile(r"([0-9]{1,3}(?:\.[0-9]{1,2})?)%", re.ASCII)


@dataclass(frozen=True, slots=True)
class Percent:
    """A share written as a percentage (``5%``, ``0.5%``), as hundredths of a percent: a bare
    number is refused, since 5 could mean 5% or 500%."""

    low: int
    """In hundredths of a percent (1 = 0.01%)."""
    high: int = 10_000

    def read(self, value: object) -> int:
        found = _PERCENT_PATTERN.fullmatch(value.strip(" ")) if isinstance(value, str) else None
        hundredths = round(float(found.group(1)) * 100) if found else -1
        if not self.low <= hundredths <= self.high:
            low, high = f"{self.low / 100:g}%", f"{self.high / 100:g}%"
            raise Invalid(f"must be a percentage from {low} to {high} such as 5%, got {shown(value)}")
        return hundredths


_HEADER_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_\-]{0,127}")


@dataclass(frozen=True, slots=True)
class HeaderName:
    """A request header modelguard reads, lowercased as Envoy passes it; ASCII first, since
    str.lower() maps the Kelvin sign to k. Never a pseudo-header or modelguard's own headers,
    which Envoy removes from what clients send."""

    def read(self, value: object) -> str:
        if not isinstance(value, str) or not value.isascii() or not _HEADER_NAME_PATTERN.fullmatch(value.lower()):
            raise Invalid("required: a header name such as x-model (at most 128 characters)")
        if value.lower().startswith("x-modelguard-"):
            raise Invalid("must not be a pseudo-header or an x-modelguard-* header")
        return value.lower()


HEADER_VALUE = Text(  # a request header never carries control characters or surrounding spaces
    re.compile(r"[^\x00-\x20\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,1022}[^\x00-\x20\x7f-\x9f])?"),
    "required: the exact header value, at most 1024 characters, without control characters or surrounding spaces",
)
ROUTE = Text(  # an HTTP header value for Envoy
    re.compile(r"[A-Za-z0-9_.:/\-]{1,128}"),
    "must be 1-128 characters of letters, digits, '_', '.', ':', '/', '-'",
)
SERVED_MODEL = Text(  # one path segment, spelled into a rewritten :path; never '.' or '..'
    re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.\-]{{0,{MAX_SERVED_NAME - 1}}}"),
    f"must be the model's name on the tier's servers: 1-{MAX_SERVED_NAME} characters of letters, digits, '_',"
    " '.', '-', starting with a letter or digit",
)


@dataclass(frozen=True, slots=True)
class TextSet:
    """A short non-empty list of strings, each read by ``entry``, as a set."""

    entry: Text
    most: int

    def read(self, value: object) -> frozenset[str]:
        if not isinstance(value, list) or not value or len(value) > self.most:
            raise Invalid(f"must be a list of 1 to {self.most} values")
        problems: list[tuple[str, str]] = []
        found: set[str] = set()
        for index, item in enumerate(value):
            try:
                found.add(self.entry.read(item))
            except Invalid as exc:
                problems.extend((f"[{index}]{suffix}", message) for suffix, message in exc.problems)
        if problems:
            raise Invalid(problems=problems)
        return frozenset(found)
