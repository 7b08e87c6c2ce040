"""The admin gRPC API in process: the real server on 127.0.0.1, a real gRPC client."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ext_proc.admin.auth import TokenSource
from ext_proc.api import CALLS, admin_pb2
from ext_proc.core.clock import ManualClock
from ext_proc.core.forcing import ForceMode, ForceOrder
from ext_proc.policy import parse_policy
from ext_proc.server.admin_grpc import AdminGrpcSettings
from ext_proc.server.forced import UnusableStore
from ext_proc.server.service import Ports, Service
from ext_proc.store import DirectoryStore, StateStore
from tests.component.conftest import POLICY, Harness

TOKEN = "s3cret-token-for-tests-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


@dataclass
class Admin:
    harness: Harness
    store_dir: Path
    channel: grpc.aio.Channel
    port: int

    async def call(self, name: str, request: Any, metadata: tuple[tuple[str, str], ...] = AUTH) -> Any:
        call = CALLS[name]
        stub = self.channel.unary_unary(
            call.path, request_serializer=call.request.SerializeToString, response_deserializer=call.response.FromString
        )
        return await stub(request, metadata=metadata, timeout=5)

    async def force(self, mode: Any, tier: str = "primary", **fields: Any) -> Any:
        request = admin_pb2.ForceStateRequest(model="recommender", tier=tier, mode=mode, caller="tester", **fields)
        return await self.call("ForceState", request)

    async def state(self, tier: str = "primary") -> Any:
        answer = await self.call("GetState", admin_pb2.GetStateRequest(model="recommender"), ())
        return next(t for t in answer.models[0].tiers if t.name == tier)


async def start_admin(
    store: StateStore, environ: dict[str, str] | None = None, token_file: Path | None = None
) -> tuple[Service, Ports, int]:
    """A service with its admin gRPC port; the token is TOKEN unless ``environ`` says otherwise."""
    service = Service(parse_policy(POLICY), clock=ManualClock(), rng=random.Random(7), store=store)
    tokens = TokenSource({"MODELGUARD_ADMIN_TOKEN": TOKEN} if environ is None else environ, token_file)
    ports = await service.start("127.0.0.1:0", "127.0.0.1:0", admin_grpc=AdminGrpcSettings("127.0.0.1:0", tokens))
    assert ports.admin_grpc is not None
    return service, ports, ports.admin_grpc


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    service, ports, admin_port = await start_admin(DirectoryStore(tmp_path / "state"))
    ext_proc_channel = grpc.aio.insecure_channel(f"127.0.0.1:{ports.grpc}")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{admin_port}")
    assert isinstance(service.registry.clock, ManualClock)
    stub = ext_proc_grpc.ExternalProcessorStub(ext_proc_channel)
    harness = Harness(service, ports, service.registry.clock, ext_proc_channel, stub)
    try:
        yield Admin(harness, tmp_path / "state", channel, admin_port)
    finally:
        await channel.close()
        await ext_proc_channel.close()
        await service.stop(0.2)


async def test_get_state_shows_every_tier_and_refuses_an_unknown_model(admin: Admin) -> None:
    answer = await admin.call("GetState", admin_pb2.GetStateRequest(), ())
    assert [model.name for model in answer.models] == ["recommender", "ranker"]
    tiers = {tier.name: tier.state for tier in answer.models[0].tiers}
    assert tiers == {"primary": "closed", "light": "closed", "default": "respond"}
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin.call("GetState", admin_pb2.GetStateRequest(model="nope"), ())
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    assert "models: recommender, ranker" in (refused.value.details() or "")


async def test_force_open_moves_traffic_is_stored_shown_and_counted(admin: Admin) -> None:
    assert await admin.harness.request() == ("primary", "ok")
    answer = await admin.force(admin_pb2.FORCED_OPEN, reason="gpu node hot")
    assert (answer.tier.state, answer.previous_state, answer.warning) == ("forced_open", "closed", "")
    assert answer.tier.forced.reason == "gpu node hot" and answer.tier.forced.caller.startswith("tester (")
    assert await admin.harness.request() == ("light", "forced")
    stored = json.loads((admin.store_dir / "forced-states.json").read_text())["orders"]
    assert [(o["model"], o["tier"], o["mode"]) for o in stored] == [("recommender", "primary", "forced_open")]
    async with aiohttp.ClientSession() as session:
        async with session.get(admin.harness.admin_url + "/metrics") as response:
            metrics = await response.text()
        async with session.get(admin.harness.admin_url + "/v1/state") as response:
            state = await response.json()
    assert 'modelguard_breaker_state{model="recommender",state="forced_open",tier="primary"} 1.0' in metrics
    changes = "modelguard_forced_state_changes_total"
    assert changes + '{model="recommender",state="forced_open",tier="primary"} 1.0' in metrics
    assert 'modelguard_requests_total{model="recommender",reason="forced",tier="light"} 1.0' in metrics
    primary = state["models"]["recommender"]["tiers"]["primary"]
    assert primary["state"] == "forced_open" and primary["forced"]["reason"] == "gpu node hot"
    await admin.force(admin_pb2.AUTO)
    assert await admin.harness.request() == ("primary", "ok")
    assert json.loads((admin.store_dir / "forced-states.json").read_text())["orders"] == []


async def test_forced_closed_admits_and_shows_what_the_breaker_would_do(admin: Admin) -> None:
    await admin.force(admin_pb2.FORCED_CLOSED)
    for _ in range(6):
        assert (await admin.harness.request(status=503))[0] == "primary"
    tier = await admin.state()
    assert (tier.state, tier.breaker_state, tier.would_open) == ("forced_closed", "closed", "failure_rate")
    assert (tier.window.calls, tier.window.failures) == (6, 6)


@pytest.mark.parametrize(
    ("metadata", "code", "words"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED, "needs 'authorization: Bearer <token>'"),
        ((("authorization", "Bearer wrong-token-wrong-token"),), grpc.StatusCode.UNAUTHENTICATED, "not the one"),
        ((("authorization", f"Basic {TOKEN}"),), grpc.StatusCode.UNAUTHENTICATED, "needs"),
    ],
)
async def test_changes_need_the_token(
    admin: Admin, metadata: tuple[tuple[str, str], ...], code: Any, words: str
) -> None:
    for name, request in (
        ("ForceState", admin_pb2.ForceStateRequest(model="recommender", tier="primary", mode=admin_pb2.FORCED_OPEN)),
        ("ResetBreaker", admin_pb2.ResetBreakerRequest(model="recommender", tier="primary")),
        ("ReloadPolicy", admin_pb2.ReloadPolicyRequest()),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin.call(name, request, metadata)
        assert refused.value.code() is code and words in (refused.value.details() or "")
        assert TOKEN not in (refused.value.details() or "")
    assert (await admin.state()).state == "closed"


async def test_with_no_token_configured_changes_are_refused_saying_how(tmp_path: Path) -> None:
    service, _, port = await start_admin(DirectoryStore(tmp_path), environ={})
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = CALLS["ForceState"]
            stub = channel.unary_unary(call.path, call.request.SerializeToString, call.response.FromString)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub(
                    admin_pb2.ForceStateRequest(model="recommender", tier="primary", mode=admin_pb2.FORCED_OPEN),
                    metadata=AUTH,
                )
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "MODELGUARD_ADMIN_TOKEN" in (refused.value.details() or "")
    finally:
        await service.stop(0)


async def test_a_rotated_token_file_is_read_again(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    service, _, port = await start_admin(DirectoryStore(tmp_path / "s"), environ={}, token_file=token_file)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = CALLS["ResetBreaker"]
            stub = channel.unary_unary(call.path, call.request.SerializeToString, call.response.FromString)
            request = admin_pb2.ResetBreakerRequest(model="recommender", tier="primary")
            await stub(request, metadata=AUTH)
            rotated = "rotated-token-0123456789abcdef"
            token_file.write_text(rotated)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub(request, metadata=AUTH)
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            await stub(request, metadata=(("authorization", f"Bearer {rotated}"),))
            token_file.write_text("short")  # a bad rotation keeps the last good token
            await stub(request, metadata=(("authorization", f"Bearer {rotated}"),))
    finally:
        await service.stop(0)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"mode": admin_pb2.FORCE_UNSPECIFIED}, "mode must be"),
        ({"mode": admin_pb2.AUTO, "duration": {"seconds": 5}}, "AUTO takes no duration"),
        ({"mode": admin_pb2.FORCED_OPEN, "duration": {"seconds": -5}}, "duration must be above 0"),
        ({"mode": admin_pb2.FORCED_OPEN, "duration": {"seconds": 400 * 86400}}, "at most 366 days"),
        ({"mode": admin_pb2.FORCED_OPEN, "tier": "default"}, "its routed tiers: primary, light"),
        ({"mode": admin_pb2.FORCED_OPEN, "model": "nope"}, "models: recommender, ranker"),
    ],
)
async def test_requests_that_cannot_mean_anything_are_refused(admin: Admin, fields: dict[str, Any], words: str) -> None:
    request = admin_pb2.ForceStateRequest(model="recommender", tier="primary")
    for name, value in fields.items():
        if name == "duration":
            request.duration.seconds = value["seconds"]
        else:
            setattr(request, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin.call("ForceState", request)
    assert words in (refused.value.details() or "")
    assert refused.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)


async def test_an_expiry_hands_the_tier_back_and_clears_the_store(admin: Admin) -> None:
    request = admin_pb2.ForceStateRequest(model="recommender", tier="primary", mode=admin_pb2.FORCED_OPEN)
    request.duration.FromMilliseconds(300)
    await admin.call("ForceState", request)
    assert (await admin.state()).state == "forced_open"
    for _ in range(40):
        await asyncio.sleep(0.1)
        orders = json.loads((admin.store_dir / "forced-states.json").read_text())["orders"]
        if not orders:
            break
    assert orders == []
    assert (await admin.state()).state == "closed"


async def test_watch_events_streams_changes_as_they_happen(admin: Admin) -> None:
    call = CALLS["WatchEvents"]
    stream = admin.channel.unary_stream(call.path, call.request.SerializeToString, call.response.FromString)
    events = stream(admin_pb2.WatchEventsRequest())
    await asyncio.sleep(0.2)  # the watch is registered
    await admin.force(admin_pb2.FORCED_OPEN, reason="drill")
    first = await asyncio.wait_for(events.read(), 5)
    change = first.forced_state_change
    assert (change.model, change.tier, change.from_state, change.to_state) == (
        "recommender", "primary", "closed", "forced_open"
    )  # fmt: skip
    await admin.force(admin_pb2.AUTO)
    for _ in range(4):  # light's breaker opens on four failures
        await admin.harness.request(status=503)
    second = await asyncio.wait_for(events.read(), 5)
    assert second.forced_state_change.ended_by.startswith("tester (")
    third = await asyncio.wait_for(events.read(), 5)
    move = third.breaker_transition
    assert (move.tier, move.from_state, move.to_state, move.cause) == ("primary", "closed", "open", "failure_rate")
    events.cancel()
    reloaded = await admin.call("ReloadPolicy", admin_pb2.ReloadPolicyRequest())
    assert (reloaded.result, list(reloaded.errors)) == ("error", ["this server has no policy file to reload"])


async def test_reflection_lists_the_service_and_health_says_serving(admin: Admin) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(admin.channel)

    async def ask() -> AsyncIterator[Any]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = []
    async for answer in reflection.ServerReflectionInfo(ask()):
        names = [service.name for service in answer.list_services_response.service]
    assert "modelguard.admin.v1.Admin" in names and "grpc.health.v1.Health" in names

    async def describe() -> AsyncIterator[Any]:
        yield reflection_pb2.ServerReflectionRequest(file_containing_symbol="modelguard.admin.v1.Admin")

    async for answer in reflection.ServerReflectionInfo(describe()):
        assert answer.file_descriptor_response.file_descriptor_proto
    health = health_pb2_grpc.HealthStub(admin.channel)
    for service in ("", "modelguard.admin.v1.Admin"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_workers_sharing_a_state_directory_follow_each_others_orders(tmp_path: Path) -> None:
    first, _, first_port = await start_admin(DirectoryStore(tmp_path))
    second, _, _ = await start_admin(DirectoryStore(tmp_path))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first_port}") as channel:
            call = CALLS["ForceState"]
            stub = channel.unary_unary(call.path, call.request.SerializeToString, call.response.FromString)
            await stub(
                admin_pb2.ForceStateRequest(model="ranker", tier="primary", mode=admin_pb2.FORCED_OPEN), metadata=AUTH
            )
        ranker = second.registry.get("ranker", "primary")
        for _ in range(30):
            if ranker.state_name == "forced_open":
                break
            await asyncio.sleep(0.1)
        assert ranker.state_name == "forced_open"
    finally:
        await first.stop(0)
        await second.stop(0)


async def test_a_state_directory_that_cannot_be_written_still_forces_and_warns(tmp_path: Path) -> None:
    service, _, port = await start_admin(UnusableStore(str(tmp_path), "read-only file system"))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = CALLS["ForceState"]
            stub = channel.unary_unary(call.path, call.request.SerializeToString, call.response.FromString)
            answer = await stub(
                admin_pb2.ForceStateRequest(model="ranker", tier="primary", mode=admin_pb2.FORCED_OPEN), metadata=AUTH
            )
        assert answer.tier.state == "forced_open"
        assert "read-only file system" in answer.warning and "will not survive a restart" in answer.warning
    finally:
        await service.stop(0)


async def test_a_restart_on_the_same_state_directory_meets_the_first_request_forced(tmp_path: Path) -> None:
    first, _, port = await start_admin(DirectoryStore(tmp_path))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = CALLS["ForceState"]
        stub = channel.unary_unary(call.path, call.request.SerializeToString, call.response.FromString)
        request = admin_pb2.ForceStateRequest(model="recommender", tier="primary", mode=admin_pb2.FORCED_OPEN)
        await stub(request, metadata=AUTH)
    await first.stop(0)
    second, _, _ = await start_admin(DirectoryStore(tmp_path))
    try:
        ticket = second.guard.decide({":method": "POST", ":path": "/v2/models/recommender/infer"})
        assert (ticket.decision.tier_name, ticket.decision.reason) == ("light", "forced")
    finally:
        await second.stop(0)


async def test_auto_forgets_an_order_kept_for_a_tier_the_policy_lacks(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    store.save(("retired-model", "primary"), ForceOrder(ForceMode.FORCED_OPEN, "old", "sre", 1.0))
    service, _, port = await start_admin(store)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            get = CALLS["GetState"]
            state = await channel.unary_unary(get.path, get.request.SerializeToString, get.response.FromString)(
                admin_pb2.GetStateRequest()
            )
            assert [(o.model, o.tier) for o in state.dormant] == [("retired-model", "primary")]
            call = CALLS["ForceState"]
            stub = channel.unary_unary(call.path, call.request.SerializeToString, call.response.FromString)
            answer = await stub(
                admin_pb2.ForceStateRequest(model="retired-model", tier="primary", mode=admin_pb2.AUTO), metadata=AUTH
            )
            assert answer.previous_state == "forced_open"
        assert store.load() == {}
    finally:
        await service.stop(0)


async def test_a_flood_of_refused_calls_is_not_a_flood_of_log_lines(
    admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    request = admin_pb2.ResetBreakerRequest(model="recommender", tier="primary")
    with caplog.at_level("WARNING", "modelguard.admin"):
        for _ in range(50):
            with pytest.raises(grpc.aio.AioRpcError):
                await admin.call("ResetBreaker", request, ())
    refused = [r for r in caplog.records if getattr(r, "event", "") == "admin_call_refused"]
    assert 1 <= len(refused) <= 10
