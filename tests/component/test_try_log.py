"""The access log service on modelguard's gRPC port: Envoy's failed tries, judged as they come."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from envoy.config.core.v3.base_pb2 import RequestMethod
from envoy.data.accesslog.v3.accesslog_pb2 import HTTPAccessLogEntry
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from ext_proc.server.tries import logged_try
from tests.component.conftest import REC_PATH, Harness


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
    if code:
        found.response.response_code.value = code
    return found


def test_an_entry_reads_as_the_core_needs_it() -> None:
    tried = logged_try(entry("10.0.0.1", code=0, path="/v2/models/recommender-light/infer"))
    assert (tried.host, tried.status, tried.cluster, tried.tier) == (
        "10.0.0.1:8000",
        504,
        "recommender-resnet50",
        "primary",
    )
    assert tried.headers[":method"] == "POST" and abs(tried.latency - 0.012) < 1e-9
    rewritten = entry("::1")
    rewritten.request.original_path = REC_PATH
    rewritten.request.path = "/v2/models/recommender-light/infer"
    assert logged_try(rewritten).headers[":path"] == REC_PATH  # the client's path: the model matches
    assert logged_try(rewritten).host == "[::1]:8000"
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
