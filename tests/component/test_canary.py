"""Canary gating in process: the ext_proc stream's arm header, the admin API's canary calls, the
state store across a restart, /v1/canary/<model> (read as the Argo example reads it), metrics,
and ``modelguard ctl canary`` against it."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc

from ext_proc.admin.auth import TokenSource
from ext_proc.api import CALLS, admin_pb2
from ext_proc.core.canary.book import RouteChanged
from ext_proc.core.canary.buckets import Buckets
from ext_proc.core.canary.run import Action, CanaryOrder
from ext_proc.core.clock import ManualClock
from ext_proc.policy import parse_policy
from ext_proc.server.admin_grpc import AdminGrpcSettings
from ext_proc.server.forced import UnusableStore
from ext_proc.server.service import Service
from ext_proc.store import DirectoryStore
from tests.component.conftest import Harness, set_headers
from tests.unit.test_rollout_examples import argo_success

TOKEN = "canary-test-token-0123456789abcdef"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
PATH = "/v2/models/recommender/infer"
POLICY = """
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: rec-v1}
      - {name: light, route: rec-light}
    breaker: {min_calls: 50, failure_rate: 0.9, consecutive_failures: 0, jitter: 0}
    canary:
      route: rec-v2
      weight: 10%
      sticky_header: x-user-id
      guardrails: {min_calls: 20}
  - name: ranker
    match: {path_prefix: /v2/models/ranker}
    tiers: [{name: primary, route: ranker-v1}]
