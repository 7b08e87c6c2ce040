"""Helpers for the end-to-end tests: real Envoy, real modelguard, tiny upstreams.

Everything binds 127.0.0.1 only, every wait is bounded, and every process or thread started
here is stopped by its owner (the fixtures in conftest.py).
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import itertools
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ENVOY_DIR = REPO_ROOT / "envoy"
REFERENCE_ENVOY_CONFIG = ENVOY_DIR / "envoy.yaml"
EXAMPLE_POLICY = REPO_ROOT / "examples" / "policy.yaml"
ENVOY_BIN = Path(sys.executable).parent / "envoy"

LOCALHOST = "127.0.0.1"
MODEL_PATH = "/v2/models/recommender/infer"

T = TypeVar("T")


# --------------------------------------------------------------------------- ports, waiting


def free_ports(count: int) -> list[int]:
    """Return `count` distinct free TCP ports on 127.0.0.1 (all held open while picking)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOCALHOST, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_port() -> int:
    return free_ports(1)[0]


def wait_for(
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 0.05,
) -> T | None:
    """Call `probe` until it returns something other than None/False, at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# --------------------------------------------------------------------------- HTTP client


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 2.0,
) -> HttpResult:
    """One HTTP/1.1 request on a fresh connection. Header names come back lower-case."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read()
        return HttpResult(
            status=resp.status,
            headers={k.lower(): v for k, v in resp.getheaders()},
            body=data,
        )
    finally:
        conn.close()


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """Status of GET url, or None when nothing answers."""
    try:
        return http_request(url, timeout=timeout).status
    except (OSError, http.client.HTTPException):
        return None


# --------------------------------------------------------------------------- upstream


