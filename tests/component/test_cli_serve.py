"""`modelguard serve` as a real process: it binds, reports its ports, answers, and stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from envoy.service.ext_proc.v3.external_processor_pb2 import HttpHeaders, ProcessingRequest, ProcessingResponse
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ext_proc.cli import grace_seconds
from ext_proc.processes import consecutive_free_ports, wait_for
from ext_proc.server.settings import DEFAULT_GRPC_EXPERIMENTS, GRPC_EXPERIMENTS
from tests.component.conftest import serve_command
from tests.component.log_lines import LogLines
from tests.tls_certs import KeyPair, Pki, make_pki

INFER_HEADERS = [
    HeaderValue(key=":method", raw_value=b"POST"),
    HeaderValue(key=":path", raw_value=b"/v2/models/recommender/infer"),
]


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
        ProcessingRequest(request_headers=HttpHeaders(headers=HeaderMap(headers=INFER_HEADERS))),
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
    message = ProcessingRequest(request_headers=HttpHeaders(headers=HeaderMap(headers=INFER_HEADERS)))
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
    flags += ["--admin-grpc-address", "off"]  # the ports after the admin block are not known to be free
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


def grpc_health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(answer.status)


def ignored_signal(lines: LogLines, name: str) -> dict[str, object]:
    return lines.wait_for(lambda e: e.get("event") == "signal_ignored" and e.get("signal") == name, timeout=10)[0]


def test_serve_reloads_on_hup_logs_and_ignores_usr1_usr2_and_still_drains_on_sigterm() -> None:
    process = subprocess.Popen(
        serve_command("--grpc-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0", "--grace", "1"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = LogLines(process)
        serving = lines.event("serving", timeout=20)[0]
        grpc_port, admin = int(serving["grpc_port"]), f"http://127.0.0.1:{serving['admin_port']}"
        process.send_signal(signal.SIGHUP)
        (reload,) = lines.event("policy_unchanged", timeout=10)
        assert reload["trigger"] == "SIGHUP" and reload["sha256"] == serving["policy_sha256"]
        for signum in (signal.SIGUSR1, signal.SIGUSR2):
            process.send_signal(signum)
            entry = ignored_signal(lines, signum.name)
            assert entry["level"] == "warning" and process.poll() is None
        (first,) = exchange_over_grpc(grpc_port)  # still deciding
        assert first.request_headers.response.clear_route_cache
        assert grpc_health(grpc_port) == health_pb2.HealthCheckResponse.SERVING
        with urllib.request.urlopen(admin + "/readyz", timeout=5) as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        lines.event("stopped", timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def test_a_second_sigterm_while_draining_is_logged_and_the_drain_keeps_its_grace() -> None:
    process = subprocess.Popen(
        serve_command("--grpc-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0", "--grace", "2"),
        stderr=subprocess.PIPE,
        text=True,
    )
    release = threading.Event()

    def held_open() -> Iterator[ProcessingRequest]:
        yield ProcessingRequest(request_headers=HttpHeaders(headers=HeaderMap(headers=INFER_HEADERS)))
        release.wait(15)  # the stream stays open, as a request waiting for its response would

    try:
        lines = LogLines(process)
        port = int(lines.event("serving", timeout=20)[0]["grpc_port"])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = ext_proc_grpc.ExternalProcessorStub(channel).Process(held_open(), timeout=15)
            next(call)  # the request-phase answer: the stream is in flight
            process.send_signal(signal.SIGTERM)
            lines.event("stopping", timeout=10)
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            entry = ignored_signal(lines, "SIGTERM")
            assert entry["reason"] == "already draining; in-flight streams keep the rest of --grace"
            assert process.wait(timeout=15) == 0
            assert time.monotonic() - sent > 1.0, "the second SIGTERM cut the drain short"
            release.set()
    finally:
        release.set()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


@pytest.mark.parametrize(
    ("grace", "message"),
    [
        ("nan", "'nan': must be from 0 to 3600 seconds"),
        ("inf", "'inf': must be from 0 to 3600 seconds"),
        ("-1", "'-1': must be from 0 to 3600 seconds"),
        ("3601", "'3601': must be from 0 to 3600 seconds"),
        ("soon", "'soon' is not a number of seconds"),
    ],
)
def test_serve_refuses_a_grace_that_is_not_0_to_3600_seconds(grace: str, message: str) -> None:
    result = subprocess.run(
        serve_command("--grpc-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0", "--grace", grace),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"argument --grace: {message}" in result.stderr
    assert "Traceback" not in result.stderr


def test_grace_bounds_are_inclusive() -> None:
    assert grace_seconds("0") == 0.0
    assert grace_seconds("3600") == 3600.0
    assert grace_seconds("0.5") == 0.5


def test_serve_with_no_grace_stops_at_once_on_sigterm() -> None:
    process = subprocess.Popen(
        serve_command("--grpc-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0", "--grace", "0"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = LogLines(process)
        lines.event("serving", timeout=20)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert lines.event("stopping", timeout=5)[0]["grace_s"] == 0.0
        lines.event("stopped", timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def catches(pid: int, signum: signal.Signals) -> bool:
    """Whether the process has a handler for ``signum`` (its SigCgt mask in /proc)."""
    with open(f"/proc/{pid}/status") as status:
        mask = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
    return bool(mask >> (signum - 1) & 1)


def wait_caught(process: subprocess.Popen[str], signum: signal.Signals) -> None:
    """Until ``process`` has a handler for ``signum``; fails if it exits, or 20 s pass, first."""
    caught = wait_for(lambda: process.poll() is not None or catches(process.pid, signum), 20.0, interval=0.01)
    assert caught and process.poll() is None, f"{signum.name} not caught while loading"


def start_reading_a_fifo(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    """``modelguard serve`` whose policy is a FIFO: it blocks loading the policy until the test
    writes it, which holds it, deterministically, in the stretch before the server's handlers."""
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    process = subprocess.Popen(serve_command(*args, policy=fifo), stderr=subprocess.PIPE, text=True)
    return process, fifo


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from /proc")
def test_signals_while_the_policy_loads_are_acted_on_once_serving(tmp_path: Path) -> None:
    process, fifo = start_reading_a_fifo(
        tmp_path, "--grpc-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0", "--grace", "1"
    )
    try:
        lines = LogLines(process)
        wait_caught(process, signal.SIGHUP)  # caught from the start, not only once serving
        process.send_signal(signal.SIGHUP)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        assert process.poll() is None, "a signal during start-up killed the process"
        fifo.write_text((Path(__file__).resolve().parents[2] / "examples" / "policy.yaml").read_text())
        assert process.wait(timeout=20) == 0
        assert ignored_signal(lines, "SIGHUP")["reason"] == "draining: the policy is not reloaded any more"
        events = [entry.get("event") for entry in lines.entries]
        assert events.index("serving") < events.index("stopping") < events.index("stopped")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from /proc")
def test_a_supervisor_told_to_stop_while_loading_starts_no_worker(tmp_path: Path) -> None:
    grpc_base, admin_base = consecutive_free_ports(2), consecutive_free_ports(2)
    process, fifo = start_reading_a_fifo(
        tmp_path, "--workers", "2", "--grpc-address", f"127.0.0.1:{grpc_base}",
        "--admin-address", f"127.0.0.1:{admin_base}", "--admin-grpc-address", "off",
    )  # fmt: skip
    try:
        lines = LogLines(process)
        wait_caught(process, signal.SIGTERM)
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGUSR1)
        fifo.write_text((Path(__file__).resolve().parents[2] / "examples" / "policy.yaml").read_text())
        assert process.wait(timeout=20) == 0
        assert ignored_signal(lines, "SIGUSR1")["event"] == "signal_ignored"
        assert "workers_started" not in [entry.get("event") for entry in lines.entries]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
