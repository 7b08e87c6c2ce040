"""Answers modelguard gives itself speak the client's protocol: KServe v2, OpenAI, gRPC; with Retry-After."""

from __future__ import annotations

import json
import random

import pytest
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.service.ext_proc.v3.external_processor_pb2 import HttpHeaders, ProcessingRequest, ProcessingResponse

from ext_proc.core.clock import ManualClock
from ext_proc.core.guard import Guard
from ext_proc.core.registry import StateRegistry
from ext_proc.policy import PolicyError, parse_policy
from ext_proc.server.servicer import ExtProcServicer

POLICY = """
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: rec-primary}
      - {name: default, respond: {status: 503}}
    breaker: {consecutive_failures: 1, open_duration: 2500ms}
  - name: chat
    match: {path_prefix: /chat}
    tiers: [{name: primary, route: chat-primary}]
    breaker: {consecutive_failures: 1}
  - name: forced-openai
    match: {header: {name: x-model, value: forced}}
    protocol: openai
    tiers: [{name: primary, route: forced-primary}, {name: default, respond: {status: 429, body: 'slow down'}}]
    breaker: {consecutive_failures: 1}
"""


def answer(servicer: ExtProcServicer, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes, int]:
    """(HTTP status, headers, body, gRPC status) of the request-phase answer, which must be immediate."""
    request = ProcessingRequest(
        request_headers=HttpHeaders(
            headers=HeaderMap(headers=[HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()])
        )
    )
    _ticket, wire, last = servicer._decide(servicer.plan, request)
    immediate = ProcessingResponse.FromString(wire).immediate_response
    assert last and immediate.status.code, "not an immediate answer"
    found = {h.header.key: h.header.raw_value.decode() for h in immediate.headers.set_headers}
    return immediate.status.code, found, immediate.body, immediate.grpc_status.status


@pytest.fixture
def servicer() -> ExtProcServicer:
    guard = Guard(parse_policy(POLICY), StateRegistry(ManualClock(), random.Random(1)))
    for path, extra in (
        ("/v2/models/recommender/infer", {}),
        ("/chat/v1/chat/completions", {}),
        ("/x/infer", {"x-model": "forced"}),
    ):
        ticket = guard.decide({":method": "POST", ":path": path, **extra})
        guard.record(ticket, 503, None)  # one failure opens each first tier
    return ExtProcServicer(guard)


def test_a_kserve_client_gets_a_string_error_with_retry_after(servicer: ExtProcServicer) -> None:
    status, headers, body, _ = answer(servicer, {":method": "POST", ":path": "/v2/models/recommender/infer"})
    assert status == 503 and headers["retry-after"] == "3"  # the first open period, rounded up
    error = json.loads(body)["error"]
    assert isinstance(error, str) and "recommender" in error
    assert headers["content-type"] == "application/json" and headers["x-modelguard-tier"] == "default"


def test_an_openai_client_gets_an_error_object(servicer: ExtProcServicer) -> None:
    status, headers, body, _ = answer(servicer, {":method": "POST", ":path": "/chat/v1/chat/completions"})
    error = json.loads(body)["error"]
    assert status == 503 and headers["retry-after"] == "5"
    assert error["type"] == "server_error" and error["code"] == "model_unavailable" and "chat" in error["message"]


def test_a_grpc_client_gets_a_status(servicer: ExtProcServicer) -> None:
    _status, headers, body, grpc_status = answer(
        servicer, {":method": "POST", ":path": "/v2/models/recommender/infer", "content-type": "application/grpc"}
    )
    assert grpc_status == 14 and headers["retry-after"] == "3"  # UNAVAILABLE
    assert b"recommender" in body


def test_the_protocol_setting_wins_and_a_policy_body_is_kept(servicer: ExtProcServicer) -> None:
    status, headers, body, _ = answer(servicer, {":method": "POST", ":path": "/x/infer", "x-model": "forced"})
    assert (status, body) == (429, b"slow down")  # the policy's own body, as written
    assert headers["retry-after"] == "5"


def test_a_bad_protocol_is_named() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy("models: [{name: m, match: {path_prefix: /m}, tiers: [{name: t, route: r}], protocol: grpc}]")
    assert caught.value.errors == ["models[0].protocol: must be one of auto, kserve, openai, got 'grpc'"]
