"""A demo model server's capacity: a bounded pool of workers and a bounded queue in front of it.

A GPU serves a few calls at once; the rest wait, and a real server refuses calls once its queue is
full. So each inference call takes a worker for its whole service time (the base latency, the
fault's, the model itself); while every worker is busy it waits in the queue, so latency grows
with load as it does on a real server (queueing: the M/G/c hockey stick); past ``queue`` waiting
calls it is answered 429 with a Retry-After at once. ``workers`` 0 is no limit (every call runs at
once: the demo's other scenes). The queue depth is published on the server's ``/metrics``, as
vLLM's ``num_requests_waiting`` or Triton's queue figures are.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

RETRY_AFTER_S = 1
"""The Retry-After of a call refused with a full queue."""


class Capacity:
    __slots__ = ("_free", "queue", "refused", "running", "waiting", "workers")

    def __init__(self, workers: int = 0, queue: int = 0) -> None:
        if workers < 0 or queue < 0:
            raise ValueError(f"workers and queue must be 0 or more, got {workers} and {queue}")
        self.workers = workers
        self.queue = queue
        self.running = 0
        self.waiting = 0
        self.refused = 0
        self._free = asyncio.Semaphore(workers) if workers else None

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[bool]:
        """Hold a worker for the body of the ``async with``; yields False (and holds nothing) when
        the queue is full: the call must be refused."""
        free = self._free
        if free is None:
            self.running += 1
            try:
                yield True
            finally:
                self.running -= 1
            return
        if free.locked() and self.waiting >= self.queue:
            self.refused += 1
            yield False
            return
        self.waiting += 1
        try:
            await free.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield True
        finally:
            self.running -= 1
            free.release()

    def metrics(self, host_id: str) -> str:
        """Prometheus text of the server's load, labelled with its host id."""
        label = f'{{host="{host_id}"}}'
        return "".join(
            (
                "# HELP demo_model_queue_depth Inference calls waiting for a worker.\n",
                "# TYPE demo_model_queue_depth gauge\n",
                f"demo_model_queue_depth{label} {self.waiting}\n",
                "# HELP demo_model_running Inference calls a worker is serving.\n",
                "# TYPE demo_model_running gauge\n",
                f"demo_model_running{label} {self.running}\n",
                "# HELP demo_model_workers Workers of the server (0: no limit).\n",
                "# TYPE demo_model_workers gauge\n",
                f"demo_model_workers{label} {self.workers}\n",
                "# HELP demo_model_refused_total Inference calls refused with a full queue.\n",
                "# TYPE demo_model_refused_total counter\n",
                f"demo_model_refused_total{label} {self.refused}\n",
            )
        )
