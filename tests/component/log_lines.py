"""A child process's JSON log lines, read by a thread, so that every wait on them has a deadline
(a bare readline() blocks for as long as the process stays silent)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

Entry = dict[str, Any]


class LogLines:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        self._stream = process.stderr
        self._entries: list[Entry] = []
        self._ended = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, name="log-lines", daemon=True).start()

    def _read(self) -> None:
        for line in self._stream:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"raw": line}  # a traceback, say: kept, so that a failing test shows it
            with self._changed:
                self._entries.append(entry if isinstance(entry, dict) else {"raw": line})
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    @property
    def entries(self) -> list[Entry]:
        with self._changed:
            return list(self._entries)

    def wait_for(self, predicate: Callable[[Entry], bool], timeout: float, count: int = 1) -> list[Entry]:
        """The first ``count`` entries that satisfy ``predicate``; AssertionError past ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [entry for entry in self._entries if predicate(entry)]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0 or self._ended:
                    raise AssertionError(f"{count} matching log line(s) not seen; got {self._entries}")
                self._changed.wait(left)

    def event(self, name: str, timeout: float, count: int = 1) -> list[Entry]:
        return self.wait_for(lambda entry: entry.get("event") == name, timeout, count)
