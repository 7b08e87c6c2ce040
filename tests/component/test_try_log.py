"""The access log service on modelguard's gRPC port: Envoy's failed tries, judged as they come."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from envoy.config.core.v3.base_pb2 import RequestMethod
from envoy.data.accesslog.v3.accesslog_pb2 import HTTPAccessLogEntry
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from ext_proc.server.tries import ENTRIES_PER_TURN, logged_try
from tests.component.conftest import REC_PATH, Harness, request_headers, response_headers


def entry(
    host: str, code: int = 503, cluster: str = "recommender-resnet50", path: str = REC_PATH
) -> HTTPAccessLogEntry:
    found = HTTPAccessLogEntry()
    found.common_properties.upstream_cluster = cluster
    found.common_properties.upstream_remote_address.socket_address.address = host
    found.common_properties.upstream_remote_address.socket_address.port_value = 8000
    found.common_properties.duration.FromMilliseconds(12)
    found.request.request_method = RequestMethod.POST
    found.request.path = path
    found.request.authority = "gw"
    found.request.request_headers["x-modelguard-tier"] = "primary"
    found.request.request_headers["x-modelguard-route"] = "recommender-resnet50"
    if code:
        found.response.response_code.value = code
    return found


def test_an_entry_reads_as_the_core_needs_it() -> None:
    tried = logged_try(entry("10.0.0.1", code=0, path="/v2/models/recommender-light/infer"))
    assert (tried.host, tried.status, tried.cluster, tried.tier, tried.route) == (
        "10.0.0.1:8000",
        504,
        "recommender-resnet50",
        "primary",
        "recommender-resnet50",
    )
    assert tried.headers[":method"] == "POST" and abs(tried.latency - 0.012) < 1e-9
    spoofed = entry("::1")
    spoofed.request.original_path = "/v2/models/other/infer"  # x-envoy-original-path: the client's to set
    assert logged_try(spoofed).headers[":path"] == REC_PATH
    assert logged_try(spoofed).host == "[::1]:8000"
    assert logged_try(HTTPAccessLogEntry()).host == ""  # an empty entry reads, and names nothing


async def test_failed_tries_open_the_breaker_while_clients_see_answers(harness: Harness) -> None:
    stub = als_pb2_grpc.AccessLogServiceStub(harness.channel)
    sent: asyncio.Queue[als_pb2.StreamAccessLogsMessage | None] = asyncio.Queue()

    async def messages() -> AsyncIterator[als_pb2.StreamAccessLogsMessage]:
        while (message := await sent.get()) is not None:
            yield message

    call = stub.StreamAccessLogs(messages())
    registry = harness.service.registry
    first = als_pb2.StreamAccessLogsMessage()
    first.identifier.log_name = "modelguard-failed-tries"
    await sent.put(first)
    for _ in range(100):
        if registry.tries_logged:
            break
        await asyncio.sleep(0.01)
    assert registry.tries_logged
    for index in range(4):  # each call's primary try failed, Envoy retried it elsewhere and it answered
        await harness.request(200, host=f"10.0.1.{index}:8000")  # (attempts 1 here: judged as a success)
    batch = als_pb2.StreamAccessLogsMessage()
    for index in range(4):
        batch.http_logs.log_entry.append(entry(f"10.0.0.{index % 2}"))
    batch.http_logs.log_entry.append(HTTPAccessLogEntry())  # names no model: ignored, the stream goes on
    await sent.put(batch)
    primary = registry.get("recommender", "primary")
    for _ in range(200):
        if primary.breaker.state.value == "open":
            break
        await asyncio.sleep(0.01)
    assert primary.breaker.state.value == "open"
    assert harness.service.tries.tries == {"counted": 4, "ignored": 1, "error": 0}
    await sent.put(None)
    await call
    assert not registry.tries_logged and harness.service.tries.streams == 0


async def one_call(harness: Harness, status: int, host: str, declares: bool, attempts: int = 1) -> None:
    metadata = (("x-modelguard-try-log", "on"),) if declares else ()
    call = harness.stub.Process(metadata=metadata)
    await call.write(request_headers({":path": REC_PATH, ":authority": "gw"}))
    await call.read()
    answer = response_headers({":status": str(status)}, host=host)
    answer.attributes["envoy.filters.http.ext_proc"].fields["upstream.request_attempt_count"].number_value = attempts
    await call.write(answer)
    assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF


async def test_only_an_envoy_that_says_it_logs_leaves_its_failures_to_the_log(harness: Harness) -> None:
    """An access log stream is open, but from someone else: the failures of an Envoy whose ext_proc
    stream does not say it logs its tries still count from its answers."""
    stub = als_pb2_grpc.AccessLogServiceStub(harness.channel)
    gate: asyncio.Event = asyncio.Event()

    async def idle() -> AsyncIterator[als_pb2.StreamAccessLogsMessage]:
        yield als_pb2.StreamAccessLogsMessage()
        await gate.wait()

    log_call = stub.StreamAccessLogs(idle())
    registry = harness.service.registry
    for _ in range(100):
        if registry.tries_logged:
            break
        await asyncio.sleep(0.01)
    primary = registry.get("recommender", "primary")
    await one_call(harness, 503, "10.0.0.1:8000", declares=False)
    assert primary.breaker.figures().failures == 1, "counted from the answer: this Envoy logs nothing"
    await one_call(harness, 503, "10.0.0.1:8000", declares=True)
    assert primary.breaker.figures().failures == 1, "left to the log, which this Envoy says it sends"
    await one_call(harness, 200, "10.0.0.1:8000", declares=True, attempts=2)  # a retry on a known host
    assert primary.breaker.figures().calls == 2
    gate.set()
    await log_call
    assert not registry.tries_logged


async def test_a_huge_batch_is_judged_in_turns_and_whole(harness: Harness) -> None:
    """Past ENTRIES_PER_TURN the stream yields to the loop between chunks: every entry is still read,
    and ext_proc streams are answered meanwhile."""
    stub = als_pb2_grpc.AccessLogServiceStub(harness.channel)
    batch = als_pb2.StreamAccessLogsMessage()
    for _ in range(3 * ENTRIES_PER_TURN + 7):
        batch.http_logs.log_entry.append(HTTPAccessLogEntry())

    async def messages() -> AsyncIterator[als_pb2.StreamAccessLogsMessage]:
        yield batch

    call = stub.StreamAccessLogs(messages())
    assert await harness.request(200) == ("primary", "ok")
    await call
    assert harness.service.tries.tries["ignored"] == 3 * ENTRIES_PER_TURN + 7
