"""What a gRPC health check gets while modelguard drains, measured rather than assumed.

Service.stop reports NOT_SERVING (enter_graceful_shutdown) and then calls grpc.aio's
server.stop(grace), which closes the listener at once and sends GOAWAY on every open connection:
from then on no new RPC, health checks included, reaches the servicer, on any connection. Only
Health.Watch streams opened before the drain hear NOT_SERVING. Pinned here so that the README's
description of the drain cannot drift from what clients (Envoy's health checker) really see.
"""

from __future__ import annotations

import asyncio

import aiohttp
import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.component.conftest import REC_PATH, Harness, request_headers

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GRACE = 3.0


async def check(channel: grpc.aio.Channel) -> int:
    answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    return int(answer.status)


async def refused_check(channel: grpc.aio.Channel, within: float) -> grpc.aio.AioRpcError:
    """The error of the first health check that fails within ``within`` seconds (bounded poll: the
    client learns of the drain from the server's GOAWAY, a moment after stop() began)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            answered = await check(channel)
        except grpc.aio.AioRpcError as exc:
            return exc
        assert answered != NOT_SERVING, "a Check answered NOT_SERVING during the drain"
        assert asyncio.get_running_loop().time() < deadline, "health checks still answered during the drain"
        await asyncio.sleep(0.05)


async def test_health_check_while_draining_is_unavailable_on_old_and_new_connections(harness: Harness) -> None:
    assert await check(harness.channel) == SERVING
    watch = health_pb2_grpc.HealthStub(harness.channel).Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == SERVING
    held = harness.stub.Process()  # a request waiting for its response: it keeps the drain going
    await held.write(request_headers({":path": REC_PATH, ":authority": "gw"}, end_of_stream=False))
    await held.read()
    loop = asyncio.get_running_loop()
    began = loop.time()
    stopping = asyncio.create_task(harness.service.stop(GRACE))
    try:
        assert (await asyncio.wait_for(watch.read(), 2)).status == NOT_SERVING  # watchers are told
        async with aiohttp.ClientSession() as session, session.get(harness.admin_url + "/readyz") as response:
            assert response.status == 503  # the admin port stays up, not ready, for the whole drain

        on_existing = await refused_check(harness.channel, within=2.0)
        assert on_existing.code() == grpc.StatusCode.UNAVAILABLE
        assert "Connection refused" in str(on_existing.details())  # GOAWAY, then a new connection: refused
        async with grpc.aio.insecure_channel(f"127.0.0.1:{harness.ports.grpc}") as fresh:
            on_new = await refused_check(fresh, within=0.0)
            assert on_new.code() == grpc.StatusCode.UNAVAILABLE
            assert "Connection refused" in str(on_new.details())
        new_stream = ext_proc_grpc.ExternalProcessorStub(harness.channel).Process()
        try:
            await new_stream.write(request_headers({":path": REC_PATH, ":authority": "gw"}))
            await new_stream.read()
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
        assert await new_stream.code() == grpc.StatusCode.UNAVAILABLE  # new ext_proc streams too

        assert not stopping.done() and not held.done(), "the drain should still be holding the in-flight stream"
    finally:
        await asyncio.wait_for(stopping, GRACE + 5)
    assert loop.time() - began >= GRACE - 0.5  # the held stream and the Watch kept it to the full grace
    assert await held.code() == grpc.StatusCode.UNAVAILABLE  # cut at the end of the grace
    assert await watch.code() == grpc.StatusCode.UNAVAILABLE
