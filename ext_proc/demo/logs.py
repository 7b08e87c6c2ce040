"""What the demo reads back from modelguard's JSON log: breaker transitions and canary changes,
with their wall-clock times, so the timeline shows what modelguard did and said why."""

from __future__ import annotations

import contextlib
import json
import time
from calendar import timegm
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ext_proc.demo import report
from ext_proc.demo.canary import CanaryChange, from_log


def entries(log_path: Path, event: str) -> Iterator[tuple[float, dict[str, Any]]]:
    """Each JSON line of ``event`` and its time; other lines, and lines that do not parse, are
    skipped (the log also holds non-JSON lines from the interpreter, e.g. at a crash)."""
    if not log_path.exists():
        return
    marker = f'"{event}"'
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if marker not in line:
            continue
        found: tuple[float, dict[str, Any]] | None = None
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == event:
                found = epoch(entry["ts"]), entry
        if found is not None:
            yield found


def read_transitions(log_path: Path) -> list[report.Transition]:
    """Breaker transitions from modelguard's JSON log, with their wall-clock times."""
    found: list[report.Transition] = []
    for t, entry in entries(log_path, "breaker_transition"):
        with contextlib.suppress(KeyError):
            found.append(
                report.Transition(
                    t=t,
                    model=entry["model"],
                    tier=entry["tier"],
                    from_state=entry["from_state"],
                    to_state=entry["to_state"],
                    cause=entry["cause"],
                )
            )
    return found


def read_canary_changes(log_path: Path) -> list[CanaryChange]:
    """Canary state and weight changes (``canary_changed``) from modelguard's JSON log."""
    found: list[CanaryChange] = []
    for t, entry in entries(log_path, "canary_changed"):
        with contextlib.suppress(KeyError, ValueError, TypeError, AttributeError):
            found.append(from_log(t, entry))
    return found


def epoch(stamp: str) -> float:
    """The log's UTC timestamp (2026-11-21T05:55:02.134Z) as seconds since the epoch."""
    base, _, millis = stamp.rstrip("Z").partition(".")
    return timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + int(millis or 0) / 1000
