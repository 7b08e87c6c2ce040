"""Wire answers are built on first use, kept per decision, and bounded."""

from __future__ import annotations

import random

import pytest
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.service.ext_proc.v3.external_processor_pb2 import HttpHeaders, ProcessingRequest, ProcessingResponse

from ext_proc.core.guard import Guard
from ext_proc.core.registry import StateRegistry
from ext_proc.policy import parse_policy
from ext_proc.server import servicer as servicer_module
from ext_proc.server.servicer import ExtProcServicer, Plan

POLICY = """
models:
  - name: a
    match: {path_prefix: /a}
    tiers: [{name: primary, route: a-primary}, {name: default, respond: {status: 200, body: '{}'}}]
  - name: b
    match: {path_prefix: /b}
    tiers: [{name: primary, route: b-primary}]
"""


def request(path: str) -> ProcessingRequest:
    headers = HeaderMap(
        headers=[HeaderValue(key=":method", raw_value=b"POST"), HeaderValue(key=":path", raw_value=path.encode())]
    )
    return ProcessingRequest(request_headers=HttpHeaders(headers=headers, end_of_stream=True))


def route_of(answer: bytes) -> str:
    mutation = ProcessingResponse.FromString(answer).request_headers.response.header_mutation
    found: dict[str, str] = {o.header.key: o.header.raw_value.decode() for o in mutation.set_headers}
    return found.get("x-modelguard-route", "")


def make() -> tuple[ExtProcServicer, Plan]:
    servicer = ExtProcServicer(Guard(parse_policy(POLICY), StateRegistry(rng=random.Random(1))))
    return servicer, servicer.plan


def test_nothing_is_built_before_it_is_used_then_kept() -> None:
    servicer, plan = make()
    assert plan.answers == {}
    ticket, answer, _ = servicer._decide(plan, request("/a/infer"))
    assert route_of(answer) == "a-primary"
    assert list(plan.answers) == [ticket.decision]
    kept = plan.answers[ticket.decision]
    servicer._decide(plan, request("/a/versions/2/infer"))
    assert plan.answers[ticket.decision] is kept and len(plan.answers) == 1


def test_the_cache_is_bounded_and_answers_stay_right(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servicer_module, "MAX_CACHED_ANSWERS", 2)
    servicer, plan = make()
    for path, route in [
        ("/a/infer", "a-primary"),
        ("/b/infer", "b-primary"),
        ("/zzz", ""),
        ("/a/infer", "a-primary"),
    ] * 3:
        _, answer, _ = servicer._decide(plan, request(path))
        assert route_of(answer) == route
        assert len(plan.answers) <= 2
