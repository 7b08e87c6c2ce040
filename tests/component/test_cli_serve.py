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

from ext_proc.demo.stack import consecutive_free_ports
from ext_proc.settings import DEFAULT_GRPC_EXPERIMENTS, GRPC_EXPERIMENTS
from tests.component.conftest import serve_command
from tests.tls_certs import KeyPair, Pki, make_pki


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


def _tls_case(case: str, pki: Pki, tmp_path: Path) -> list[str]:
    cert, key, ca = str(pki.server.cert), str(pki.server.key), str(pki.ca_file)
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    return {
        "cert without key": ["--grpc-tls-cert", cert],
        "key without cert": ["--grpc-tls-key", key],
        "client CA without TLS": ["--grpc-tls-client-ca", ca],
        "missing file": ["--grpc-tls-cert", str(tmp_path / "missing.pem"), "--grpc-tls-key", key],
        "not PEM": ["--grpc-tls-cert", cert, "--grpc-tls-key", key, "--grpc-tls-client-ca", str(junk)],
        "key of another cert": ["--grpc-tls-cert", cert, "--grpc-tls-key", str(pki.client.key)],
    }[case]


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("cert without key", 2, "--grpc-tls-cert and --grpc-tls-key go together"),
        ("key without cert", 2, "--grpc-tls-cert and --grpc-tls-key go together"),
        ("client CA without TLS", 2, "--grpc-tls-client-ca needs --grpc-tls-cert"),
        ("missing file", 1, "missing.pem: No such file"),
        ("not PEM", 1, "junk.pem: not a PEM CA certificate"),
        ("key of another cert", 1, "client-key.pem: private key does not match"),
    ],
)
def test_serve_refuses_tls_flags_that_cannot_work(tmp_path: Path, case: str, code: int, message: str) -> None:
    flags = _tls_case(case, make_pki(tmp_path / "pki"), tmp_path)
    result = subprocess.run(
        serve_command("--grpc-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0", *flags),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == code
    assert result.stderr.startswith("modelguard serve: ") and message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback, never "serving"


def tls_decision(port: int, pki: Pki, client: KeyPair | None) -> str:
    """The tier of one request over a new TLS connection (client: the certificate to present)."""
    cert, key = client.read() if client is not None else (None, None)
    credentials = grpc.ssl_channel_credentials(pki.ca.pem, private_key=key, certificate_chain=cert)
    message = ProcessingRequest(
        request_headers=HttpHeaders(
            headers=HeaderMap(headers=[HeaderValue(key=":path", raw_value=b"/v2/models/recommender/infer")])
        )
    )
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        call = ext_proc_grpc.ExternalProcessorStub(channel).Process(iter([message]), timeout=10)
        first = next(call)
        call.cancel()
    mutation = first.request_headers.response.header_mutation
    return str({h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}["x-modelguard-tier"])


def test_every_worker_serves_mutual_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    grpc_base, admin_base = consecutive_free_ports(2), consecutive_free_ports(2)
    flags = ["--grpc-tls-cert", str(pki.server.cert), "--grpc-tls-key", str(pki.server.key)]
    flags += ["--grpc-tls-client-ca", str(pki.ca_file)]
    flags += ["--grpc-address", f"127.0.0.1:{grpc_base}", "--admin-address", f"127.0.0.1:{admin_base}"]
    supervisor = subprocess.Popen(
        serve_command("--workers", "2", "--grace", "1", *flags), stderr=subprocess.PIPE, text=True
    )
    try:
        serving = [read_serving_line(supervisor, timeout=30) for _ in range(2)]
        assert {entry["grpc_tls"] for entry in serving} == {"mutual"}
        assert {entry["grpc_port"] for entry in serving} == {grpc_base, grpc_base + 1}
        for port in (grpc_base, grpc_base + 1):
            assert tls_decision(port, pki, pki.client) == "primary"
            with pytest.raises(grpc.RpcError) as refused:
                tls_decision(port, pki, None)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(timeout=5)
