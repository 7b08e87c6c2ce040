"""The demo model server: the Open Inference Protocol, its errors, and the injected faults.

In-process servers on free 127.0.0.1 ports, plus one real process started the way the demo
starts it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import pytest

from ext_proc.demo.model_server import (
    Fault,
    FaultError,
    RunningModelServer,
    start_model_server,
)
from ext_proc.demo.models import Model, variant_for

INFER = "/v2/models/recommender/infer"


@pytest.fixture(scope="module")
def light() -> Model:
    return variant_for("recommender", "light")


@pytest.fixture(scope="module")
def primary() -> Model:
    return variant_for("recommender", "primary")


@dataclass
class Client:
    running: RunningModelServer
    session: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return self.running.url + path

    async def infer(self, body: Any = None, path: str = INFER) -> tuple[int, dict[str, Any], dict[str, str]]:
        """POST an infer request; returns (status, JSON body, headers)."""
        async with self.session.post(self.url(path), json=body if body is not None else request(1)) as response:
            return response.status, await response.json(), dict(response.headers)

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.url(path)) as response:
            return response.status, await response.json()

    async def put_fault(self, fault: Any) -> tuple[int, Any]:
        async with self.session.put(self.url("/admin/fault"), json=fault) as response:
            return response.status, await response.json()

    async def delete_fault(self) -> None:
        async with self.session.delete(self.url("/admin/fault")) as response:
            assert response.status == 200

    async def stats(self) -> dict[str, Any]:
        status, stats = await self.get("/admin/stats")
        assert status == 200
        return dict(stats)


def inputs(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 64)).astype(np.float32)


def request(rows: int, seed: int = 0, request_id: str | None = None) -> dict[str, Any]:
    x = inputs(rows, seed)
    body: dict[str, Any] = {
        "inputs": [{"name": "input", "shape": [rows, 64], "datatype": "FP32", "data": x.ravel().tolist()}]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


@pytest.fixture
async def client(light: Model) -> AsyncIterator[Client]:
    running = await start_model_server(light, "light-1", seed=7)
    try:
        connector = aiohttp.TCPConnector(force_close=True)
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            yield Client(running, session)
    finally:
        await running.stop()


async def test_health_and_metadata(client: Client) -> None:
    assert await client.get("/v2/health/live") == (200, {"live": True})
    assert await client.get("/v2/health/ready") == (200, {"ready": True})
    status, server = await client.get("/v2")
    assert status == 200 and server["name"] == "modelguard-demo-model-server"
    status, metadata = await client.get("/v2/models/recommender")
    assert status == 200
    assert metadata["name"] == "recommender"
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "numpy"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert metadata["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 32]}]
    assert metadata["parameters"]["variant"] == "light"
    assert await client.get("/v2/models/recommender/ready") == (200, {"name": "recommender", "ready": True})
    assert (await client.get("/v2/models/recommender/versions/1/ready"))[0] == 200
    async with client.session.get(client.url("/v2/health/ready")) as response:
        assert response.headers["x-demo-host"] == "light-1"
        assert response.headers["x-demo-variant"] == "light"


async def test_infer_answers_the_model_output(primary: Model) -> None:
    running = await start_model_server(primary, "primary-1")
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(running, session)
            status, body, headers = await client.infer(request(3, seed=1, request_id="abc"))
            assert status == 200, body
            assert headers["x-demo-host"] == "primary-1"
            assert headers["x-demo-variant"] == "primary"
            assert body["model_name"] == "recommender"
            assert body["model_version"] == "1"
            assert body["id"] == "abc"
            [output] = body["outputs"]
            assert output["name"] == "scores"
            assert output["datatype"] == "FP32"
            assert output["shape"] == [3, 32]
            assert output["data"] == primary.predict(inputs(3, seed=1)).ravel().tolist()
            # Deterministic: the same request, the same answer; the versioned path is the same model.
            again = await client.infer(request(3, seed=1), path="/v2/models/recommender/versions/1/infer")
            assert again[1]["outputs"] == body["outputs"]
            assert again[1]["id"].startswith("primary-1-")
    finally:
        await running.stop()


async def test_nested_rows_are_accepted(client: Client, light: Model) -> None:
    x = inputs(2, seed=3)
    body = {"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": x.tolist()}]}
    status, answer, _ = await client.infer(body)
    assert status == 200, answer
    assert answer["outputs"][0]["data"] == light.predict(x).ravel().tolist()


async def test_primary_and_light_servers_answer_differently(client: Client, primary: Model) -> None:
    running = await start_model_server(primary, "primary-1")
    try:
        other = Client(running, client.session)
        _, heavy, heavy_headers = await other.infer(request(1, seed=2))
        _, small, small_headers = await client.infer(request(1, seed=2))
        assert heavy["outputs"][0]["data"] != small["outputs"][0]["data"]
        assert (heavy_headers["x-demo-variant"], small_headers["x-demo-variant"]) == ("primary", "light")
    finally:
        await running.stop()


async def test_any_model_name_is_served(client: Client, light: Model) -> None:
    """A server of one model answers to whatever name it is called, as SDK defaults expect."""
    status, body, headers = await client.infer(request(1, seed=4), path="/v2/models/ranker/infer")
    assert status == 200, body
    assert body["model_name"] == "ranker"
    assert body["outputs"][0]["data"] == light.predict(inputs(1, seed=4)).ravel().tolist()
    assert headers["x-demo-host"] == "light-1"
    status, metadata = await client.get("/v2/models/ranker")
    assert status == 200 and metadata["name"] == "ranker" and metadata["parameters"]["model"] == "recommender"
    assert await client.get("/v2/models/ranker/ready") == (200, {"name": "ranker", "ready": True})
    assert (await client.get("/v2/models/ranker/versions/1/ready"))[0] == 200


async def test_unknown_version_and_path_are_404(client: Client) -> None:
    status, body, headers = await client.infer(path="/v2/models/recommender/versions/2/infer")
    assert status == 404
    assert "unknown version '2'" in body["error"]
    assert headers["x-demo-host"] == "light-1"
    assert (await client.get("/v2/models/recommender/versions/2"))[0] == 404
    assert (await client.get("/v2/models/recommender/versions/2/ready"))[0] == 404
    status, body = await client.get("/v2/nothing/here")
    assert status == 404 and body == {"error": "Not Found"}


async def test_a_model_name_too_long_is_400(client: Client) -> None:
    name = "m" * 257
    status, body, _ = await client.infer(path=f"/v2/models/{name}/infer")
    assert status == 400 and "model name: at most 256 characters" in body["error"]
    assert (await client.get(f"/v2/models/{name}/ready"))[0] == 400
    assert (await client.stats())["outcomes"]["bad_request"] == 1


def tensor(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}
    base.update(changes)
    return {"inputs": [base]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "must be JSON"),
        (b"", "must be JSON"),
        (b"NaN", "JSON object"),
        (b"[1, 2]", "JSON object"),
        (b"[" * 100_000, "must be JSON"),
        ({}, "inputs: required"),
        ({"inputs": []}, "exactly one tensor"),
        ({"inputs": [tensor()["inputs"][0]] * 2}, "exactly one tensor"),
        ({"inputs": "x"}, "exactly one tensor"),
        (tensor(name="x"), "inputs[0].name"),
        (tensor(datatype="FP64"), "inputs[0].datatype"),
        (tensor(datatype=None), "inputs[0].datatype"),
        (tensor(shape=[1, 63]), "inputs[0].shape"),
        (tensor(shape=[64]), "inputs[0].shape"),
        (tensor(shape=[0, 64]), "inputs[0].shape"),
        (tensor(shape=[65, 64]), "inputs[0].shape"),
        (tensor(shape=[True, 64]), "inputs[0].shape"),
        (tensor(shape="1x64"), "inputs[0].shape"),
        (tensor(shape=[2, 64]), "needs 128 values, got 64"),
        (tensor(data=None), "inputs[0].data"),
        (tensor(data="abc"), "inputs[0].data"),
        (tensor(data=["0.5"] * 64), "every value must be a number"),
        (tensor(data=[True] * 64), "every value must be a number"),
        (tensor(data=[[0.5] * 63]), "nested data"),
        (tensor(data=[1e39] * 64), "finite"),
        (tensor(data=[10**400] * 64), "inputs[0].data"),
        (tensor(parameters={"binary_data_size": 256}), "give data or binary_data_size, not both"),
        ({**tensor(), "id": 5}, "id: must be a string"),
        ({**tensor(), "outputs": [{"name": "logits"}]}, "outputs"),
        ({**tensor(), "parameters": []}, "parameters"),
    ],
)
async def test_malformed_requests_are_400(client: Client, body: Any, message: str) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with client.session.post(client.url(INFER), data=data) as response:
        assert response.status == 400
        answer = await response.json()
    assert message in answer["error"]
    stats = await client.stats()
    assert stats["outcomes"]["bad_request"] == 1


@pytest.mark.parametrize(
    ("length", "message"),
    [
        ("99999", "more than the body's"),
        ("x", "Inference-Header-Content-Length: must be a byte count"),
        ("5", "must be JSON"),
    ],
)
async def test_a_bad_binary_header_is_400(client: Client, length: str, message: str) -> None:
    body = json.dumps(tensor()).encode()
    headers = {"Inference-Header-Content-Length": length}
    async with client.session.post(client.url(INFER), data=body, headers=headers) as response:
        assert response.status == 400
        assert message in (await response.json())["error"]


async def test_a_body_too_large_is_413_and_counted(client: Client) -> None:
    async with client.session.post(client.url(INFER), data=b" " * (2 * 1024 * 1024)) as response:
        assert response.status == 413
        assert "exceeded" in (await response.json())["error"]
    assert (await client.stats())["outcomes"]["bad_request"] == 1


async def test_nan_data_is_400(client: Client) -> None:
    data = b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [NaN' + b", 0" * 63 + b"]}]}"
    async with client.session.post(client.url(INFER), data=data) as response:
        assert response.status == 400
        assert "finite" in (await response.json())["error"]


async def test_fixed_latency_delays_the_answer(client: Client) -> None:
    status, fault = await client.put_fault({"latency_ms": 300})
    assert status == 200 and fault["active"] is True
    started = time.monotonic()
    status, _, _ = await client.infer()
    elapsed = time.monotonic() - started
    assert status == 200
    assert 0.3 <= elapsed < 5.0


async def test_distributed_latency_delays_the_answer(client: Client) -> None:
    await client.put_fault({"latency": {"distribution": "uniform", "min_ms": 150, "max_ms": 200}})
    started = time.monotonic()
    assert (await client.infer())[0] == 200
    assert 0.15 <= time.monotonic() - started < 5.0
    await client.put_fault({"latency_ms": 50, "latency": {"distribution": "lognormal", "median_ms": 100, "sigma": 0}})
    started = time.monotonic()
    assert (await client.infer())[0] == 200
    assert 0.15 <= time.monotonic() - started < 5.0


async def test_base_latency_applies_without_a_fault(light: Model) -> None:
    running = await start_model_server(light, "light-2", base_latency_ms=200)
    try:
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            assert (await Client(running, session).infer())[0] == 200
            assert 0.2 <= time.monotonic() - started < 5.0
    finally:
        await running.stop()


async def test_error_rate_one_fails_every_request(client: Client) -> None:
    await client.put_fault({"error_rate": 1.0})
    for _ in range(10):
        status, body, headers = await client.infer()
        assert status == 503
        assert "injected fault" in body["error"]
        assert headers["x-demo-host"] == "light-1"
    await client.put_fault({"error_rate": 1.0, "error_status": 500})
    assert (await client.infer())[0] == 500


async def test_fail_fast_answers_failures_before_the_latency(client: Client) -> None:
    await client.put_fault({"error_rate": 1.0, "latency_ms": 2000, "fail_fast": True})
    started = time.monotonic()
    assert (await client.infer())[0] == 503
    assert time.monotonic() - started < 1.0
    await client.put_fault({"error_rate": 0.0, "latency_ms": 300, "fail_fast": True})
    started = time.monotonic()
    assert (await client.infer())[0] == 200
    assert time.monotonic() - started >= 0.3
    status, answer = await client.put_fault({"fail_fast": "yes"})
    assert status == 400 and "fail_fast" in answer["error"]


async def statuses(client: Client, count: int) -> list[int]:
    return [(await client.infer())[0] for _ in range(count)]


async def test_error_rate_half_fails_about_half_reproducibly(client: Client, light: Model) -> None:
    await client.put_fault({"error_rate": 0.5})
    first = await statuses(client, 200)
    assert set(first) == {200, 503}
    assert 70 <= first.count(503) <= 130
    # Another server with the same seed fails the same requests.
    running = await start_model_server(light, "light-other", seed=7, fault=Fault(error_rate=0.5))
    try:
        assert await statuses(Client(running, client.session), 200) == first
    finally:
        await running.stop()


async def test_overload_is_429_with_retry_after(client: Client) -> None:
    await client.put_fault({"overload_rate": 1.0, "latency_ms": 5000})
    started = time.monotonic()
    status, body, headers = await client.infer()
    assert status == 429
    assert headers["Retry-After"] == "1"
    assert "overload" in body["error"]
    assert time.monotonic() - started < 2.0, "shedding answers at once, without the added latency"
    await client.put_fault({"overload_rate": 1.0, "overload_status": 503, "retry_after_s": 5})
    status, _, headers = await client.infer()
    assert (status, headers["Retry-After"]) == (503, "5")
    assert (await client.stats())["outcomes"]["overload"] == 2


async def test_reset_drops_the_connection(client: Client) -> None:
    await client.put_fault({"reset_rate": 1.0})
    with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
        await client.infer()
    stats = await client.stats()
    assert stats["outcomes"]["reset"] == 1
    await client.delete_fault()
    assert (await client.infer())[0] == 200


async def test_hang_holds_the_request_until_the_fault_is_cleared(client: Client) -> None:
    await client.put_fault({"hang": True})
    pending = asyncio.create_task(client.infer())
    done, _ = await asyncio.wait({pending}, timeout=0.5)
    assert not done, "a hung request must not be answered"
    stats = await client.stats()
    assert (stats["hanging"], stats["in_flight"]) == (1, 1)
    await client.delete_fault()
    status, body, _ = await asyncio.wait_for(pending, 5.0)
    assert status == 200 and body["outputs"][0]["shape"] == [1, 32]
    stats = await client.stats()
    assert (stats["hanging"], stats["in_flight"], stats["served"]) == (0, 0, 1)


async def test_replacing_a_hang_releases_into_the_new_fault(client: Client) -> None:
    await client.put_fault({"hang": True})
    pending = asyncio.create_task(client.infer())
    await asyncio.sleep(0.2)
    assert not pending.done()
    await client.put_fault({"hang": True, "latency_ms": 1})  # still hanging
    await asyncio.sleep(0.2)
    assert not pending.done()
    await client.put_fault({"error_rate": 1.0})
    status, _, _ = await asyncio.wait_for(pending, 5.0)
    assert status == 503


async def test_a_hang_is_bounded(light: Model) -> None:
    running = await start_model_server(light, "light-3", max_hang_s=0.3, fault=Fault(hang=True))
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(running, session)
            status, body, _ = await asyncio.wait_for(client.infer(), 5.0)
            assert status == 503 and "hang" in body["error"]
            assert (await client.stats())["outcomes"]["hang_timeout"] == 1
    finally:
        await running.stop()


async def test_a_client_giving_up_on_a_hang_is_counted(client: Client) -> None:
    await client.put_fault({"hang": True})
    with pytest.raises(TimeoutError):
        async with client.session.post(
            client.url(INFER), json=request(1), timeout=aiohttp.ClientTimeout(total=0.3)
        ) as response:
            await response.read()
    for _ in range(50):
        stats = await client.stats()
        if stats["outcomes"]["cancelled"]:
            break
        await asyncio.sleep(0.05)
    assert (stats["outcomes"]["cancelled"], stats["hanging"], stats["in_flight"]) == (1, 0, 0)


async def test_stop_releases_hung_requests(light: Model) -> None:
    running = await start_model_server(light, "light-4", fault=Fault(hang=True))
    async with aiohttp.ClientSession() as session:
        pending = asyncio.create_task(Client(running, session).infer())
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await running.stop()
        assert time.monotonic() - started < 2.0
        status, body, _ = await asyncio.wait_for(pending, 5.0)
        assert status == 503 and "shutting down" in body["error"]


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ([], "JSON object"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"latency_ms": True}, "latency_ms"),
        ({"latency_ms": "100"}, "latency_ms"),
        ({"latency_ms": 10_000_000}, "latency_ms"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"reset_rate": -0.1}, "reset_rate"),
        ({"overload_rate": "all"}, "overload_rate"),
        ({"error_status": 200}, "error_status"),
        ({"error_status": 503.0}, "error_status"),
        ({"overload_status": 500}, "overload_status"),
        ({"retry_after_s": -1}, "retry_after_s"),
        ({"hang": "yes"}, "hang"),
        ({"hang": 1}, "hang"),
        ({"latency": {"distribution": "normal"}}, "latency.distribution"),
        ({"latency": 5}, "latency"),
        ({"latency": {"distribution": "lognormal", "median_ms": 100}}, "latency.sigma: required"),
        ({"latency": {"distribution": "lognormal", "median_ms": 0, "sigma": 1}}, "latency.median_ms"),
        ({"latency": {"distribution": "lognormal", "median_ms": 10, "sigma": 9}}, "latency.sigma"),
        ({"latency": {"distribution": "uniform", "min_ms": 50, "max_ms": 10}}, "latency.max_ms"),
        ({"latency": {"distribution": "uniform", "min_ms": 5, "max_ms": 10, "median_ms": 7}}, "latency.median_ms"),
        ({"errors": 1}, "errors: unknown field"),
    ],
)
async def test_invalid_faults_are_400_and_change_nothing(client: Client, fault: Any, message: str) -> None:
    await client.put_fault({"latency_ms": 1})
    status, body = await client.put_fault(fault)
    assert status == 400
    assert message in body["error"]
    assert (await client.get("/admin/fault"))[1]["fault"]["latency_ms"] == 1


async def test_a_fault_body_that_is_not_json_is_400(client: Client) -> None:
    async with client.session.put(client.url("/admin/fault"), data=b"{oops") as response:
        assert response.status == 400
        assert "JSON" in (await response.json())["error"]


async def test_fault_round_trip(client: Client) -> None:
    assert await client.get("/admin/fault") == (200, {"active": False, "fault": Fault().to_json()})
    fault = {"latency": {"distribution": "lognormal", "median_ms": 200, "sigma": 0.25}, "error_rate": 0.8}
    status, answer = await client.put_fault(fault)
    assert status == 200
    assert answer["active"] is True
    assert answer["fault"]["latency"] == fault["latency"]
    assert answer["fault"]["error_rate"] == 0.8
    assert answer["fault"]["error_status"] == 503
    assert await client.get("/admin/fault") == (200, answer)
    # PUT replaces the whole fault; it does not merge.
    _, answer = await client.put_fault({"latency_ms": 5})
    assert answer["fault"]["error_rate"] == 0.0 and answer["fault"]["latency"] is None
    await client.delete_fault()
    assert (await client.get("/admin/fault"))[1]["active"] is False
    assert (await client.put_fault({}))[1]["active"] is False


def test_fault_parse_names_every_problem() -> None:
    with pytest.raises(FaultError) as caught:
        Fault.parse({"error_rate": 2, "hang": "no", "x": 1})
    assert len(caught.value.errors) == 3
    assert Fault.parse({"error_rate": 0.25}) == Fault(error_rate=0.25)


async def test_stats_count_each_outcome(client: Client) -> None:
    assert (await client.infer())[0] == 200
    await client.infer(path="/v2/models/recommender/versions/7/infer")
    await client.infer(body={"inputs": []})
    await client.put_fault({"error_rate": 1.0})
    await client.infer()
    await client.put_fault({"overload_rate": 1.0})
    await client.infer()
    await client.get("/v2/health/ready")  # not an infer request: not counted
    stats = await client.stats()
    assert stats["host_id"] == "light-1" and stats["variant"] == "light" and stats["seed"] == 7
    assert (stats["requests"], stats["served"], stats["failed"], stats["in_flight"]) == (5, 1, 4, 0)
    assert {kind: n for kind, n in stats["outcomes"].items() if n} == {
        "ok": 1,
        "not_found": 1,
        "bad_request": 1,
        "error": 1,
        "overload": 1,
    }
    assert stats["fault"]["fault"]["overload_rate"] == 1.0
    async with client.session.delete(client.url("/admin/stats")) as response:
        assert response.status == 200
    stats = await client.stats()
    assert (stats["requests"], stats["served"], stats["failed"]) == (0, 0, 0)


async def test_a_free_port_is_reported(light: Model) -> None:
    running = await start_model_server(light, "light-5")
    try:
        assert running.port > 0
        assert running.url == f"http://127.0.0.1:{running.port}"
    finally:
        await running.stop()


def server_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ext_proc.demo.model_server", "--model", "recommender", *args]


def read_event(stream: Any, event: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        entry = json.loads(line)
        if entry.get("event") == event:
            return dict(entry)
    raise AssertionError(f"no {event} line")


def test_the_module_runs_as_a_process_and_stops_on_sigterm(light: Model) -> None:
    process = subprocess.Popen(
        server_command("--variant", "light", "--host-id", "light-9", "--port", "0"),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready = read_event(process.stdout, "model_server_ready")
        assert ready["host_id"] == "light-9"
        assert ready["variant"] == "light"
        assert ready["blas_threads"] == 1
        assert ready["port"] > 0 and ready["pid"] == process.pid
        url = f"http://127.0.0.1:{ready['port']}{INFER}"
        post = urllib.request.Request(url, data=json.dumps(request(2, seed=8)).encode(), method="POST")
        with urllib.request.urlopen(post, timeout=10) as response:
            assert response.status == 200
            assert response.headers["x-demo-host"] == "light-9"
            assert response.headers["x-demo-variant"] == "light"
            answer = json.load(response)
        np.testing.assert_allclose(
            answer["outputs"][0]["data"], light.predict(inputs(2, seed=8)).ravel(), rtol=1e-5, atol=1e-7
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        stopped = read_event(process.stdout, "model_server_stopped", timeout=5)
        assert stopped["stats"]["served"] == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def test_a_taken_port_exits_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            server_command("--variant", "light", "--port", str(port)), capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert json.loads(result.stderr.splitlines()[-1])["event"] == "model_server_failed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variant", "huge"], "no model 'recommender' variant 'huge'"),
        (["--fault", '{"error_rate": 3}'], "--fault: error_rate"),
        (["--fault", "{"], "--fault"),
        (["--base-latency-ms", "-5"], "base latency"),
        (["--blas-threads", "0"], "--blas-threads"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(server_command(*args, "--port", "0"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr


def test_importing_the_server_does_not_load_numpy() -> None:
    """main() must set the BLAS thread variables before NumPy loads; an import at the top would be too early."""
    code = "import sys, ext_proc.demo.model_server; print('numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
