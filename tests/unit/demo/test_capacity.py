"""The demo model server's workers and queue: calls wait for a worker, a full queue refuses."""

from __future__ import annotations

import asyncio

from ext_proc.demo.capacity import Capacity


async def test_calls_wait_for_a_worker_and_a_full_queue_refuses() -> None:
    capacity = Capacity(workers=2, queue=1)
    release = asyncio.Event()
    outcomes: list[bool] = []

    async def call() -> None:
        async with capacity.slot() as running:
            outcomes.append(running)
            if running:
                await release.wait()

    tasks = [asyncio.create_task(call()) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert (capacity.running, capacity.waiting) == (2, 1)
    await call()  # the queue is full: refused at once
    assert outcomes == [True, True, False] and capacity.refused == 1
    assert "demo_model_queue_depth" in capacity.metrics("primary-1")
    assert 'demo_model_queue_depth{host="primary-1"} 1\n' in capacity.metrics("primary-1")
    release.set()
    await asyncio.gather(*tasks)
    assert outcomes == [True, True, False, True]
    assert (capacity.running, capacity.waiting) == (0, 0)


async def test_without_workers_every_call_runs_at_once() -> None:
    capacity = Capacity()
    release = asyncio.Event()

    async def call() -> None:
        async with capacity.slot() as running:
            assert running
            await release.wait()

    tasks = [asyncio.create_task(call()) for _ in range(50)]
    await asyncio.sleep(0.01)
    assert capacity.running == 50 and capacity.waiting == 0
    release.set()
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    capacity = Capacity(workers=1, queue=5)
    release = asyncio.Event()

    async def call() -> None:
        async with capacity.slot():
            await release.wait()

    holder = asyncio.create_task(call())
    waiter = asyncio.create_task(call())
    await asyncio.sleep(0.01)
    assert capacity.waiting == 1
    waiter.cancel()
    await asyncio.sleep(0.01)
    assert capacity.waiting == 0
    release.set()
    await holder
    assert capacity.running == 0
