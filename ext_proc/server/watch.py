"""Noticing that the policy file changed, so ``modelguard serve`` can reload it by itself.

It polls ``stat`` rather than using inotify: inotify watches inodes, and the common ways a policy
file changes replace the inode the path resolves to (a Kubernetes ConfigMap update swaps the
``..data`` symlink to a new directory; ``os.replace`` renames a new file over the old), so an
inotify watch silently goes deaf after the first update unless it re-arms itself on the right
directory, and it does not fire at all on network volumes. Two ``stat`` calls a second cost
microseconds, need no dependency, and see every kind of change on every filesystem, because they
compare what the path resolves to now with what it resolved to before.

A change is reported only once it has settled (the same new signature on two consecutive polls),
so an editor or a ``>`` redirection caught halfway through writing is not loaded half-written.
A file that disappears is not a change: a ConfigMap swap or a rename can leave a moment with no
file, and keeping the current policy is the right answer to that, not an empty one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

POLL_INTERVAL = 0.5  # seconds: a change is seen, settled and reported within about two polls
MAX_UNSETTLED_POLLS = 10
"""Polls a file may keep changing on before it is reported anyway (5 s)."""

Signature = tuple[int, int, int, int, int]
StatFn = Callable[[str], os.stat_result]

log = logging.getLogger("modelguard.reload")


class ChangeDetector:
    """Polled by hand: ``poll()`` is True exactly once for each settled change of the file at ``path``.

    The signature is ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)`` of the file the path
    resolves to (``stat`` follows symlinks). The one at construction is the baseline. A new
    signature is reported when it is seen on two consecutive polls; one that keeps moving (a write
    in progress) is not, unless it has kept moving for ``MAX_UNSETTLED_POLLS`` polls in a row: a
    file rewritten more often than the polls (a tool that keeps touching it) is then read anyway,
    since a reload validates what it reads and skips bytes it already runs. A missing or
    unreadable file is never a change: it sets ``missing``, which the next successful poll clears;
    a file coming back with a different signature is a change.
    """

    def __init__(self, path: str | os.PathLike[str], stat: StatFn = os.stat) -> None:
        self.path = os.fspath(path)
        self._stat = stat
        self._current = self._signature()
        self._pending: Signature | None = None
        self._moving = 0
        self.missing = self._current is None

    def _signature(self) -> Signature | None:
        try:
            st = self._stat(self.path)
        except OSError:  # FileNotFoundError, PermissionError, a dangling symlink, a stale NFS handle
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def poll(self) -> bool:
        """Stat the file once; True if a change has just settled (and not again for the same change)."""
        seen = self._signature()
        self.missing = seen is None
        if seen is None or seen == self._current:
            self._pending, self._moving = None, 0
            return False
        if seen != self._pending and self._moving + 1 < MAX_UNSETTLED_POLLS:
            self._pending = seen  # first sighting, or still moving: wait for it to hold still
            self._moving += 1
            return False
        self._current, self._pending, self._moving = seen, None, 0
        return True


async def watch(
    path: str | os.PathLike[str],
    on_change: Callable[[], Awaitable[object]],
    interval: float = POLL_INTERVAL,
    *,
    detector: ChangeDetector | None = None,
) -> None:
    """Poll ``path`` every ``interval`` seconds until cancelled; await ``on_change()`` for each settled change.

    Never raises but ``CancelledError``: a failing ``on_change`` is logged (``policy_watch_failed``)
    and watching goes on. A missing file is logged once per disappearance (``policy_file_missing``)
    and the current policy is kept. Pass a ``detector`` for ``path`` made before the policy was
    read, so that a change between reading the policy and starting this task is not lost.
    """
    detector = detector if detector is not None else ChangeDetector(path)
    where = os.fspath(path)
    reported_missing = False
    while True:
        await asyncio.sleep(interval)
        try:
            changed = detector.poll()
            if detector.missing and not reported_missing:
                log.warning(
                    "policy file missing, keeping the current policy",
                    extra={"event": "policy_file_missing", "path": where},
                )
            reported_missing = detector.missing
            if changed:
                await on_change()
        except Exception:
            log.exception(
                "reacting to a policy file change failed", extra={"event": "policy_watch_failed", "path": where}
            )
