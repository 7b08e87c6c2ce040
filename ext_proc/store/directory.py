"""The embedded state store: one JSON file in a state directory (``--state-dir``).

Writes are atomic: the new content goes to a temporary file in the same directory, is flushed
and fsync'ed, then renamed over the old file, and the directory is fsync'ed, so that a crash or
``kill -9`` at any moment leaves either the old file or the new one, never half of one. Workers of
one ``--workers`` supervisor share the directory: a write takes an exclusive lock (``flock`` on a
lock file beside it), reads what is there, changes one tier's record and writes, so two workers
writing at once keep both changes.

A file that cannot be parsed is logged and ignored (no orders read from it), and moved aside
(``forced-states.json.corrupt-<time>``) by the next write rather than overwritten, so nobody's
evidence is destroyed; a record that cannot be read is logged and skipped, and the others kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ext_proc.store.base import Order, StoreError, TierKey, order_from_record, order_to_record

log = logging.getLogger("modelguard.store")

FILE_NAME = "forced-states.json"
LOCK_NAME = ".lock"
MAX_FILE_BYTES = 4 * 1024 * 1024
FORMAT_VERSION = 1
STATE_DIR_ENV = "MODELGUARD_STATE_DIR"


def default_state_dir(environ: os._Environ[str] | dict[str, str] = os.environ) -> Path:
    """``$MODELGUARD_STATE_DIR``, else the per-user state directory of the XDG base directory
    specification (``$XDG_STATE_HOME/modelguard``, by default ``~/.local/state/modelguard``). In a
    container, point ``--state-dir`` at a mounted volume instead."""
    if environ.get(STATE_DIR_ENV):
        return Path(environ[STATE_DIR_ENV])
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "modelguard"


class _Corrupt(ValueError):
    pass


class DirectoryStore:
    """A ``StateStore`` in a directory of the local filesystem (or a mounted volume)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self._lock_path = self.directory / LOCK_NAME
        self._last: dict[TierKey, Order] = {}
        """What this process last read or wrote: what a write puts back when the file is corrupt."""
        self._unreadable: list[object] = []
        """Records of the file it could not read, written back as they were (not its to drop)."""

    @property
    def where(self) -> str:
        return str(self.directory)

    def prepare(self) -> None:
        """Make the directory (owner-only) and check it is writable: StoreError saying why not."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            with self._locked(exclusive=False):
                pass
        except OSError as exc:
            raise StoreError(f"state directory {self.directory}: {exc.strerror or exc}") from exc
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise StoreError(f"state directory {self.directory}: not writable")

    def version(self) -> object:
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return (found.st_ino, found.st_size, found.st_mtime_ns)

    def load(self) -> dict[TierKey, Order] | None:
        if not self.directory.is_dir() or not self.path.exists():
            return None  # nothing to read (never written, or moved away): what is in force stays
        try:
            with self._locked(exclusive=False):
                return self._read()
        except _Corrupt as exc:
            log.error("state file ignored: %s", exc, extra={"event": "state_file_ignored", "path": str(self.path)})
            return None
        except OSError as exc:
            log.error(
                "state file unreadable, ignored: %s",
                exc.strerror or exc,
                extra={"event": "state_file_ignored", "path": str(self.path)},
            )
            return None

    def save(self, key: TierKey, order: Order | None, replacing: Order | None = None) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # made at start, unless since removed
            with self._locked(exclusive=True):
                try:
                    orders = self._read()
                except _Corrupt as exc:
                    self._move_aside(exc)
                    orders = dict(self._last)  # not {}: the other tiers' orders must not vanish
                if replacing is not None and orders.get(key) != replacing:
                    return
                if order is None:
                    if orders.pop(key, None) is None:
                        return
                else:
                    orders[key] = order
                self._write(orders)
        except OSError as exc:
            raise StoreError(f"cannot write the state file {self.path}: {exc.strerror or exc}") from exc

    # -- the file ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        descriptor = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def _read(self) -> dict[TierKey, Order]:
        try:
            descriptor = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return {}
        with os.fdopen(descriptor, "rb") as file:
            found = os.fstat(file.fileno())
            if not stat.S_ISREG(found.st_mode) or found.st_size > MAX_FILE_BYTES:
                raise _Corrupt(f"not a regular file of at most {MAX_FILE_BYTES} bytes")
            data = file.read(MAX_FILE_BYTES + 1)
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise _Corrupt(f"not JSON ({str(exc)[:200]})") from None
        if not isinstance(document, dict) or not isinstance(document.get("orders"), list):
            raise _Corrupt('not an object with an "orders" list')
        orders: dict[TierKey, Order] = {}
        self._unreadable = []
        for index, record in enumerate(document["orders"]):
            try:
                key, order = order_from_record(record)
            except (ValueError, OverflowError) as exc:
                self._unreadable.append(record)
                log.error(
                    "state record skipped: %s",
                    exc,
                    extra={"event": "state_record_skipped", "path": str(self.path), "index": index},
                )
                continue
            orders[key] = order
        self._last = dict(orders)
        return orders

    def _write(self, orders: dict[TierKey, Order]) -> None:
        document = {
            "version": FORMAT_VERSION,
            "orders": [*(order_to_record(key, order) for key, order in sorted(orders.items())), *self._unreadable],
        }
        data = json.dumps(document, indent=1).encode()
        descriptor, temporary = tempfile.mkstemp(prefix=".forced-", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
            self._last = dict(orders)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        directory = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _move_aside(self, why: _Corrupt) -> None:
        aside = self.path.with_name(f"{FILE_NAME}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(self.path, aside)
        log.error(
            "state file could not be read (%s); moved aside to %s and started afresh",
            why,
            aside,
            extra={"event": "state_file_moved_aside", "path": str(self.path), "aside": str(aside)},
        )
