"""A scrape of /metrics or /v1/state at 1,000 models x 3 tiers must not hold the event loop that
serves the ext_proc streams: a decision held past Envoy's message_timeout (0.2 s) fails open.

A ticker on the same loop measures the longest hold. prometheus_client's generate_latest held it
for 0.5-1 s here; the bounds below are far from both that and the ~2 ms slices of exposition.py,
so the tests tell one from the other even on a slow shared machine. The client shares the loop
too, so it reads the body in pieces and decodes it after measuring."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.policies import policy_with
from ext_proc.admin import bodies
from ext_proc.server.service import Ports, Service

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


def assert_complete_metrics(text: str, models: int = MODELS) -> None:
    found = {family.name: family for family in text_string_to_metric_families(text)}
    tiers = {(s.labels["model"], s.labels["tier"]) for s in found["modelguard_inflight"].samples}
    assert len(tiers) == 2 * models  # primary and light of every model: the respond tier has no breaker
    assert len(found["modelguard_upstream_latency_seconds"].samples) == 2 * models * 15
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


async def raw_get(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A GET whose answer nobody reads yet: the body backs up into the socket buffers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, as a scraper that gives up mid-body does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_readers_that_leave_mid_body_are_not_errors(
    big_service: tuple[Service, Ports], caplog: pytest.LogCaptureFixture
) -> None:
    _, ports = big_service
    caplog.set_level(logging.DEBUG)
    for path in ("/metrics", "/v1/state") * 5:
        reader, writer = await raw_get(ports.admin, path)
        assert (await reader.read(1000)).startswith(b"HTTP/1.1 200")
        reset(writer)
    await asyncio.sleep(0.5)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert sum(getattr(r, "event", None) == "admin_reader_gone" for r in caplog.records) >= 1
    async with aiohttp.ClientSession() as session:
        assert_complete_metrics(text(await fetch(session, f"http://127.0.0.1:{ports.admin}/metrics")))


async def stall(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A /metrics read that takes nothing: once its body fills the socket buffers, sending stalls."""
    return await raw_get(port, "/metrics")


async def bytes_received(reader: asyncio.StreamReader) -> int:
    received = 0
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(1 << 20), 5):
            received += len(chunk)
    return received


@pytest.mark.parametrize("big_service", [STATE_MODELS], indirect=True)
async def test_a_full_house_of_stalled_readers_gives_way_to_a_new_one(
    big_service: tuple[Service, Ports], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ports = big_service
    monkeypatch.setattr(bodies, "MAX_BODIES", 1)
    url = f"http://127.0.0.1:{ports.admin}/metrics"
    stalled_reader, stalled = await stall(ports.admin)  # 13 MB that nobody reads
    async with aiohttp.ClientSession() as session:
        await asyncio.sleep(0.3)
        async with session.get(url) as busy:  # the one slot is busy, not (yet) stalled for a second
            assert busy.status == 503 and busy.headers["Retry-After"] == "1"
        await asyncio.sleep(bodies.STALLED_AFTER + 1.0)
        assert_complete_metrics(text(await fetch(session, url)), STATE_MODELS)  # takes the stalled one's slot
    assert any(getattr(r, "event", None) == "admin_reader_evicted" for r in caplog.records)
    assert await bytes_received(stalled_reader) < 13_000_000, "the stalled reader got the whole body after all"
    stalled.close()


@pytest.mark.parametrize("big_service", [STATE_MODELS], indirect=True)
async def test_a_reader_idle_past_the_timeout_is_cut_off(
    big_service: tuple[Service, Ports], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ports = big_service
    monkeypatch.setattr(bodies, "SEND_IDLE_TIMEOUT", 1.0)
    stalled_reader, stalled = await stall(ports.admin)
    await asyncio.sleep(2.5)
    assert any(getattr(r, "event", None) == "admin_reader_too_slow" for r in caplog.records)
    assert await bytes_received(stalled_reader) < 13_000_000
    stalled.close()


async def test_a_slow_reader_that_keeps_reading_gets_everything(
    big_service: tuple[Service, Ports], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ports = big_service
    monkeypatch.setattr(bodies, "SEND_IDLE_TIMEOUT", 0.5)  # per write, not for the whole body
    reader, writer = await raw_get(ports.admin, "/metrics")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length, received = int(lengths[0]), 0
    while received < length:
        chunk = await asyncio.wait_for(reader.read(256 * 1024), 5)
        assert chunk, f"cut off after {received} of {length} bytes"
        received += len(chunk)
        await asyncio.sleep(0.1)  # the whole body takes far longer than 0.5 s to read
    writer.close()


async def test_the_admin_grpc_state_of_3000_models_never_holds_the_loop_long() -> None:
    from ext_proc.admin.auth import TokenSource
    from ext_proc.api import CALLS, admin_pb2
    from ext_proc.server.admin_grpc import AdminGrpcSettings

    service = Service(policy_with(STATE_MODELS))
    try:
        ports = await service.start(
            "127.0.0.1:0", "127.0.0.1:0", admin_grpc=AdminGrpcSettings("127.0.0.1:0", TokenSource({}))
        )
        call = CALLS["GetState"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports.admin_grpc}") as channel:
            stub = channel.unary_unary(call.path, call.request.SerializeToString, call.response.FromString)
            answer, stall = await largest_stall(stub(admin_pb2.GetStateRequest(), timeout=30))
        assert len(answer.models) == STATE_MODELS
        assert stall < STALL_BOUND_S, f"the loop was held {stall * 1000:.0f} ms"  # in one go: ~150 ms
    finally:
        await service.stop(0)
        gc.unfreeze()
