"""The real gRPC server in-process, driven by a real gRPC client speaking ProcessingRequest streams."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging

import aiohttp
import grpc
import pytest
from envoy.service.ext_proc.v3.external_processor_pb2 import (
    HttpBody,
    HttpTrailers,
    ProcessingRequest,
    ProcessingResponse,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from ext_proc.policy import parse_policy
from ext_proc.server.service import Service
from tests.component.conftest import (
    POLICY,
    REC_PATH,
    Harness,
    header_map,
    request_headers,
    response_headers,
    set_headers,
)


async def trip_primary(harness: Harness) -> None:
    for _ in range(4):
        assert (await harness.request(503))[0] == "primary"


async def test_healthy_request_is_routed_to_primary(harness: Harness) -> None:
    first, second = await harness.exchange({":path": REC_PATH, ":authority": "gw"}, 200)
    common = first.request_headers.response
    assert common.clear_route_cache is True
    assert set_headers(first) == {
        "x-modelguard-route": "recommender-resnet50",
        "x-modelguard-tier": "primary",
        "x-modelguard-reason": "ok",
    }
    # Envoy 1.40 reads raw_value; value must stay empty so nothing depends on it.
    assert all(o.header.value == "" for o in common.header_mutation.set_headers)
    # The response is judged and the stream ended instead of answered (Envoy tags the response
    # from the request headers above).
    assert second is None
    assert harness.service.registry.get("recommender", "primary").outcomes["success"] == 1


async def test_failures_trip_the_primary_and_the_light_tier_serves(harness: Harness) -> None:
    await trip_primary(harness)
    first, second = await harness.exchange({":path": REC_PATH}, 200)
    assert set_headers(first) == {
        "x-modelguard-route": "recommender-mobilenet",
        "x-modelguard-tier": "light",
        "x-modelguard-degraded": "true",
        "x-modelguard-reason": "breaker_open",
        "x-envoy-max-retries": "0",  # degraded traffic: Envoy must not retry it (README, "Retry-storm control")
    }
    assert second is None


async def test_probes_and_recovery(harness: Harness) -> None:
    await trip_primary(harness)
    assert await harness.request(200) == ("light", "breaker_open")
    harness.clock.advance(2.0)
    assert await harness.request(200) == ("primary", "half_open_probe")
    assert await harness.request(200) == ("primary", "half_open_probe")
    assert await harness.request(200) == ("primary", "ok")


async def test_failed_probe_keeps_traffic_on_the_light_tier(harness: Harness) -> None:
    await trip_primary(harness)
    harness.clock.advance(2.0)
    assert await harness.request(503) == ("primary", "half_open_probe")
    assert await harness.request(200) == ("light", "breaker_open")
    harness.clock.advance(2.0)
    assert await harness.request(200) == ("light", "breaker_open")  # the open period doubled to 4 s
    harness.clock.advance(2.0)
    assert await harness.request(200) == ("primary", "half_open_probe")


PATH_VARIANTS = [
    "/v2/models/r%65commender/infer",
    "/v2/models%2Frecommender/infer",
    "/v2/models%2frecommender/infer",
    "/v2//models//recommender/infer",
    "/v2/./models/recommender/infer",
    "/v2/models/x/../recommender/infer",
    "/v2/models/%2e/recommender/infer",
    "/v2\\models\\recommender\\infer",
]


async def test_spellings_of_a_models_path_are_the_model(harness: Harness) -> None:
    """Every spelling reaches the breaker: judged while closed, stepped down while open."""
    primary = harness.service.registry.get("recommender", "primary")
    for index, path in enumerate(PATH_VARIANTS[:4]):
        assert await harness.request(503, path=path) == ("primary", "ok"), path
        assert primary.outcomes["failure"] == index + 1
    assert primary.breaker is not None and primary.breaker.state.value == "open"
    for path in PATH_VARIANTS:
        assert await harness.request(200, path=path) == ("light", "breaker_open"), path
    assert harness.service.guard.unmatched.count == 0


async def test_respond_tier_answers_http_clients_directly(harness: Harness) -> None:
    await trip_primary(harness)
    for _ in range(4):
        assert (await harness.request(500))[0] == "light"
    first, second = await harness.exchange({":path": REC_PATH, "content-type": "application/json"}, 200)
    assert second is None
    immediate = first.immediate_response
    assert immediate.status.code == 200
    assert json.loads(immediate.body) == {"items": [], "degraded": True}
    headers = {h.header.key: h.header.raw_value.decode() for h in immediate.headers.set_headers}
    assert headers["content-type"] == "application/json"
    assert headers["x-modelguard-tier"] == "default" and headers["x-modelguard-degraded"] == "true"
    assert not immediate.HasField("grpc_status")


async def test_respond_tier_gives_grpc_clients_a_grpc_status(harness: Harness) -> None:
    await trip_primary(harness)
    for _ in range(4):
        await harness.request(500)
    first, _ = await harness.exchange({":path": REC_PATH, "content-type": "application/grpc+proto"}, 200)
    immediate = first.immediate_response
    assert immediate.grpc_status.status == grpc.StatusCode.UNAVAILABLE.value[0]
    assert b"recommender" in immediate.body


async def test_all_tiers_refusing_gives_the_builtin_503(harness: Harness) -> None:
    for _ in range(2):
        await harness.exchange({":path": "/v2/models/ranker/infer", ":authority": "ranker.models:8080"}, 503)
    first, _ = await harness.exchange({":path": "/v2/models/ranker/infer", ":authority": "ranker.models"}, 200)
    immediate = first.immediate_response
    assert immediate.status.code == 503
    assert "ranker" in json.loads(immediate.body)["error"]  # KServe v2's error shape: a string
    headers = {h.header.key: h.header.raw_value.decode() for h in immediate.headers.set_headers}
    assert headers["retry-after"] == "5" and headers["content-type"] == "application/json"
    grpc_first, _ = await harness.exchange(
        {":path": "/predict", ":authority": "ranker.models", "content-type": "application/grpc"}, 200
    )
    assert grpc_first.immediate_response.grpc_status.status == grpc.StatusCode.UNAVAILABLE.value[0]


async def test_spoofed_modelguard_headers_are_removed(harness: Harness) -> None:
    first, _ = await harness.exchange(
        {
            ":path": REC_PATH,
            "x-modelguard-route": "recommender-mobilenet",
            "x-modelguard-tier": "light",
            "x-modelguard-anything": "x",
        },
        200,
    )
    common = first.request_headers.response
    assert sorted(common.header_mutation.remove_headers) == [
        "x-modelguard-anything",
        "x-modelguard-route",
        "x-modelguard-tier",
    ]
    assert set_headers(first)["x-modelguard-route"] == "recommender-resnet50"
    assert common.clear_route_cache is True


async def test_unmatched_request_passes_untouched_but_loses_spoofed_headers(harness: Harness) -> None:
    plain, second = await harness.exchange({":path": "/v1/other"}, 200)
    assert plain.HasField("request_headers")
    assert not plain.request_headers.response.header_mutation.set_headers
    assert second is None  # the stream ended with the first answer: the response is Envoy's alone
    spoofed, _ = await harness.exchange({":path": "/v1/other", "x-modelguard-route": "recommender-mobilenet"}, 200)
    mutation = spoofed.request_headers.response.header_mutation
    assert list(mutation.remove_headers) == ["x-modelguard-route"] and not mutation.set_headers
    assert harness.service.guard.unmatched.count == 2


async def test_grpc_status_in_trailers_is_judged(harness: Harness) -> None:
    call = harness.stub.Process()
    await call.write(request_headers({":path": REC_PATH, "content-type": "application/grpc"}))
    await call.read()
    await call.write(response_headers({":status": "200", "content-type": "application/grpc"}))
    answer = await call.read()  # no grpc-status yet: answered, so that Envoy sends the trailers
    assert isinstance(answer, ProcessingResponse) and answer.HasField("response_headers")
    await call.write(ProcessingRequest(response_trailers=HttpTrailers(trailers=header_map({"grpc-status": "14"}))))
    assert await call.read() is grpc.aio.EOF  # judged on the trailers: the stream ends
    assert harness.service.registry.get("recommender", "primary").outcomes["failure"] == 1


async def test_grpc_answer_without_trailers_is_a_success_when_the_stream_ends(harness: Harness) -> None:
    # A route that does not send trailers to modelguard: the stream ends after the response headers.
    _, second = await harness.exchange(
        {":path": REC_PATH, "content-type": "application/grpc"}, 200, extra={"content-type": "application/grpc"}
    )
    assert second is not None and second.HasField("response_headers")
    await wait_for(lambda: harness.service.registry.get("recommender", "primary").outcomes["success"] == 1)


async def test_cancelled_grpc_answers_are_dropped_not_successes(harness: Harness) -> None:
    """Probes whose gRPC answer was cut off before its grpc-status must not close the breaker."""
    await trip_primary(harness)
    harness.clock.advance(2.0)
    primary = harness.service.registry.get("recommender", "primary")
    grpc_request: dict[str, str | bytes] = {":path": REC_PATH, "content-type": "application/grpc"}
    for cancelled in range(1, 3):
        call = harness.stub.Process()
        await call.write(request_headers(grpc_request))
        assert set_headers(await call.read())["x-modelguard-reason"] == "half_open_probe"
        await call.write(response_headers({":status": "200", "content-type": "application/grpc"}))
        assert (await call.read()).HasField("response_headers")  # awaiting the grpc-status
        call.cancel()
        await wait_for(lambda n=cancelled: primary.outcomes["dropped"] == n)
    assert primary.outcomes["success"] == 0
    assert primary.breaker is not None and primary.breaker.state.value == "half_open"
    assert await harness.request(200) == ("primary", "half_open_probe")  # the slots were freed


async def test_trailers_only_grpc_status_in_headers_is_judged(harness: Harness) -> None:
    await harness.exchange(
        {":path": REC_PATH, "content-type": "application/grpc"},
        200,
        extra={"content-type": "application/grpc", "grpc-status": "4"},
    )
    assert harness.service.registry.get("recommender", "primary").outcomes["failure"] == 1


async def test_429_is_overload_not_failure(harness: Harness) -> None:
    for _ in range(5):  # overload.pushback_min
        await harness.exchange({":path": REC_PATH}, 429, extra={"retry-after": "3"})
    tier = harness.service.registry.get("recommender", "primary")
    assert tier.outcomes["overload"] == 5 and tier.outcomes["failure"] == 0
    assert tier.breaker.state.value == "closed"
    # overloaded, not broken: pushed back for the Retry-After the answers gave (README, "Upstream pushback")
    assert await harness.request(200) == ("light", "overload")
    harness.clock.advance(2.9)
    assert await harness.request(200) == ("light", "overload")
    harness.clock.advance(0.2)
    assert await harness.request(200) == ("primary", "ok")


async def test_a_retry_after_that_is_not_seconds_pushes_back_one_second(harness: Harness) -> None:
    for _ in range(5):
        await harness.exchange({":path": REC_PATH}, 429, extra={"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"})
    assert await harness.request(200) == ("light", "overload")
    harness.clock.advance(1.05)
    assert await harness.request(200) == ("primary", "ok")


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


async def test_dropped_stream_releases_the_probe_slot(harness: Harness) -> None:
    await trip_primary(harness)
    harness.clock.advance(2.0)
    primary = harness.service.registry.get("recommender", "primary")
    calls = []
    for _ in range(2):
        call = harness.stub.Process()
        await call.write(request_headers({":path": REC_PATH}))
        assert set_headers(await call.read())["x-modelguard-reason"] == "half_open_probe"
        calls.append(call)
    assert await harness.request(200) == ("light", "breaker_open")
    calls[0].cancel()  # the client went away before response headers
    await wait_for(lambda: primary.inflight == 1)
    assert primary.outcomes["dropped"] == 1
    calls[1].cancel()
    await wait_for(lambda: primary.inflight == 0)
    assert await harness.request(200) == ("primary", "half_open_probe")


async def test_stream_closed_after_request_headers_releases(harness: Harness) -> None:
    primary = harness.service.registry.get("recommender", "primary")
    first, _ = await harness.exchange({":path": REC_PATH}, status=None)  # Envoy local reply
    assert set_headers(first)["x-modelguard-tier"] == "primary"
    await wait_for(lambda: primary.inflight == 0)
    assert primary.outcomes["dropped"] == 1


async def send_garbage(harness: Harness) -> grpc.StatusCode:
    raw = harness.channel.stream_stream(
        "/envoy.service.ext_proc.v3.ExternalProcessor/Process",
        request_serializer=None,
        response_deserializer=None,
    )
    call = raw()
    await call.write(b"\xff\xff\xff\x00garbage")
    await call.done_writing()
    with contextlib.suppress(grpc.aio.AioRpcError):
        async for _ in call:
            pass
    return await call.code()


async def test_garbage_bytes_fail_one_stream_not_the_server(harness: Harness) -> None:
    assert await send_garbage(harness) == grpc.StatusCode.INVALID_ARGUMENT
    assert harness.service.servicer.errors.counts == {"parse_error": 1}
    assert await harness.request(200) == ("primary", "ok")


async def test_a_flood_of_garbage_is_counted_in_full_and_logged_sparingly(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(50):
        assert await send_garbage(harness) == grpc.StatusCode.INVALID_ARGUMENT
    assert harness.service.servicer.errors.counts == {"parse_error": 50}
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert 1 <= len(lines) <= 6, [r.getMessage() for r in lines]  # a burst of 5, maybe one refilled
    assert all(r.exc_info is None and r.levelno <= logging.WARNING for r in lines)
    assert sum(len(r.getMessage()) for r in lines) < 2000


async def test_out_of_order_and_unrequested_phases_get_sane_answers(harness: Harness) -> None:
    call = harness.stub.Process()
    await call.write(response_headers({":status": "200"}))  # before any request headers
    answer = await call.read()
    assert isinstance(answer, ProcessingResponse) and answer.HasField("response_headers")
    await call.write(ProcessingRequest(request_body=HttpBody(body=b"{}", end_of_stream=True)))
    answer = await call.read()
    assert isinstance(answer, ProcessingResponse) and answer.HasField("request_body")
    await call.write(ProcessingRequest(response_body=HttpBody(body=b"{}")))
    answer = await call.read()
    assert isinstance(answer, ProcessingResponse) and answer.HasField("response_body")
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    errors = harness.service.servicer.errors.counts
    assert errors == {
        "response_before_request": 1,
        "unrequested_request_body": 1,
        "unrequested_response_body": 1,
    }


async def test_empty_message_and_repeated_headers_are_rejected(harness: Harness) -> None:
    call = harness.stub.Process()
    await call.write(ProcessingRequest())
    assert (await call.code()) == grpc.StatusCode.INVALID_ARGUMENT
    call = harness.stub.Process()
    await call.write(request_headers({":path": REC_PATH}))
    await call.read()
    await call.write(request_headers({":path": REC_PATH}))
    assert (await call.code()) == grpc.StatusCode.INVALID_ARGUMENT
    primary = harness.service.registry.get("recommender", "primary")
    await wait_for(lambda: primary.inflight == 0)
    assert await harness.request(200) == ("primary", "ok")


async def test_odd_header_values_do_not_break_the_stream(harness: Harness) -> None:
    huge = "/v2/models/recommender/" + "a" * 1_000_000 + "/infer"
    assert await harness.request(200, path=huge) == ("primary", "ok")
    first, _ = await harness.exchange(
        {":path": b"/v2/models/recommender/\xff\xfe/infer", ":authority": b"\xc3\x28"}, 200
    )
    assert set_headers(first)["x-modelguard-tier"] == "primary"
    first, second = await harness.exchange({":path": b"\xff" * 64}, 200)
    assert first.HasField("request_headers") and second is None  # unmatched: passed on untouched
    _, second = await harness.exchange({":path": REC_PATH}, None)
    first, second = await harness.exchange({":path": REC_PATH}, 200, extra={":status": "abc"})
    assert second is None  # not judged (counted as a protocol error), and the stream ended
    assert harness.service.servicer.errors.counts.get("bad_status") == 1


async def test_start_up_objects_are_frozen_out_of_full_collections() -> None:
    gc.unfreeze()
    service = Service(parse_policy(POLICY))
    try:
        await service.start("127.0.0.1:0", "127.0.0.1:0")
        # The guard, its prebuilt answers and the imported modules are no longer walked by gc.
        assert gc.get_freeze_count() > 10_000
        assert all(o is not service.guard for o in gc.get_objects())  # permanent generation only
    finally:
        await service.stop(0)
        gc.unfreeze()


async def test_admin_endpoints(harness: Harness) -> None:
    await trip_primary(harness)
    await harness.request(200)
    async with aiohttp.ClientSession() as session:
        async with session.get(harness.admin_url + "/healthz") as response:
            assert response.status == 200
        async with session.get(harness.admin_url + "/readyz") as response:
            assert response.status == 200 and (await response.json())["ready"] is True
        async with session.get(harness.admin_url + "/v1/state") as response:
            state = await response.json()
        async with session.get(harness.admin_url + "/metrics") as response:
            metrics = await response.text()
    tiers = state["models"]["recommender"]["tiers"]
    assert tiers["primary"]["state"] == "open" and tiers["light"]["state"] == "closed"
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    rec = {"model": "recommender"}
    assert value("modelguard_requests_total", **rec, tier="primary", reason="ok") == 4
    assert value("modelguard_requests_total", **rec, tier="light", reason="breaker_open") == 1
    assert value("modelguard_breaker_state", **rec, tier="primary", state="open") == 1
    assert value("modelguard_breaker_state", **rec, tier="primary", state="closed") == 0
    transition = {"from_state": "closed", "to_state": "open"}
    assert value("modelguard_breaker_transitions_total", **rec, tier="primary", **transition) == 1
    assert value("modelguard_outcomes_total", **rec, tier="primary", outcome="failure") == 4
    assert value("modelguard_inflight", **rec, tier="primary") == 0
    assert value("modelguard_upstream_latency_seconds_count", **rec, tier="light") == 1
    assert value("modelguard_decision_duration_seconds_count") == 0  # one decision in 8 is timed


async def test_grpc_health_service_reports_serving(harness: Harness) -> None:
    stub = health_pb2_grpc.HealthStub(harness.channel)
    answer = await stub.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_graceful_stop_lets_inflight_streams_finish(harness: Harness) -> None:
    call = harness.stub.Process()
    await call.write(request_headers({":path": REC_PATH}))
    await call.read()
    stopping = asyncio.create_task(harness.service.stop(3.0))
    await asyncio.sleep(0.2)
    assert harness.service.readiness.ready is False
    await call.write(response_headers({":status": "200"}))
    assert await call.read() is grpc.aio.EOF  # judged, and the stream ended, while draining
    await asyncio.wait_for(stopping, 5.0)
    assert harness.service.registry.get("recommender", "primary").outcomes["success"] == 1


async def test_swapping_the_guard_leaves_streams_under_way_on_the_old_one(harness: Harness) -> None:
    from ext_proc.policy import parse_policy

    old_primary = harness.service.registry.get("recommender", "primary")
    call = harness.stub.Process()
    await call.write(request_headers({":path": REC_PATH}))
    await call.read()
    harness.service.use(
        parse_policy(
            "models: [{name: other, match: {path_prefix: /v2/models/recommender}, "
            "tiers: [{name: only, route: other-route}]}]"
        )
    )
    await call.write(response_headers({":status": "200"}))
    assert await call.read() is grpc.aio.EOF
    assert old_primary.outcomes["success"] == 1 and old_primary.inflight == 0
    first, _ = await harness.exchange({":path": REC_PATH}, 200)
    assert set_headers(first)["x-modelguard-route"] == "other-route"


async def test_a_bug_costs_one_stream_not_the_server(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    guard = harness.service.guard

    def broken(_headers: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(guard, "decide", broken)
    call = harness.stub.Process()
    await call.write(request_headers({":path": REC_PATH}))
    assert (await call.code()) == grpc.StatusCode.INTERNAL
    monkeypatch.undo()
    assert await harness.request(200) == ("primary", "ok")
    assert harness.service.servicer.errors.counts["internal"] == 1


async def test_one_decision_in_eight_is_timed(harness: Harness) -> None:
    for _ in range(16):
        await harness.request(200)
    histogram = harness.service.stats.decision_duration
    assert histogram.count == 2 and 0 < histogram.total < 1.0


async def scoped_stream(harness: Harness, scope: str, path: str = REC_PATH) -> tuple[ProcessingResponse, bool]:
    """The request-phase answer of a stream scoped to `scope`, and whether modelguard then ended the
    stream (nothing of the response to judge)."""
    call = harness.stub.Process(metadata=(("x-modelguard-model", scope),))
    await call.write(request_headers({":path": path, ":authority": "gw"}))
    answer = await call.read()
    assert isinstance(answer, ProcessingResponse)
    try:
        ended = await asyncio.wait_for(call.read(), 0.5) is grpc.aio.EOF
    except TimeoutError:
        ended = False
    call.cancel()
    return answer, ended


async def test_a_stream_scoped_to_a_model_leaves_other_models_requests_alone(harness: Harness) -> None:
    """The Istio sidecar filter names its virtual host's model in the stream's metadata: the
    recommender's path sent to the ranker's Service is not the recommender's to judge."""
    answer, ended = await scoped_stream(harness, "recommender")
    assert set_headers(answer).get("x-modelguard-tier") == "primary" and not ended, "its own: decided, then judged"
    for scope in ("ranker", "no-such-model"):
        answer, ended = await scoped_stream(harness, scope)
        assert "x-modelguard-route" not in set_headers(answer) and ended, "another's: untouched, nothing judged"
    assert harness.service.servicer.errors.counts.get("unknown_model_scope") == 1


async def test_the_host_envoy_names_decides_whose_failures_they_are(harness: Harness) -> None:
    """Envoy's upstream.address attribute on the response: one host's failures are Envoy's to eject,
    the same failures from two hosts are the model's."""
    hosts = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]
    for host in hosts:
        assert await harness.request(200, host=host) == ("primary", "ok")
    for _ in range(6):  # 6 failures of 9 calls: over failure_rate 0.5, all from one host
        assert await harness.request(503, host=hosts[0]) == ("primary", "ok")
    assert await harness.request(200, host=hosts[1]) == ("primary", "ok")
    state = harness.service.registry.get("recommender", "primary")
    assert state is not None
    snapshot = state.breaker.hosts.snapshot(harness.clock())
    assert snapshot[hosts[0]]["failures"] == 6 and snapshot[hosts[1]]["calls"] == 2
    tiers = [(await harness.request(503, host=hosts[1]))[0] for _ in range(3)]
    assert tiers == ["primary", "primary", "light"]  # host 2 at 2 failures of 4: it crosses 0.5 too
    assert state.breaker.state.value == "open"
