"""Test-only helpers for the end-to-end tests: tiny upstreams and a traffic sampler.

Processes, ports, waiting and Envoy configs come from `ext_proc.processes` (shared with
`modelguard demo`); this module adds what only the tests need. Everything binds 127.0.0.1 only,
every wait is bounded, and every process or thread started here is stopped by its owner (the
fixtures in conftest.py).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import yaml

from ext_proc import processes
from ext_proc.processes import (
    LOCALHOST,
    EnvoyProcess,
    free_ports,
    http_request,
    repo_root,
    wait_for,
)
from tests.tls_certs import KeyPair

REPO_ROOT = repo_root()
ENVOY_DIR = REPO_ROOT / "envoy"
REFERENCE_ENVOY_CONFIG = ENVOY_DIR / "envoy.yaml"
# The transport_socket block that puts the modelguard cluster on mutual TLS; not a bootstrap.
MTLS_FRAGMENT = ENVOY_DIR / "modelguard-mtls-cluster.yaml"
ENVOY_FRAGMENTS = (MTLS_FRAGMENT,)
# Where MTLS_FRAGMENT expects its files (placeholders, replaced by mtls_transport_socket).
MTLS_CA, MTLS_CLIENT_CERT, MTLS_CLIENT_KEY = (
    f"/etc/modelguard/tls/{name}" for name in ("ca.pem", "client.pem", "client-key.pem")
)
EXAMPLE_POLICY = REPO_ROOT / "examples" / "policy.yaml"

MODEL_PATH = "/v2/models/recommender/infer"

# Cluster names in envoy/envoy.yaml.
MODELGUARD_CLUSTER = "modelguard"
PRIMARY_CLUSTER = "recommender-resnet50"
LIGHT_CLUSTER = "recommender-mobilenet"
CANARY_CLUSTER = "recommender-resnet50-v2"


def free_port() -> int:
    return free_ports(1)[0]


def model_cluster_ports(
    modelguard: int,
    primary: Sequence[int],
    light: Sequence[int],
    canary: Sequence[int] | None = None,
) -> dict[str, list[int]]:
    """cluster_ports for envoy/envoy.yaml. The canary defaults to a port nothing listens on
    (no test routes to it unless it says so)."""
    return {
        MODELGUARD_CLUSTER: [modelguard],
        PRIMARY_CLUSTER: list(primary),
        LIGHT_CLUSTER: list(light),
        CANARY_CLUSTER: list(canary) if canary is not None else [free_port()],
    }


def modelguard_command() -> list[str]:
    """How the tests launch modelguard: `python -m ext_proc.cli` from this interpreter by default.

    MODELGUARD_E2E_COMMAND overrides it (shell-split), e.g. "modelguard" to test the
    installed console script.
    """
    override = os.environ.get("MODELGUARD_E2E_COMMAND", "").strip()
    if override:
        return shlex.split(override)
    return processes.modelguard_command()


def mtls_transport_socket(ca: Path, client: KeyPair | None) -> dict[str, Any]:
    """MTLS_FRAGMENT's transport_socket with real files in place of its placeholder paths;
    client=None leaves out the client certificate (an Envoy that modelguard must refuse)."""
    loaded = yaml.safe_load(MTLS_FRAGMENT.read_text())
    socket: dict[str, Any] = loaded["transport_socket"]
    common = socket["typed_config"]["common_tls_context"]
    validation = common["validation_context"]
    assert validation["trusted_ca"] == {"filename": MTLS_CA}, "MTLS_FRAGMENT moved its CA"
    validation["trusted_ca"] = {"filename": str(ca)}
    (pair,) = common["tls_certificates"]
    assert pair == {"certificate_chain": {"filename": MTLS_CLIENT_CERT}, "private_key": {"filename": MTLS_CLIENT_KEY}}
    if client is None:
        del common["tls_certificates"]
    else:
        common["tls_certificates"] = [
            {"certificate_chain": {"filename": str(client.cert)}, "private_key": {"filename": str(client.key)}}
        ]
    return socket


class EnvoyFactory(Protocol):
    """envoy_factory(cluster_ports, ...) -> a running EnvoyProcess on the rendered reference config."""

    def __call__(
        self,
        cluster_ports: Mapping[str, Sequence[int]],
        *,
        source: Path = ...,
        without_ext_proc: bool = ...,
        concurrency: int = ...,
        ready_timeout: float = ...,
        transport_sockets: Mapping[str, Mapping[str, Any]] | None = ...,
    ) -> EnvoyProcess: ...


# --------------------------------------------------------------------------- upstream


class _QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Envoy closing a keep-alive connection at shutdown is not worth a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            return
        super().handle_error(request, client_address)


class Upstream:
    """A fake model server: 200 + {"server": name} for any path, or 503 while faulted; given
    ``serves``, 404 for any other path (query left off), as a server that knows one model name."""

    def __init__(self, name: str, serves: str | None = None) -> None:
        self.name = name
        self.serves = serves
        self._lock = threading.Lock()
        self._fault = False
        self._error_rate = 0.0
        self._delay = 0.0
        self._rng = random.Random(name)
        self.answered: list[tuple[float, int]] = []
        """(wall-clock time, status) of every answer, in order."""
        self._served: dict[int, int] = {}
        self._last_headers: dict[str, str] = {}
        self._last_body = b""
        self._server = _QuietHTTPServer((LOCALHOST, 0), self._make_handler())
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"upstream-{name}",
            daemon=True,
        )

    # -- control, all thread-safe
    def start(self) -> Upstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def set_fault(self, on: bool) -> None:
        with self._lock:
            self._fault = on

    def set_behaviour(self, error_rate: float = 0.0, delay: float = 0.0) -> None:
        """Answer 503 to a seeded ``error_rate`` share of requests, each after ``delay`` seconds."""
        with self._lock:
            self._error_rate, self._delay = error_rate, delay

    @property
    def fault(self) -> bool:
        with self._lock:
            return self._fault

    @property
    def request_count(self) -> int:
        with self._lock:
            return sum(self._served.values())

    def count(self, status: int) -> int:
        with self._lock:
            return self._served.get(status, 0)

    @property
    def last_headers(self) -> dict[str, str]:
        with self._lock:
            return dict(self._last_headers)

    @property
    def last_body(self) -> bytes:
        with self._lock:
            return self._last_body

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    # -- request handling
    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        received = handler.rfile.read(length) if length else b""
        with self._lock:
            delay = self._delay
            fault = self._fault or (self._error_rate > 0 and self._rng.random() < self._error_rate)
        if delay:
            time.sleep(delay)
        unknown = self.serves is not None and handler.path.split("?", 1)[0] != self.serves
        with self._lock:
            status = 404 if unknown else 503 if fault else 200
            self._served[status] = self._served.get(status, 0) + 1
            self.answered.append((time.time(), status))
            self._last_headers = {k.lower(): v for k, v in handler.headers.items()}
            self._last_body = received
        payload: dict[str, Any] = {"server": self.name, "path": handler.path}
        if fault:
            payload["fault"] = True
        body = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus
            # delayed ACK adds ~40 ms to every response.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                upstream._answer(self)

            def do_POST(self) -> None:
                upstream._answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


# --------------------------------------------------------------------------- traffic


@dataclass(frozen=True)
class Sample:
    """One request through Envoy, as the client saw it."""

    t: float  # time.monotonic() when the request was sent
    latency: float
    status: int  # 0: no HTTP answer (see error)
    server: str | None  # "server" from the upstream's JSON body
    tier: str | None  # x-modelguard-tier response header
    degraded: str | None  # x-modelguard-degraded response header
    error: str | None = None
    attempts: int | None = None  # x-envoy-attempt-count response header (1: no retry)

    @property
    def served_by_primary(self) -> bool:
        return self.status == 200 and self.server == "primary" and self.tier == "primary"

    @property
    def served_degraded_by_light(self) -> bool:
        return self.status == 200 and self.server == "light" and self.tier == "light" and self.degraded == "true"


def infer(url: str, headers: Mapping[str, str] | None = None, timeout: float = 2.0) -> processes.HttpResult:
    """An inference call (a POST with a JSON body): what modelguard judges."""
    return http_request(url, method="POST", headers=headers, body=b"{}", timeout=timeout)


def send_sample(url: str, headers: Mapping[str, str] | None = None, timeout: float = 2.0) -> Sample:
    t0 = time.monotonic()
    try:
        res = infer(url, headers=headers, timeout=timeout)
    except (OSError, http.client.HTTPException) as exc:
        return Sample(t0, time.monotonic() - t0, 0, None, None, None, repr(exc))
    server: str | None = None
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        server = res.json().get("server")
    return Sample(
        t=t0,
        latency=time.monotonic() - t0,
        status=res.status,
        server=server,
        tier=res.headers.get("x-modelguard-tier"),
        degraded=res.headers.get("x-modelguard-degraded"),
        attempts=int(res.headers["x-envoy-attempt-count"]) if "x-envoy-attempt-count" in res.headers else None,
    )


@dataclass
class Traffic:
    """A steady request stream from one background thread, bounded in time and count."""

    url: str
    interval: float = 0.02
    max_duration: float = 60.0
    max_requests: int = 5_000
    request_timeout: float = 1.0
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_duration
        next_at = time.monotonic()
        for _ in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() >= deadline:
                return
            sample = send_sample(self.url, timeout=self.request_timeout)
            with self._lock:
                self.samples.append(sample)
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.request_timeout + 5)

    def since(self, t: float, until: float | None = None) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.t >= t and (until is None or s.t < until)]

    def first_since(self, t: float, pred: Callable[[Sample], bool]) -> Sample | None:
        return next((s for s in self.since(t) if pred(s)), None)

    def wait_first(self, t: float, pred: Callable[[Sample], bool], timeout: float) -> Sample | None:
        return wait_for(lambda: self.first_since(t, pred), timeout, interval=0.02)

    def wait_run(self, t: float, pred: Callable[[Sample], bool], length: int, timeout: float) -> Sample | None:
        """First sample after t that starts `length` consecutive samples matching pred."""

        def probe() -> Sample | None:
            run: list[Sample] = []
            for s in self.since(t):
                run = [*run, s] if pred(s) else []
                if len(run) >= length:
                    return run[0]
            return None

        return wait_for(probe, timeout, interval=0.02)


def summarize(samples: list[Sample]) -> str:
    buckets: dict[str, int] = {}
    for s in samples:
        key = f"{s.status}/{s.server}/{s.tier}/{'degraded' if s.degraded else '-'}"
        if s.error:
            key = "error"
        buckets[key] = buckets.get(key, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(buckets.items())) or "<none>"


@contextlib.contextmanager
def running_traffic(traffic: Traffic) -> Iterator[Traffic]:
    traffic.start()
    try:
        yield traffic
    finally:
        traffic.stop()