class Upstream:
    """A fake model server: 200 + {"server": name} for any path, or 503 while faulted."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._fault = False
        self._served: dict[int, int] = {}
        self._last_headers: dict[str, str] = {}
        self._server = ThreadingHTTPServer((LOCALHOST, 0), self._make_handler())
        self._server.daemon_threads = True
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
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    # -- request handling
    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            handler.rfile.read(length)
        with self._lock:
            fault = self._fault
            status = 503 if fault else 200
            self._served[status] = self._served.get(status, 0) + 1
            self._last_headers = {k.lower(): v for k, v in handler.headers.items()}
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


# --------------------------------------------------------------------------- Envoy config


def _set_socket_address(holder: dict[str, Any], port: int) -> None:
    holder["address"] = {"socket_address": {"address": LOCALHOST, "port_value": port}}


def render_envoy_config(
    source: Path,
    destination: Path,
    *,
    listener_port: int,
    admin_port: int,
    cluster_ports: Mapping[str, int],
) -> Path:
    """Copy an Envoy bootstrap with every address moved to 127.0.0.1 and the given ports.

    `cluster_ports` must name every static cluster (so no test ever reaches a port from the
    reference file); each cluster gets a single endpoint 127.0.0.1:port.
    """
    config: dict[str, Any] = copy.deepcopy(yaml.safe_load(source.read_text()))
    _set_socket_address(config["admin"], admin_port)

    listeners = config["static_resources"]["listeners"]
    if len(listeners) != 1:
        raise ValueError(f"expected one listener in {source}, found {len(listeners)}")
    _set_socket_address(listeners[0], listener_port)

    clusters = config["static_resources"]["clusters"]
    names = {c["name"] for c in clusters}
    if names != set(cluster_ports):
        raise ValueError(f"cluster_ports must cover exactly {sorted(names)}, got {sorted(cluster_ports)}")
    for cluster in clusters:
        name = cluster["name"]
        cluster["type"] = "STATIC"
        cluster["load_assignment"] = {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": LOCALHOST,
                                        "port_value": cluster_ports[name],
                                    }
                                }
                            }
                        }
                    ]
                }
            ],
        }
    destination.write_text(yaml.safe_dump(config, sort_keys=False))
    return destination


def validate_envoy_config(config: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENVOY_BIN), "--mode", "validate", "-c", str(config), "-l", "warning"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --------------------------------------------------------------------------- processes


_BASE_IDS = itertools.count(1)


def unique_base_id() -> int:
    """A hot-restart base id no other Envoy started by this or another pytest process uses."""
    return (os.getpid() % 100_000) * 1_000 + next(_BASE_IDS) % 1_000


class ManagedProcess:
    """A subprocess with its output in a log file; stop() is SIGTERM, then SIGKILL."""

    name = "process"

    def __init__(self, argv: list[str], log_path: Path, cwd: Path = REPO_ROOT) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> int | None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            return self.proc.returncode
        finally:
            self._log.close()

    def log_text(self, limit: int = 20_000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<cannot read {self.log_path}: {exc}>"
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def describe(self) -> str:
        return (
            f"----- {self.name} (pid {self.proc.pid}, rc {self.proc.poll()}) "
            f"log {self.log_path} -----\n{self.log_text()}"
        )


class EnvoyProcess(ManagedProcess):
    name = "envoy"

    def __init__(
        self,
        config_path: Path,
        *,
        listener_port: int,
        admin_port: int,
        log_path: Path,
        base_id: int | None = None,
    ) -> None:
        self.config_path = config_path
        self.listener_port = listener_port
        self.admin_port = admin_port
        self.base_id = unique_base_id() if base_id is None else base_id
        self.ready_after: float | None = None
        super().__init__(
            [
                str(ENVOY_BIN),
                "-c",
                str(config_path),
                "--base-id",
                str(self.base_id),
                "--concurrency",
                "1",
                "-l",
                "warning",
            ],
            log_path,
        )

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.listener_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOCALHOST}:{self.admin_port}"

    def wait_ready(self, timeout: float = 20.0) -> float:
        """Wait until admin /ready says LIVE; return seconds since launch."""

        def live() -> bool:
            if not self.running():
                raise RuntimeError(f"envoy exited early\n{self.describe()}")
            try:
                res = http_request(self.admin_url + "/ready", timeout=0.5)
            except (OSError, http.client.HTTPException):
                return False
            return res.status == 200 and res.body.strip() == b"LIVE"

        if not wait_for(live, timeout, interval=0.05):
            raise TimeoutError(f"envoy not LIVE within {timeout}s\n{self.describe()}")
        self.ready_after = time.monotonic() - self.started_at
        return self.ready_after

    def stats(self, filter_regex: str = "") -> dict[str, int]:
        """Counters and gauges from the admin endpoint (histograms skipped)."""
        path = "/stats"
        if filter_regex:
            path += "?filter=" + filter_regex
        res = http_request(self.admin_url + path, timeout=2.0)
        out: dict[str, int] = {}
        for line in res.body.decode().splitlines():
            name, sep, value = line.partition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out


EnvoyFactory = Callable[..., EnvoyProcess]
"""envoy_factory(cluster_ports, *, source=..., ready_timeout=...) -> running EnvoyProcess."""


def modelguard_command() -> list[str]:
    """How to launch modelguard: `python -m ext_proc.cli` from this interpreter by default.

    MODELGUARD_E2E_COMMAND overrides it (shell-split), e.g. "modelguard" to test the
    installed console script.
    """
    override = os.environ.get("MODELGUARD_E2E_COMMAND", "").strip()
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", "ext_proc.cli"]


class ModelguardProcess(ManagedProcess):
    name = "modelguard"

    def __init__(self, policy: Path, *, grpc_port: int, admin_port: int, log_path: Path) -> None:
        self.policy = policy
        self.grpc_port = grpc_port
        self.admin_port = admin_port
        self.ready_after: float | None = None
        argv = [
            *modelguard_command(),
            "serve",
            "--policy",
            str(policy),
            "--grpc-address",
            f"{LOCALHOST}:{grpc_port}",
            "--admin-address",
            f"{LOCALHOST}:{admin_port}",
        ]
        super().__init__(argv, log_path)

    @property
    def admin_url(self) -> str:
        return f"http://{LOCALHOST}:{self.admin_port}"

    def wait_ready(self, timeout: float = 20.0) -> float:
        def ready() -> bool:
            if not self.running():
                raise RuntimeError(f"modelguard exited early\n{self.describe()}")
            return http_status(self.admin_url + "/readyz", timeout=0.5) == 200

        if not wait_for(ready, timeout, interval=0.05):
            raise TimeoutError(f"modelguard not ready within {timeout}s\n{self.describe()}")
        self.ready_after = time.monotonic() - self.started_at
        return self.ready_after

    def state(self) -> dict[str, Any]:
        res = http_request(self.admin_url + "/v1/state", timeout=1.0)
        if res.status != 200:
            raise RuntimeError(f"/v1/state answered {res.status}: {res.body[:200]!r}")
        data: dict[str, Any] = res.json()
        return data

    def tier_state(self, model: str, tier: str) -> str | None:
        try:
            state = self.state()
        except (OSError, http.client.HTTPException, RuntimeError, ValueError):
            return None
        try:
            return str(state["models"][model]["tiers"][tier]["state"])
        except (KeyError, TypeError):
            return None


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

    @property
    def served_by_primary(self) -> bool:
        return self.status == 200 and self.server == "primary" and self.tier == "primary"

    @property
    def served_degraded_by_light(self) -> bool:
        return (
            self.status == 200 and self.server == "light" and self.tier == "light" and self.degraded == "true"
        )


def send_sample(url: str, headers: Mapping[str, str] | None = None, timeout: float = 2.0) -> Sample:
    t0 = time.monotonic()
    try:
        res = http_request(url, headers=headers, timeout=timeout)
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

    def wait_run(
        self, t: float, pred: Callable[[Sample], bool], length: int, timeout: float
    ) -> Sample | None:
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
