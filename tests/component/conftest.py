"""An in-process modelguard (real grpc.aio server on 127.0.0.1, free ports) and a real gRPC client."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from envoy.service.ext_proc.v3.external_processor_pb2 import (
    HttpHeaders,
    ProcessingRequest,
    ProcessingResponse,
)

from ext_proc.core.clock import ManualClock
from ext_proc.policy import parse_policy
from ext_proc.server.service import Ports, Service

POLICY = """
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: recommender-resnet50}
      - {name: light, route: recommender-mobilenet}
      - name: default
        respond: {status: 200, content_type: application/json, body: '{"items": [], "degraded": true}'}
    breaker: {window: 10s, min_calls: 4, failure_rate: 0.5, consecutive_failures: 0, open_duration: 2s,
              max_open_duration: 8s, half_open_probes: 2, jitter: 0}
  - name: ranker
    match: {authority: ranker.models}
    tiers:
      - {name: primary, route: ranker-v1}
    breaker: {consecutive_failures: 2}
"""

REC_PATH = "/v2/models/recommender/infer"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
ROUTE = "x-modelguard-route"


def serve_command(*args: str, policy: Path = EXAMPLE) -> list[str]:
    """``modelguard serve`` as a separate process, with this interpreter."""
    return [sys.executable, "-m", "ext_proc.cli", "serve", "--policy", str(policy), *args]


def header_map(headers: dict[str, str | bytes]) -> HeaderMap:
    return HeaderMap(
        headers=[
            HeaderValue(key=key, raw_value=value if isinstance(value, bytes) else value.encode())
            for key, value in headers.items()
        ]
    )


def request_headers(headers: dict[str, str | bytes], end_of_stream: bool = True) -> ProcessingRequest:
    """Request headers as Envoy sends them: with a ``:method`` (POST, an inference call's, unless given)."""
    with_method: dict[str, str | bytes] = {":method": "POST", **headers}
    return ProcessingRequest(request_headers=HttpHeaders(headers=header_map(with_method), end_of_stream=end_of_stream))


def response_headers(
    headers: dict[str, str | bytes], end_of_stream: bool = False, host: str | None = None
) -> ProcessingRequest:
    """Response headers; with ``host``, the ``upstream.address`` attribute Envoy sends with them."""
    message = ProcessingRequest(response_headers=HttpHeaders(headers=header_map(headers), end_of_stream=end_of_stream))
    if host is not None:
        message.attributes["envoy.filters.http.ext_proc"].fields["upstream.address"].string_value = host
    return message


def set_headers(response: ProcessingResponse, phase: str = "request_headers") -> dict[str, str]:
    mutation = getattr(response, phase).response.header_mutation
    return {option.header.key: option.header.raw_value.decode() for option in mutation.set_headers}


@dataclass
class Harness:
    service: Service
    ports: Ports
    clock: ManualClock
    channel: grpc.aio.Channel
    stub: ext_proc_grpc.ExternalProcessorStub

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.admin}"

    async def exchange(
        self,
        headers: dict[str, str | bytes],
        status: int | None = 200,
        extra: dict[str, str | bytes] | None = None,
        host: str | None = None,
    ) -> tuple[ProcessingResponse, ProcessingResponse | None]:
        """One HTTP request's stream, as Envoy drives it: request headers, then (unless status is
        None, or modelguard ended the stream with its first answer) response headers. Returns the
        request-phase answer and the response-phase answer (None when modelguard ended the stream
        instead of answering).

        Asserts who ends the stream: modelguard itself once it has nothing left to do (after an
        unrouted or immediate answer, or on judging the response), Envoy's half-close otherwise
        (no response, or a gRPC answer whose grpc-status is still to come in trailers)."""
        call = self.stub.Process()
        await call.write(request_headers(headers))
        first = await call.read()
        assert isinstance(first, ProcessingResponse)
        if first.HasField("immediate_response") or ROUTE not in set_headers(first):
            assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF, "modelguard keeps a stream it has no use for"
            return first, None
        second: ProcessingResponse | None = None
        if status is not None:
            sent = {":status": str(status), **(extra or {})}
            await call.write(response_headers(sent, host=host))
            awaits_trailers = "grpc-status" not in sent and str(sent.get("content-type", "")).startswith(
                "application/grpc"
            )
            if not awaits_trailers:
                assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF, "judged, yet the stream stays open"
                return first, None
            answer = await call.read()
            assert isinstance(answer, ProcessingResponse)
            second = answer
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        return first, second

    async def request(self, status: int = 200, path: str = REC_PATH, host: str | None = None) -> tuple[str, str]:
        """Send one request for the recommender; returns (tier, reason) as set on the request."""
        first, _ = await self.exchange({":path": path, ":authority": "gw"}, status, host=host)
        if first.HasField("immediate_response"):
            tier = {h.header.key: h.header.raw_value.decode() for h in first.immediate_response.headers.set_headers}
            return tier["x-modelguard-tier"], tier["x-modelguard-reason"]
        found = set_headers(first)
        return found["x-modelguard-tier"], found["x-modelguard-reason"]


@contextlib.asynccontextmanager
async def running(policy: str) -> AsyncIterator[Harness]:
    """A service of ``policy`` on a fake clock, and a client of it; stopped on the way out."""
    clock = ManualClock()
    service = Service(parse_policy(policy), clock=clock, rng=random.Random(7))
    ports = await service.start("127.0.0.1:0", "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{ports.grpc}")
    try:
        yield Harness(service, ports, clock, channel, ext_proc_grpc.ExternalProcessorStub(channel))
    finally:
        await channel.close()
        await service.stop(0.5)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with running(POLICY) as found:
        yield found