"""
IN_CANARY = [
    key
    for key in (f"user-{i}" for i in range(3000))
    if Buckets("recommender", "rec-v2", random.Random()).of(key) < 1000
]
IN_STABLE = [key for key in (f"user-{i}" for i in range(300)) if key not in IN_CANARY]


@dataclass
class World:
    harness: Harness
    channel: grpc.aio.Channel
    admin_grpc: int
    store_dir: Path

    async def call(self, name: str, request: Any, metadata: tuple[tuple[str, str], ...] = AUTH) -> Any:
        call = CALLS[name]
        stub = self.channel.unary_unary(
            call.path, request_serializer=call.request.SerializeToString, response_deserializer=call.response.FromString
        )
        return await stub(request, metadata=metadata, timeout=5)

    async def serve(self, user: str, status: int = 200) -> dict[str, str]:
        first, _ = await self.harness.exchange({":method": "POST", ":path": PATH, "x-user-id": user}, status)
        self.harness.clock.advance(0.01)
        return set_headers(first)

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.get(self.harness.admin_url + path) as response:
            body = await response.text()
            return response.status, json.loads(body) if path.startswith("/v1") else body


async def start(store_dir: Path) -> tuple[Service, Any]:
    service = Service(parse_policy(POLICY), clock=ManualClock(), rng=random.Random(7), store=DirectoryStore(store_dir))
    tokens = TokenSource({"MODELGUARD_ADMIN_TOKEN": TOKEN})
    ports = await service.start("127.0.0.1:0", "127.0.0.1:0", admin_grpc=AdminGrpcSettings("127.0.0.1:0", tokens))
    return service, ports


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    service, ports = await start(tmp_path / "state")
    ext_proc_channel = grpc.aio.insecure_channel(f"127.0.0.1:{ports.grpc}")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{ports.admin_grpc}")
    assert isinstance(service.registry.clock, ManualClock)
    harness = Harness(
        service, ports, service.registry.clock, ext_proc_channel, ext_proc_grpc.ExternalProcessorStub(ext_proc_channel)
    )
    try:
        yield World(harness, channel, ports.admin_grpc, tmp_path / "state")
    finally:
        await channel.close()
        await ext_proc_channel.close()
        await service.stop(0.2)


def stored(world: World) -> list[dict[str, Any]]:
    path = world.store_dir / "forced-states.json"
    return json.loads(path.read_text())["orders"] if path.exists() else []


async def test_canary_keys_get_the_canary_route_and_the_arm_header_stable_keys_theirs(world: World) -> None:
    canary = await world.serve(IN_CANARY[0])
    stable = await world.serve(IN_STABLE[0])
    assert (canary["x-modelguard-route"], canary["x-modelguard-arm"], canary["x-modelguard-reason"]) == (
        "rec-v2", "canary", "canary",
    )  # fmt: skip
    assert (stable["x-modelguard-route"], stable["x-modelguard-arm"]) == ("rec-v1", "stable")
    other, _ = await world.harness.exchange(
        {":method": "POST", ":path": "/v2/models/ranker/infer", "x-user-id": IN_CANARY[0]}
    )
    assert "x-modelguard-arm" not in set_headers(other)  # no canary, no arm


async def test_a_spoofed_arm_header_is_removed_and_the_key_decides(world: World) -> None:
    first, _ = await world.harness.exchange(
        {":method": "POST", ":path": PATH, "x-user-id": IN_STABLE[0], "x-modelguard-arm": "canary"}, 200
    )
    assert set_headers(first)["x-modelguard-arm"] == "stable"
    assert "x-modelguard-arm" in first.request_headers.response.header_mutation.remove_headers


async def test_the_http_endpoint_metrics_and_the_argo_condition_follow_the_state(world: World) -> None:
    status, body = await world.get("/v1/canary/recommender")
    assert status == 200 and body["state"] == "active" and body["weight"] == 0.1 and argo_success(body)
    status, missing = await world.get("/v1/canary/ranker")
    assert status == 404 and "models with a canary: recommender" in missing["error"]
    await world.call("AbortCanary", admin_pb2.CanaryOrderRequest(model="recommender", reason="drill", caller="t"))
    status, body = await world.get("/v1/canary/recommender")
    assert body["state"] == "aborted" and body["weight"] == 0.0 and not argo_success(body)
    _, metrics = await world.get("/metrics")
    assert 'modelguard_canary_state{model="recommender",state="aborted"} 1.0' in metrics
    assert 'modelguard_canary_weight{model="recommender"} 0.0' in metrics
    assert 'modelguard_breaker_state{model="recommender",state="closed",tier="primary@canary"} 1.0' in metrics


async def test_orders_need_the_token_are_stored_survive_a_restart_and_resume_starts_afresh(
    world: World, tmp_path: Path
) -> None:
    request = admin_pb2.CanaryOrderRequest(model="recommender", reason="bad v2", caller="sre")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await world.call("AbortCanary", request, ())
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    for user in IN_CANARY[:3]:
        await world.serve(user)
    answer = await world.call("AbortCanary", request)
    assert (answer.canary.canary.state, answer.previous_state, answer.warning) == ("aborted", "active", "")
    assert answer.canary.canary.order.reason == "bad v2" and answer.canary.canary.canary.calls == 3
    assert [(o["model"], o["kind"], o["action"]) for o in stored(world)] == [("recommender", "canary", "abort")]
    assert (await world.serve(IN_CANARY[0]))["x-modelguard-arm"] == "stable"

    again, _ = await start(world.store_dir)  # another process reading the same state directory
    try:
        assert again.guard.canaries["recommender"].run.state.value == "aborted"
    finally:
        await again.stop(0.1)

    resumed = await world.call("ResumeCanary", request)
    assert (resumed.canary.canary.state, resumed.canary.canary.canary.calls) == ("active", 0)
    assert stored(world) == []
    assert (await world.serve(IN_CANARY[0]))["x-modelguard-arm"] == "canary"


async def test_weight_and_promote_and_their_refusals(world: World) -> None:
    weight = await world.call("SetCanaryWeight", admin_pb2.CanaryOrderRequest(model="recommender", weight=0.25))
    assert (weight.canary.canary.state, weight.canary.canary.weight) == ("active", 0.25)
    promoted = await world.call("PromoteCanary", admin_pb2.CanaryOrderRequest(model="recommender"))
    assert (promoted.canary.canary.state, promoted.canary.canary.weight) == ("promoted", 1.0)
    assert (await world.serve(IN_STABLE[0]))["x-modelguard-arm"] == "canary"
    for bad in (0.0, 1.5, float("nan"), 0.00001):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await world.call("SetCanaryWeight", admin_pb2.CanaryOrderRequest(model="recommender", weight=bad))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await world.call("AbortCanary", admin_pb2.CanaryOrderRequest(model="ranker"))
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
    assert "models with a canary: recommender" in (unknown.value.details() or "")


async def test_a_guardrail_abort_is_logged_published_and_stored_by_the_next_tick(world: World) -> None:
    events = world.channel.unary_stream(
        CALLS["WatchEvents"].path,
        request_serializer=CALLS["WatchEvents"].request.SerializeToString,
        response_deserializer=CALLS["WatchEvents"].response.FromString,
    )(admin_pb2.WatchEventsRequest(), timeout=10)
    for round_ in range(100):
        for user in IN_STABLE[:9]:
            await world.serve(user)
        await world.serve(IN_CANARY[round_], status=503 if round_ % 2 == 0 else 200)
        if world.harness.service.guard.canaries["recommender"].run.state.value == "aborted":
            break
    run = world.harness.service.guard.canaries["recommender"].run
    assert run.state.value == "aborted" and run.evidence.canary.failures <= 20
    event = await asyncio.wait_for(events.read(), 5)
    change = event.canary_change
    assert (change.to_state, change.caller) == ("aborted", "modelguard")
    assert change.cause.startswith("guardrail failure_rate") and change.canary.canary.failures >= 5
    events.cancel()
    await world.harness.service.orders.tick()
    assert [(o["action"], o["caller"]) for o in stored(world)] == [("abort", "modelguard")]
    await world.harness.service.orders.tick()  # reading the store back does not undo it
    assert run.state.value == "aborted"


async def ctl(world: World, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ext_proc.cli", "ctl", "--address", f"127.0.0.1:{world.admin_grpc}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"MODELGUARD_ADMIN_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert b"Traceback" not in err, err
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_ctl_canary_shows_aborts_weighs_promotes_and_resumes(world: World) -> None:
    for user in IN_CANARY[:2]:
        await world.serve(user, status=503)
    code, out, _ = await ctl(world, "canary")
    assert code == 0 and out.startswith("recommender: active at 10% to rec-v2")
    assert "canary  calls 2  failures 2 (100.00%)" in out and "failures " in out.split("tests")[1]
    code, out, _ = await ctl(world, "canary", "--output", "json")
    assert json.loads(out)["canaries"][0]["canary"]["canary"]["failures"] == "2"
    code, out, _ = await ctl(world, "canary", "abort", "recommender", "--reason", "drill")
    assert (code, out.strip()) == (0, "recommender canary: aborted at 0% (was active)")
    code, out, _ = await ctl(world, "canary", "weight", "recommender", "30%")
    assert (code, out.strip()) == (0, "recommender canary: active at 30% (was aborted)")
    code, out, _ = await ctl(world, "canary", "promote", "recommender")
    assert (code, out.strip()) == (0, "recommender canary: promoted at 100% (was active)")
    code, out, _ = await ctl(world, "canary", "resume", "recommender")
    assert (code, out.strip()) == (0, "recommender canary: active at 10% (was promoted)")
    code, _, err = await ctl(world, "canary", "abort", "ranker")
    assert code == 1 and "models with a canary: recommender" in err
    code, _, err = await ctl(world, "canary", "weight", "recommender", "lots")
    assert code == 2 and "PERCENT" in err


async def test_a_guardrail_abort_the_store_cannot_keep_holds_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = Service(parse_policy(POLICY), clock=ManualClock(), rng=random.Random(7), store=UnusableStore("x", "no"))
    run = service.guard.canaries["recommender"].run
    guard = service.guard
    for round_ in range(200):
        for user in IN_STABLE[:9]:
            guard.record(guard.decide({":method": "POST", ":path": PATH, "x-user-id": user}), 200, None)
        guard.record(
            guard.decide({":method": "POST", ":path": PATH, "x-user-id": IN_CANARY[round_]}),
            503 if round_ % 2 else 200,
            None,
        )
        if run.state.value == "aborted":
            break
    assert run.state.value == "aborted"
    with caplog.at_level("ERROR", logger="modelguard.forced"):
        for _ in range(3):
            await service.orders.tick()
    assert run.state.value == "aborted"
    assert [record.message for record in caplog.records].count(
        "canary abort not saved: no; it holds in this process, not across a restart"
    ) == 1


async def test_an_order_for_a_version_no_longer_live_is_refused_and_leaves_the_store_alone(world: World) -> None:
    service = world.harness.service
    service.use(parse_policy(POLICY.replace("rec-v2", "rec-v3")))
    await world.call("AbortCanary", admin_pb2.CanaryOrderRequest(model="recommender", reason="v3 bad"))
    assert [(o["route"], o["action"]) for o in stored(world)] == [("rec-v3", "abort")]
    stale = CanaryOrder(Action.PROMOTE, "rec-v2", "", "bot", 1.0)
    with pytest.raises(RouteChanged):
        await service.orders.canary("recommender", stale, "bot")
    assert [(o["route"], o["action"]) for o in stored(world)] == [("rec-v3", "abort")]
    assert service.guard.canaries["recommender"].run.state.value == "aborted"
