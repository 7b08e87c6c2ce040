"""Parsing of the human duration strings the policy file uses (``500ms``, ``10s``, ``1m``).

Bare numbers are refused: ``window: 10`` is ambiguous between seconds and milliseconds,
and guessing wrong by a factor of 1000 is the kind of surprise a breaker must not have.
Digits are ASCII only: ``float()`` would read full-width ``10s`` (U+FF11 U+FF10) as 10 s, and a value that
looks like one number to one tool and another to the next has no place in a policy.
"""

from __future__ import annotations

import re
import reprlib

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)\s*", re.ASCII)

_SHOWN_CHARS = 60
_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxstring = _SHOWN_CHARS
_REPR.maxother = _SHOWN_CHARS
_REPR.maxlong = _SHOWN_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 4


def parse_duration(text: object) -> float:
    """Return seconds for a duration string; raise ValueError with a message fit for users."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"must be a duration string with a unit such as 500ms, 10s or 1m, got {shown(text)}")
    match = _PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(f"must be a duration such as 500ms, 10s or 1m, got {shown(text)}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    """Inverse of parse_duration, for logs and the state endpoint."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def shown(value: object) -> str:
    """A value as an error message quotes it: repr-like, at most 60 characters.

    A YAML alias bomb is a few kilobytes of text that expands to billions of references;
    ``repr()`` of it walks every one. reprlib stops at a bounded depth and width, so an error
    about such a value costs microseconds and a line, not gigabytes.
    """
    text = _REPR.repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
