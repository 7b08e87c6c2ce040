"""Parsing of the human duration strings the policy file uses (``500ms``, ``10s``, ``1m``).

Bare numbers are refused: ``window: 10`` is ambiguous between seconds and milliseconds,
and guessing wrong by a factor of 1000 is the kind of surprise a breaker must not have.
"""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")


def parse_duration(text: object) -> float:
    """Return seconds for a duration string; raise ValueError with a message fit for users."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"must be a duration string with a unit such as 500ms, 10s or 1m, got {text!r}")
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(f"must be a duration such as 500ms, 10s or 1m, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    """Inverse of parse_duration, for logs and the state endpoint."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"
