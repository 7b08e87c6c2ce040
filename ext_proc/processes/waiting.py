"""Bounded waiting: poll until something is there, or give up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T | None:
    """Call `probe` until it returns something other than None or False, for at most `timeout` s.

    Returns that value, or None on timeout. `probe` is always called at least once; exceptions
    from it propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(interval, remaining))
