"""A scrape of /metrics or /v1/state at 1,000 models x 3 tiers must not hold the event loop that
serves the ext_proc streams: a decision held past Envoy's message_timeout (0.2 s) fails open.

A ticker on the same loop measures the longest hold. prometheus_client's generate_latest held it
for 0.5-1 s here; the bounds below are far from both that and the ~2 ms slices of exposition.py,
so the tests tell one from the other even on a slow shared machine. The client shares the loop
too, so it reads the body in pieces and decodes it after measuring."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.policies import policy_with
from ext_proc.app import Ports, Service

MODELS = 1_000
STALL_BOUND_S = 0.1
"""Before: 0.5 s (one scrape), 1 s (two at once). Now: 6-8 ms, on a shared 2-core machine."""
STATE_MODELS = 3_000
STATE_STALL_BOUND_S = 0.05
"""/v1/state is lighter: before, 0.05-0.08 s at 1,000 models, 0.12 s at 3,000. Now: ~7 ms."""
T = TypeVar("T")


@pytest.fixture
async def big_service(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Service, Ports]]:
    service = Service(policy_with(getattr(request, "param", MODELS)))
    try:
        ports = await service.start("127.0.0.1:0", "127.0.0.1:0")
        yield service, ports
    finally:
        await service.stop(0)
        gc.unfreeze()


async def largest_stall(work: Awaitable[T]) -> tuple[T, float]:
    """Run ``work`` on this loop beside a ticker that wakes every millisecond; returns its result
    and the longest the ticker waited between two wake-ups (how long something held the loop)."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    try:
        result = await asyncio.wait_for(work, 60)
    finally:
        done.set()
        await task
    return result, max(gaps)


async def fetch(session: aiohttp.ClientSession, url: str) -> list[bytes]:
    """The body as it came, in pieces: the client shares the loop, and decoding megabytes in one
    go here would be a stall of the test's own making."""
    async with session.get(url) as response:
        assert response.status == 200
        return [chunk async for chunk in response.content.iter_any()]


def text(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode()


def assert_complete_metrics(text: str) -> None:
    found = {family.name: family for family in text_string_to_metric_families(text)}
    tiers = {(s.labels["model"], s.labels["tier"]) for s in found["modelguard_inflight"].samples}
    assert len(tiers) == 2 * MODELS  # primary and light of every model: the respond tier has no breaker
    assert len(found["modelguard_upstream_latency_seconds"].samples) == 2 * MODELS * 15
    assert "process_cpu_seconds" in found and "python_gc_collections" in found


async def test_a_metrics_scrape_does_not_hold_the_loop(big_service: tuple[Service, Ports]) -> None:
    _, ports = big_service
    async with aiohttp.ClientSession() as session:
        body, stall = await largest_stall(fetch(session, f"http://127.0.0.1:{ports.admin}/metrics"))
    assert stall < STALL_BOUND_S, f"the loop was held {stall * 1000:.0f} ms"
    assert_complete_metrics(text(body))


@pytest.mark.parametrize("big_service", [STATE_MODELS], indirect=True)
async def test_a_state_read_does_not_hold_the_loop(big_service: tuple[Service, Ports]) -> None:
    service, ports = big_service
    async with aiohttp.ClientSession() as session:
        body, stall = await largest_stall(fetch(session, f"http://127.0.0.1:{ports.admin}/v1/state"))
    assert stall < STATE_STALL_BOUND_S, f"the loop was held {stall * 1000:.0f} ms"
    assert json.loads(text(body)) == json.loads(json.dumps(service.guard.snapshot()))


async def test_concurrent_scrapes_are_each_complete(big_service: tuple[Service, Ports]) -> None:
    _, ports = big_service
    base = f"http://127.0.0.1:{ports.admin}"
    async with aiohttp.ClientSession() as session:
        reads = asyncio.gather(
            fetch(session, base + "/metrics"), fetch(session, base + "/v1/state"), fetch(session, base + "/metrics")
        )
        (first, state, second), stall = await largest_stall(reads)
    assert stall < STALL_BOUND_S, f"the loop was held {stall * 1000:.0f} ms"
    assert_complete_metrics(text(first))
    assert_complete_metrics(text(second))
    assert len(json.loads(text(state))["models"]) == MODELS
