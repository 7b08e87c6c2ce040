"""The time source the decision core is given, so that tests step time instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Seconds from an arbitrary origin that never goes backwards."""

monotonic: Clock = time.monotonic


class ManualClock:
    """A clock that moves only when told to: the core's deterministic tests step it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.now += seconds


wall_clock: Clock = time.time
"""Wall-clock seconds (Unix time): for what people read and what outlives the process (a forced
state's expiry), never for measuring intervals."""
