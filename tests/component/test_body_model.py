"""The model named in an OpenAI-style body, through the real server: Envoy is asked for the body only
when no header matched and the path is such an API's; every other request is answered on its headers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3.external_processor_pb2 import HttpBody, ProcessingRequest, ProcessingResponse

from tests.component.conftest import Harness, request_headers, response_headers, running, set_headers

POLICY = """
models:
  - name: chat
    match: {body_model: llama-3}
    tiers:
      - {name: primary, route: chat-primary}
      - {name: light, route: chat-light}
  - name: small
    match: {body_model: tiny}
    tiers:
      - {name: only, route: small-v2, model: tiny-v2}
  - name: kserve
    match: {path_prefix: /v2/models/kserve}
    tiers:
      - {name: primary, route: kserve-primary}
"""
CHAT: dict[str, str | bytes] = {":path": "/v1/chat/completions", "content-type": "application/json"}


@pytest.fixture
async def bodies() -> AsyncIterator[Harness]:
    async with running(POLICY) as found:
        yield found


def body(document: object) -> ProcessingRequest:
    return ProcessingRequest(request_body=HttpBody(body=json.dumps(document).encode(), end_of_stream=True))


async def read(call: Any) -> ProcessingResponse:
    answer = await asyncio.wait_for(call.read(), 5)
    assert isinstance(answer, ProcessingResponse)
    return answer


async def test_the_body_names_the_model_and_the_tier_is_set_on_the_body_answer(bodies: Harness) -> None:
    call = bodies.stub.Process()
    await call.write(request_headers({**CHAT, "x-modelguard-route": "forged"}, end_of_stream=False))
    asked = await read(call)
    assert asked.mode_override.request_body_mode == ProcessingMode.BUFFERED
    assert asked.request_headers.response.header_mutation.remove_headers == ["x-modelguard-route"]
    assert not asked.request_headers.response.header_mutation.set_headers
    await call.write(body({"messages": [{"role": "user", "content": "hi"}], "model": "llama-3"}))
    routed = await read(call)
    assert set_headers(routed, "request_body") == {
        "x-modelguard-route": "chat-primary",
        "x-modelguard-tier": "primary",
        "x-modelguard-reason": "ok",
    }
    assert routed.request_body.response.clear_route_cache
    await call.write(response_headers({":status": "200"}))
    assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF
    registry = bodies.service.registry
    assert registry.get("chat", "primary").outcomes["success"] == 1
    assert bodies.service.guard.unmatched.count == 0  # counted as the model's, not as unmatched


async def test_a_tier_serving_the_model_under_another_name_gets_the_body_renamed(bodies: Harness) -> None:
    call = bodies.stub.Process()
    await call.write(request_headers(CHAT, end_of_stream=False))
    await read(call)
    sent = b'{"model" :\n "tiny", "prompt": "model: tiny"}'
    await call.write(ProcessingRequest(request_body=HttpBody(body=sent, end_of_stream=True)))
    routed = await read(call)
    renamed = routed.request_body.response.body_mutation.body
    assert renamed == b'{"model" :\n "tiny-v2", "prompt": "model: tiny"}'
    assert set_headers(routed, "request_body")["content-length"] == str(len(renamed))
    assert set_headers(routed, "request_body")["x-modelguard-route"] == "small-v2"
    call.cancel()


async def test_a_body_naming_no_known_model_passes_through(bodies: Harness) -> None:
    raws = [
        b'{"model": "other"}',
        b'{"model": "llama-3", "messages": [',
        b'["x"]',
        b'{"model": "llama-3", "model": "x"}',
    ]
    for raw in raws:
        call = bodies.stub.Process()
        await call.write(request_headers(CHAT, end_of_stream=False))
        assert (await read(call)).HasField("mode_override")
        await call.write(ProcessingRequest(request_body=HttpBody(body=raw, end_of_stream=True)))
        passed = await read(call)
        assert passed.HasField("request_body") and not passed.request_body.response.HasField("header_mutation")
        assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF  # nothing more to do on it
    assert bodies.service.guard.unmatched.count == len(raws)


async def test_other_requests_are_decided_on_their_headers_alone(bodies: Harness) -> None:
    first, _ = await bodies.exchange({":path": "/v2/models/kserve/infer"}, 200)
    assert not first.HasField("mode_override") and set_headers(first)["x-modelguard-route"] == "kserve-primary"
    others: list[dict[str, str | bytes]] = [
        {":path": "/v1/models"},
        {":path": "/v1/chat/completions", ":method": "GET"},
    ]
    for headers in others:
        call = bodies.stub.Process()
        await call.write(request_headers(headers, end_of_stream=False))
        answer = await read(call)
        assert not answer.HasField("mode_override")
    call = bodies.stub.Process()
    await call.write(request_headers(CHAT, end_of_stream=True))  # no body coming: nothing to wait for
    assert not (await read(call)).HasField("mode_override")


async def test_without_body_models_no_body_is_ever_asked_for(harness: Harness) -> None:
    call = harness.stub.Process()
    await call.write(request_headers(CHAT, end_of_stream=False))
    answer = await read(call)
    assert not answer.HasField("mode_override")
