"""Names an error lists: bounded, since a gRPC status message must fit in its metadata."""

from __future__ import annotations

from collections.abc import Iterable

from ext_proc.policy.durations import shown

MAX_LISTED = 20
"""Names an error lists at most (a gRPC status message must fit in its metadata, ~8 KB)."""


def listed(names: Iterable[str]) -> str:
    names = list(names)
    shown_names = ", ".join(shown(name) if len(name) > 60 else name for name in names[:MAX_LISTED]) or "(none)"
    return shown_names if len(names) <= MAX_LISTED else f"{shown_names} and {len(names) - MAX_LISTED} more"
