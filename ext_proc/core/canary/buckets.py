"""Sticky, monotone assignment: a key's bucket depends on the model, the canary's route and the
key alone, so the same key always gets the same arm at a given weight, a key in the canary at 5%
stays in it at 10%, and a new version (another route) draws a fresh sample of keys.

The hash is BLAKE2b (stable across processes, restarts and workers, unlike Python's ``hash``),
seeded once per canary so that a request pays one copy and one update (about 0.6 µs).
"""

from __future__ import annotations

import hashlib
import random

from ext_proc.policy import BUCKETS

MAX_KEY_BYTES = 1024
"""Bytes of a key that are hashed: a 60 KB header must not cost 60 KB of hashing. Keys longer than
this that share their first kilobyte share an arm."""


class Buckets:
    """The bucket of a key for one canary: ``bucket < weight`` means canary."""

    __slots__ = ("_rng", "_seeded")

    def __init__(self, model: str, route: str, rng: random.Random) -> None:
        self._seeded = hashlib.blake2b(f"{model}\x00{route}\x00".encode(), digest_size=8)
        self._rng = rng

    def of(self, key: str | None) -> int:
        """Key None (no sticky header, no request id): a draw of its own for this request."""
        if key is None:
            return self._rng.randrange(BUCKETS)
        hashed = self._seeded.copy()
        hashed.update(key.encode("utf-8", "surrogateescape")[:MAX_KEY_BYTES])
        return int.from_bytes(hashed.digest(), "big") % BUCKETS
