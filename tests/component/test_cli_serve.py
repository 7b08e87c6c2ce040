"""`modelguard serve` as a real process: it binds, reports its ports, answers, and stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from envoy.service.ext_proc.v3.external_processor_pb2 import HttpHeaders, ProcessingRequest, ProcessingResponse

from ext_proc.settings import DEFAULT_GRPC_EXPERIMENTS, GRPC_EXPERIMENTS
from tests.component.conftest import serve_command


def read_serving_line(process: subprocess.Popen[str], timeout: float = 20.0) -> dict[str, object]:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        entry = json.loads(line)
        if entry.get("event") == "serving":
            return dict(entry)
    raise AssertionError("modelguard did not report that it is serving")


def exchange_over_grpc(port: int) -> tuple[ProcessingResponse, ...]:
    """One routed request's stream, as Envoy drives it: request headers, then response headers."""
    messages = [
        ProcessingRequest(
            request_headers=HttpHeaders(
                headers=HeaderMap(headers=[HeaderValue(key=":path", raw_value=b"/v2/models/recommender/infer")])
            )
        ),
        ProcessingRequest(
            response_headers=HttpHeaders(headers=HeaderMap(headers=[HeaderValue(key=":status", raw_value=b"200")]))
        ),
    ]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = ext_proc_grpc.ExternalProcessorStub(channel)
        return tuple(stub.Process(iter(messages), timeout=10))


@pytest.mark.parametrize(
    ("flag", "loop", "experiments", "expected"),
    [
        ((), "uvloop", None, DEFAULT_GRPC_EXPERIMENTS),  # modelguard's runtime defaults
        (("--event-loop", "asyncio"), "asyncio", "", ""),  # the standard loop, gRPC's own defaults
    ],
)
def test_serve_binds_free_ports_answers_and_stops_on_sigterm(
    flag: tuple[str, ...], loop: str, experiments: str | None, expected: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != GRPC_EXPERIMENTS}
    if experiments is not None:
        env[GRPC_EXPERIMENTS] = experiments
    process = subprocess.Popen(
        serve_command("--grpc-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0", "--grace", "1", *flag),
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        serving = read_serving_line(process)
        assert serving["event_loop"] == loop
        assert serving["grpc_experiments"] == expected
        # One answer: on the response headers modelguard judges and ends the stream.
        (first,) = exchange_over_grpc(int(str(serving["grpc_port"])))
        assert first.request_headers.response.clear_route_cache
        admin = f"http://127.0.0.1:{serving['admin_port']}"
        with urllib.request.urlopen(admin + "/readyz", timeout=5) as response:
            assert response.status == 200
        with urllib.request.urlopen(admin + "/v1/state", timeout=5) as response:
            state = json.load(response)
        assert list(state["models"]["recommender"]["tiers"]) == ["primary", "light", "default"]
        assert state["models"]["recommender"]["tiers"]["primary"]["outcomes"]["success"] == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        assert '"event": "stopped"' in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def test_serve_refuses_a_bad_policy_with_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{name: x}]\n")
    result = subprocess.run(
        serve_command("--admin-address", "127.0.0.1:0", "--grpc-address", "127.0.0.1:0", policy=bad),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "models[0].match: required" in result.stderr


def test_serve_reports_a_taken_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            serve_command("--grpc-address", "127.0.0.1:0", "--admin-address", f"127.0.0.1:{port}"),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert "start_failed" in result.stderr


@pytest.mark.parametrize("address", ["nonsense", "127.0.0.1:99999"])
def test_serve_rejects_a_malformed_address(address: str) -> None:
    result = subprocess.run(
        serve_command("--grpc-address", address, "--admin-address", "127.0.0.1:0"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "not host:port" in result.stderr
