"""Long work on the event loop, done in slices that give the loop back.

The admin site and a policy reload share the event loop with the ext_proc streams, and a
decision that waits more than Envoy's ``message_timeout`` (0.2 s) fails open. Rendering /metrics
for 1,000 models, or building the guard of a 10,000-model policy, takes far longer than that in
one go; drawn through ``slices``, no decision waits for more than about one slice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

SLICE_SECONDS = 0.002
"""How long one slice may run before the loop gets a turn."""

T = TypeVar("T")


async def slices(items: Iterable[T], budget: float = SLICE_SECONDS) -> AsyncIterator[list[T]]:
    """``items`` drawn (the work happens as they are drawn) in batches of about ``budget`` seconds
    each, the loop getting a turn after each batch is handed over; the last batch may be empty."""
    batch: list[T] = []
    deadline = time.perf_counter() + budget
    for item in items:
        batch.append(item)
        if time.perf_counter() >= deadline:
            yield batch
            batch = []
            await asyncio.sleep(0)
            deadline = time.perf_counter() + budget
    yield batch
