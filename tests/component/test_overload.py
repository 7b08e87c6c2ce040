"""Limits and shedding through the real gRPC server: answers on the wire, retry headers, and a
count that drops and cancels cannot leak."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingResponse

from tests.component.conftest import Harness, request_headers, response_headers, running, set_headers

POLICY = """
models:
  - name: chat
    match: {path_prefix: /v1/chat/completions}
    overload: {honoured: [critical, standard, sheddable], retry_after: 7}
    tiers:
      - {name: primary, route: chat-primary, limit: {max_inflight: 2}, deadline: 1500ms}
      - {name: light, route: chat-light}
"""
CHAT = "/v1/chat/completions"


@pytest.fixture
async def limited() -> AsyncIterator[Harness]:
    async with running(POLICY) as found:
        yield found


async def hold(harness: Harness, headers: dict[str, str | bytes]) -> tuple[Any, ProcessingResponse]:
    """A request whose answer has not come yet: its stream stays open."""
    call = harness.stub.Process()
    await call.write(request_headers({":path": CHAT, **headers}))
    first = await call.read()
    assert isinstance(first, ProcessingResponse)
    return call, first


def inflight(harness: Harness) -> int:
    limiter = harness.service.registry.get("chat", "primary").limiter
    assert limiter is not None
    return limiter.inflight


async def test_over_the_limit_sheddable_gets_429_standard_steps_down_with_retries_held(limited: Harness) -> None:
    held = [await hold(limited, {}) for _ in range(2)]
    assert [set_headers(first)["x-modelguard-tier"] for _, first in held] == ["primary", "primary"]
    assert "x-envoy-max-retries" not in set_headers(held[0][1])

    first, _ = await limited.exchange({":path": CHAT, "x-request-criticality": "sheddable"}, None)
    answer = first.immediate_response
    assert answer.status.code == 429
    headers = {h.header.key: h.header.raw_value.decode() for h in answer.headers.set_headers}
    assert headers["retry-after"] == "7" and headers["x-modelguard-reason"] == "shed"
    assert json.loads(answer.body)["error"]["code"] == "model_overloaded"  # an OpenAI client's error object

    grpc_first, _ = await limited.exchange(
        {":path": CHAT, "x-request-criticality": "sheddable", "content-type": "application/grpc"}, None
    )
    assert grpc_first.immediate_response.grpc_status.status == 8  # RESOURCE_EXHAUSTED

    stepped, _ = await limited.exchange({":path": CHAT}, 200)
    assert set_headers(stepped) == {
        "x-modelguard-route": "chat-light",
        "x-modelguard-tier": "light",
        "x-modelguard-degraded": "true",
        "x-modelguard-reason": "overload",
        "x-envoy-max-retries": "0",
    }
    critical, _ = await limited.exchange({":path": CHAT, "x-request-criticality": "critical"}, 200)
    assert set_headers(critical)["x-modelguard-tier"] == "primary"  # within critical_share of the limit
    assert set_headers(critical)["x-envoy-upstream-rq-timeout-ms"] == "1500"
    for call, _ in held:
        call.cancel()


async def test_dropped_and_cancelled_streams_give_their_places_back(limited: Harness) -> None:
    held = [await hold(limited, {}) for _ in range(2)]
    assert inflight(limited) == 2
    held[0][0].cancel()  # the client went away: Envoy resets the stream
    await held[1][0].done_writing()  # the stream ends without a response
    assert await held[1][0].read() is grpc.aio.EOF
    for _ in range(100):
        if inflight(limited) == 0:
            break
        await asyncio.sleep(0.01)
    assert inflight(limited) == 0
    answered, _ = await limited.exchange({":path": CHAT}, 200)
    assert set_headers(answered)["x-modelguard-tier"] == "primary"
    assert inflight(limited) == 0


async def test_a_judged_answer_gives_its_place_back_and_metrics_show_the_limit(limited: Harness) -> None:
    call, _ = await hold(limited, {})
    await call.write(response_headers({":status": "200"}))
    assert await call.read() is grpc.aio.EOF
    assert inflight(limited) == 0
    async with aiohttp.ClientSession() as session, session.get(f"{limited.admin_url}/metrics") as response:
        text = await response.text()
    assert 'modelguard_concurrency_limit{model="chat",tier="primary"} 2' in text
    assert 'modelguard_limit_inflight{model="chat",tier="primary"} 0' in text
    async with aiohttp.ClientSession() as session, session.get(f"{limited.admin_url}/v1/state") as response:
        state = await response.json()
    assert state["models"]["chat"]["tiers"]["primary"]["limit"] == {"kind": "static", "limit": 2, "inflight": 0}
