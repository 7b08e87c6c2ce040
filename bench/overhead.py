"""Overhead benchmark: modelguard against the limit (Envoy alone) and its peers, side by side.

Four Envoy front proxies (the reference config envoy/envoy.yaml, Envoy --concurrency 1) share
one upstream, a second Envoy answering every request with a small JSON `direct_response`:

  (a)  Envoy, no ext_proc filter                                        the ceiling
  (b)  Envoy + a no-op grpc.aio processor (bench/noop_processor.py)     the floor for any Python processor
  (c)  Envoy + envoy-extproc-sdk's do-nothing processor, in its own venv  the existing Python peer
  (d)  Envoy + modelguard (20 models, 3 tiers each, 5 with a canary at 10%, path_prefix matches), as it runs: on uvloop
  (bu) (b) with modelguard's runtime settings (uvloop, gRPC flags), (da) (d) with plain grpc.aio
       settings: each pair like for like

Every figure is taken in one invocation: the configs run back to back, in alternating order over
--rounds rounds, so that every ratio compares runs made minutes apart on the same machine.

  1. closed-loop throughput: wrk -t1 -c C -d S (the median over rounds), with the CPU time the
     processor process and the front Envoy spent per request (/proc/PID/stat, before and after);
  2. latency at fixed rates of 25%, 50%, 75% of (d)'s throughput, the same rates for every config:
     C h2load processes `--h1 -c1 --rps R/C -D S` started evenly over one period (one process
     `-c C` would send bursts of C requests), percentiles over every request of every round.

Writes overhead.md and overhead.json to --out and prints the table; bench/README.md explains the
configs, the SDK's shim, the ratios and the caveats. wrk and h2load come from the Debian packages
wrk and nghttp2-client; when missing they are installed with apt-get (root only).

Usage:
  python -m bench.overhead [--duration S] [--concurrency C] [--rounds N] [--out DIR]
                           [--configs a,b,bu,c,d,da] [--loads 25,50,75] [--smoke] [--profile] [--sdk-venv DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import math
import os
import platform
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.policies import policy_document
from ext_proc.policy import load_policy
from ext_proc.processes import (
    LOCALHOST,
    EnvoyProcess,
    ManagedProcess,
    ModelguardProcess,
    StackError,
    envoy_binary,
    free_ports,
    http_request,
    modelguard_command,
    reference_envoy_config,
    render_envoy_config,
    repo_root,
    say,
    wait_for,
)
from ext_proc.samples import percentile
from ext_proc.server.settings import DEFAULT_GRPC_EXPERIMENTS, GRPC_EXPERIMENTS

CONFIGS: dict[str, str] = {
    "a": "Envoy, no ext_proc (ceiling)",
    "b": "Envoy + no-op grpc.aio processor (floor)",
    "bu": "Envoy + the same no-op with modelguard's runtime settings",
    "c": "Envoy + envoy-extproc-sdk no-op (peer)",
    "d": "Envoy + modelguard",
    "da": "Envoy + modelguard with plain grpc.aio settings",
}
"""(b), (c) and (d) are the issue's configs; (bu) and (da) swap the runtime settings of (b) and (d):
modelguard runs on uvloop with its gRPC flags (ext_proc/settings.py), the no-op on plain grpc.aio.
So the settings' share and modelguard's own share of any difference can each be read like for like."""
PLAIN_GRPC = {GRPC_EXPERIMENTS: ""}
"""gRPC's own defaults, whatever the caller's environment says."""
SMOKE_CONFIGS = ("a", "b", "d")
MODELS = 20
PRIMARY_ROUTE = "recommender-resnet50"
LIGHT_ROUTE = "recommender-mobilenet"
CANARY_ROUTE = "recommender-resnet50-v2"
CANARIES = 5
MODEL_CLUSTERS = ("recommender-resnet50", "recommender-mobilenet", "recommender-resnet50-v2")
PROCESSOR_CLUSTER = "modelguard"
LOAD_FRACTIONS = (0.25, 0.5, 0.75)
REFERENCE_FRACTION = 0.5
UPSTREAM_BODY = (
    '{"model_name": "model", "model_version": "1", "outputs": '
    '[{"name": "scores", "shape": [1, 4], "datatype": "FP32", "data": [0.12, 0.34, 0.56, 0.78]}]}'
)

SDK_VERSION = "0.1.1"
SDK_REQUIREMENTS = (f"envoy-extproc-sdk=={SDK_VERSION}", "xds-protos", "ddtrace<2", "grpcio-health-checking")
SDK_SHIM = Path(__file__).resolve().parent / "extproc_sdk_shim"
SDK_ENV = {
    # ddtrace is imported and its spans created on every message, as published; with no agent to
    # send them to, tracing is off so that the peer does not also pay for failed agent connections.
    "DD_TRACE_ENABLED": "false",
    "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
    "DD_REMOTE_CONFIGURATION_ENABLED": "false",
    "DD_TRACE_STARTUP_LOGS": "false",
}
APT_PACKAGES = ("wrk", "nghttp2-client")
TOOLS = ("wrk", "h2load")

TARGET_D_OVER_B = 0.9
TARGET_ADDED_P99 = 1.1
TARGET_D_OVER_C = 2.0

_EXT_PROC_STATS = r"^http\.ingress_http\.(downstream_rq_completed|downstream_rq_[2-5]xx|ext_proc\.)"
_FAILED_OPEN = ("failure_mode_allowed", "message_timeouts", "streams_failed")


MEASURE_ERRORS = (RuntimeError, subprocess.SubprocessError, OSError, StackError, http.client.HTTPException)
"""What one measurement may raise (a tool failing, a process gone); recorded as that run's error."""


class BenchError(RuntimeError):
    """The benchmark cannot run at all (a tool missing and not installable, a bad option)."""


class Unavailable(RuntimeError):
    """One config cannot run here; the others still do. The message says why."""


# --------------------------------------------------------------------------- tools


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def tools_status() -> tuple[bool, str]:
    """(usable, why not): wrk and h2load are on PATH, or can be installed (root and apt-get)."""
    missing = missing_tools()
    if not missing:
        return True, ""
    if os.geteuid() == 0 and shutil.which("apt-get"):
        return True, ""
    return False, (
        f"{' and '.join(missing)} not on PATH and not installable here (needs root and apt-get): "
        f"apt-get install -y {' '.join(APT_PACKAGES)}"
    )


def ensure_tools(log_path: Path) -> None:
    """Install wrk and h2load with apt-get when missing (root only); BenchError if impossible."""
    missing = missing_tools()
    if not missing:
        return
    usable, why = tools_status()
    if not usable:
        raise BenchError(why)
    say(f"installing {' '.join(APT_PACKAGES)} with apt-get (missing: {', '.join(missing)}) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log_path.open("ab") as log:
        for argv, timeout in (
            (["apt-get", "update"], 300),
            (["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES], 600),
        ):
            try:
                done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False)
            except subprocess.TimeoutExpired as exc:
                raise BenchError(f"{' '.join(argv)} took more than {timeout} s (log: {log_path})") from exc
            if done.returncode != 0:
                raise BenchError(f"{' '.join(argv)} exited {done.returncode} (log: {log_path})")
    still = missing_tools()
    if still:
        raise BenchError(f"{', '.join(still)} still missing after apt-get install (log: {log_path})")


def tool_version(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


# --------------------------------------------------------------------------- the SDK's venv


def _shim_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted((SDK_SHIM / "grpc_health_check").rglob("*.py")):
        digest.update(str(path.relative_to(SDK_SHIM)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def prepare_sdk_venv(venv: Path, log_path: Path) -> Path:
    """The SDK's own venv (created, or reused when it matches): its python. Unavailable if not."""
    python = venv / "bin" / "python"
    marker = venv / "modelguard-bench.json"
    expected = {
        "requirements": list(SDK_REQUIREMENTS),
        "shim": _shim_digest(),
        "python": ".".join(map(str, sys.version_info[:2])),
    }
    env = {**os.environ, **SDK_ENV, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    check = [str(python), "-c", "import envoy_extproc_sdk, grpc_health_check.v1.health_pb2_grpc"]

    def importable() -> bool:
        try:
            done = subprocess.run(check, capture_output=True, env=env, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    with contextlib.suppress(OSError, ValueError):
        if json.loads(marker.read_text()) == expected and importable():
            return python
    say(f"(c): creating the envoy-extproc-sdk venv in {venv} (once; reused after) ...")
    if venv.exists():
        shutil.rmtree(venv)
    with log_path.open("ab") as log:

        def step(argv: list[str], timeout: float, what: str) -> None:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            try:
                done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False)
            except subprocess.TimeoutExpired as exc:
                raise Unavailable(f"{what} took more than {timeout:g} s (log: {log_path})") from exc
            if done.returncode != 0:
                log.flush()
                last = _last_line(log_path)
                raise Unavailable(f"{what} failed with exit status {done.returncode}: {last} (log: {log_path})")

        step([sys.executable, "-m", "venv", str(venv)], 120, "creating the venv")
        step([str(python), "-m", "pip", "install", "-q", *SDK_REQUIREMENTS], 900, "pip install of the SDK")
        found = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if found.returncode != 0 or not found.stdout.strip():
            raise Unavailable(f"cannot find the venv's site-packages: {found.stderr.strip()[-300:]}")
        shutil.copytree(SDK_SHIM / "grpc_health_check", Path(found.stdout.strip()) / "grpc_health_check")
    done = subprocess.run(check, capture_output=True, text=True, env=env, timeout=60, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise Unavailable(f"the SDK does not import with the shim: {last}")
    marker.write_text(json.dumps(expected))
    return python


def _last_line(path: Path) -> str:
    """The last non-empty line of a log, for an error message."""
    with contextlib.suppress(OSError):
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
    return "?"


# --------------------------------------------------------------------------- configs


UPSTREAM_CONFIG = """\
# written by bench/overhead.py: the upstream of every config, Envoy answering by itself
admin:
  address: {socket_address: {address: %(host)s, port_value: %(admin)d}}
static_resources:
  listeners:
    - name: upstream
      address: {socket_address: {address: %(host)s, port_value: %(port)d}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": %(hcm)s
                stat_prefix: upstream
                codec_type: AUTO
                route_config:
                  name: upstream
                  virtual_hosts:
                    - name: model
                      domains: ["*"]
                      routes:
                        - match: {prefix: /}
                          direct_response: {status: 200, body: {inline_string: %(body)s}}
                          response_headers_to_add:
                            - header: {key: content-type, value: application/json}
                              append_action: OVERWRITE_IF_EXISTS_OR_ADD
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""


def upstream_config(path: Path, listener_port: int, admin_port: int) -> Path:
    """An Envoy answering every request itself: 200 and a small JSON body (no Python on that path)."""
    body = json.dumps(UPSTREAM_BODY)  # a JSON string is a YAML string
    hcm = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    values = {"host": LOCALHOST, "port": listener_port, "admin": admin_port, "body": body, "hcm": hcm}
    path.write_text(UPSTREAM_CONFIG % values)
    return path


def start_upstream(out: Path, name: str = "upstream") -> EnvoyProcess:
    """The direct-response upstream Envoy on free ports, its config and log under ``out``; the
    caller stops it (or enters it as a context). Its listener is ``.listener_port``."""
    listener_port, admin_port = free_ports(2)
    return EnvoyProcess(
        upstream_config(out / f"{name}.yaml", listener_port, admin_port),
        listener_port=listener_port,
        admin_port=admin_port,
        log_path=out / f"{name}.log",
    )


def write_policy(path: Path, body_model: bool = False) -> Path:
    """20 models, each primary -> recommender-resnet50, light -> recommender-mobilenet, then a
    respond tier, and 5 of them with a canary at 10% -> recommender-resnet50-v2 (keyed by the
    x-request-id Envoy gives each request): every model's routes exist in the reference Envoy config.
    ``body_model``: one more model, matched by an OpenAI body's model (the load never names it: what
    headers-only requests pay for such a policy)."""
    document = policy_document(
        MODELS, primary_route=PRIMARY_ROUTE, light_route=LIGHT_ROUTE, canaries=CANARIES, canary_route=CANARY_ROUTE
    )
    if body_model:
        tiers = [{"name": "primary", "route": PRIMARY_ROUTE}]
        document["models"].append({"name": "chat", "match": {"body_model": "llama-3"}, "tiers": tiers})
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    load_policy(path)  # fail here, not in the subprocess
    return path


def load_paths(models_hit: int) -> list[str]:
    """The request paths, spread over `models_hit` of the 20 models (model-0, ...)."""
    count = max(1, min(MODELS, models_hit))
    step = MODELS / count
    return [f"/v2/models/model-{int(i * step)}/infer" for i in range(count)]


WRK_SCRIPT = """-- written by bench/overhead.py: round-robin over the model paths; a JSON summary at the end
local paths = {%(paths)s}
local reqs = {}
local n = 0
init = function(args)
  for i, p in ipairs(paths) do reqs[i] = wrk.format("POST", p, nil, "{}") end
end
request = function()
  n = n + 1
  if n > #reqs then n = 1 end
  return reqs[n]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests": %%d, "duration_us": %%d, "connect_errors": %%d, ' ..
    '"read_errors": %%d, "write_errors": %%d, "status_errors": %%d, "timeouts": %%d, ' ..
    '"p50_us": %%.1f, "p90_us": %%.1f, "p99_us": %%.1f, "mean_us": %%.1f, "max_us": %%.1f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


def write_wrk_script(path: Path, paths: Sequence[str]) -> Path:
    path.write_text(WRK_SCRIPT % {"paths": ", ".join(json.dumps(p) for p in paths)})
    return path


# --------------------------------------------------------------------------- processes


@dataclass
class Stack:
    """One config: its front Envoy and its processor process (None for (a))."""

    key: str
    envoy: EnvoyProcess
    processor: ManagedProcess | None


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (every thread), in clock ticks, from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")


def grpc_serving(port: int) -> bool:
    channel = grpc.insecure_channel(f"{LOCALHOST}:{port}")
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False
    finally:
        channel.close()


def wait_processor(process: ManagedProcess, probe: Callable[[], bool], timeout: float) -> None:
    def ready() -> bool:
        if not process.running():
            raise Unavailable(f"{process.name} exited with status {process.returncode}\n{process.describe()}")
        return probe()

    if not wait_for(ready, timeout, interval=0.1):
        raise Unavailable(f"{process.name} not serving within {timeout:g} s\n{process.describe()}")


PROFILE_WRAPPER = """\
import cProfile, runpy, sys, time
out, module = sys.argv[1], sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
profiler = cProfile.Profile(time.thread_time_ns, 1e-9)
profiler.enable()
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    profiler.disable()
    profiler.dump_stats(out)
"""


def profiled_command(out: Path, module: str) -> list[str]:
    """`python -m module` under cProfile, timed in CPU time of the main thread (time.thread_time):
    the event loop's idle waits and the time the process is not scheduled do not count."""
    return [sys.executable, "-c", PROFILE_WRAPPER, str(out), module]


def start_processor(
    key: str, out: Path, sdk_python: Path | None, profile: bool, noop_api: str = "readwrite", body_model: bool = False
) -> tuple[ManagedProcess, int, Callable[[], bool]]:
    """Launch the processor of a config on a free port: (process, port, readiness probe)."""
    port, admin_port = free_ports(2)
    if key in ("d", "da"):
        command = modelguard_command()
        if profile:
            command = profiled_command(out / f"profile-{key}.prof", "ext_proc.cli")
        policy = write_policy(out / "policy.yaml", body_model)
        env = {k: v for k, v in os.environ.items() if k != GRPC_EXPERIMENTS}  # (d): modelguard's default
        if key == "da":
            env.update(PLAIN_GRPC)
        modelguard = ModelguardProcess(
            policy,
            grpc_port=port,
            admin_port=admin_port,
            log_path=out / f"{key}-modelguard.log",
            command=command,
            extra_args=("--event-loop", "asyncio") if key == "da" else (),
            env=env,
        )
        modelguard.name = f"({key}) modelguard"
        return modelguard, port, modelguard.ready
    if key in ("b", "bu"):
        module = "bench.noop_processor"
        command = profiled_command(out / f"profile-{key}.prof", module) if profile else [sys.executable, "-m", module]
        loop = "uvloop" if key == "bu" else "asyncio"
        noop_env = dict(os.environ)
        noop_env[GRPC_EXPERIMENTS] = DEFAULT_GRPC_EXPERIMENTS if key == "bu" else ""
        process = ManagedProcess(
            [*command, "--port", str(port), "--api", noop_api, "--event-loop", loop],
            out / f"{key}-noop.log",
            cwd=repo_root(),
            env=noop_env,
        )
        process.name = f"({key}) no-op processor"
    elif key == "c":
        if sdk_python is None:
            raise Unavailable("no SDK venv")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(SDK_ENV)
        env.update(PLAIN_GRPC)
        process = ManagedProcess(
            [str(sdk_python), str(SDK_SHIM / "sdk_noop_server.py"), "--port", str(port)],
            out / "c-sdk.log",
            cwd=out,
            env=env,
        )
        process.name = "(c) envoy-extproc-sdk processor"
    else:
        raise ValueError(f"config {key!r} has no processor")
    return process, port, lambda: grpc_serving(port)


def start_front_envoy(key: str, out: Path, upstream_port: int, processor_ports: Sequence[int]) -> EnvoyProcess:
    """The reference config in front of the upstream; no processor ports: without ext_proc."""
    listener, admin = free_ports(2)
    cluster_ports: dict[str, list[int]] = {name: [upstream_port] for name in MODEL_CLUSTERS}
    if processor_ports:
        cluster_ports[PROCESSOR_CLUSTER] = list(processor_ports)
    config = render_envoy_config(
        reference_envoy_config(),
        out / f"{key}-envoy.yaml",
        listener_port=listener,
        admin_port=admin,
        cluster_ports=cluster_ports,
        without_ext_proc=not processor_ports,
    )
    envoy = EnvoyProcess(config, listener_port=listener, admin_port=admin, log_path=out / f"{key}-envoy.log")
    envoy.name = f"({key}) front Envoy"
    return envoy


def check_stack(stack: Stack, path: str) -> None:
    """One request through the stack: 200, and for (d) the tier modelguard chose."""
    if stack.processor is not None:
        healthy = wait_for(
            lambda: (
                stack.envoy.stats(r"^cluster\.modelguard\.membership_healthy$").get(
                    "cluster.modelguard.membership_healthy", 0
                )
                >= 1
            ),
            15.0,
            interval=0.2,
        )
        if not healthy:
            raise Unavailable(f"Envoy's health check of the ({stack.key}) processor never passed")
    try:
        answer = http_request(stack.envoy.url + path, method="POST", body=b"{}", timeout=5.0)
    except (OSError, http.client.HTTPException) as exc:
        raise Unavailable(f"a request through ({stack.key}) failed: {exc}") from exc
    if answer.status != 200:
        raise Unavailable(f"a request through ({stack.key}) answered {answer.status}: {answer.body[:200]!r}")
    if stack.key in ("d", "da") and answer.headers.get("x-modelguard-tier") != "primary":
        raise Unavailable(f"({stack.key}): modelguard did not tag the answer (headers {answer.headers})")


# --------------------------------------------------------------------------- measuring


@dataclass
class Counters:
    processor_ticks: int | None
    envoy_ticks: int
    stats: dict[str, int]

    @classmethod
    def read(cls, stack: Stack) -> Counters:
        processor = cpu_ticks(stack.processor.pid) if stack.processor is not None else None
        return cls(processor, cpu_ticks(stack.envoy.pid), stack.envoy.stats(_EXT_PROC_STATS))

    def delta(self, before: Counters) -> dict[str, Any]:
        def stat(suffix: str) -> int:
            return sum(v - before.stats.get(k, 0) for k, v in self.stats.items() if k.endswith(suffix))

        completed = stat("downstream_rq_completed")
        found: dict[str, Any] = {
            "envoy_requests": completed,
            "non_2xx": stat("downstream_rq_3xx") + stat("downstream_rq_4xx") + stat("downstream_rq_5xx"),
            "failed_open": sum(stat(f"ext_proc.{PROCESSOR_CLUSTER}.{name}") for name in _FAILED_OPEN),
            "ext_proc_streams": stat(f"ext_proc.{PROCESSOR_CLUSTER}.streams_started"),
            "envoy_cpu_us_per_req": None,
            "processor_cpu_us_per_req": None,
        }
        if completed > 0:
            found["envoy_cpu_us_per_req"] = round((self.envoy_ticks - before.envoy_ticks) * TICK_US / completed, 1)
            if self.processor_ticks is not None and before.processor_ticks is not None:
                used = self.processor_ticks - before.processor_ticks
                found["processor_cpu_us_per_req"] = round(used * TICK_US / completed, 1)
        return found


def run_wrk(
    stack: Stack, script: Path, concurrency: int, duration: int, paths: Sequence[str], log: Path
) -> dict[str, Any]:
    argv = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{duration}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        stack.envoy.url + paths[0],
    ]
    before = Counters.read(stack)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    after = Counters.read(stack)
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}\n")
    match = re.search(r"^WRK_JSON (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed (exit {done.returncode}): {(done.stdout + done.stderr)[-500:]}")
    raw = json.loads(match.group(1))
    seconds = raw["duration_us"] / 1e6
    errors = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    return {
        "rps": round(raw["requests"] / seconds, 1) if seconds > 0 else 0.0,
        "requests": raw["requests"],
        "seconds": round(seconds, 3),
        "p50_us": raw["p50_us"],
        "p90_us": raw["p90_us"],
        "p99_us": raw["p99_us"],
        "mean_us": raw["mean_us"],
        "socket_errors": errors,
        "status_errors": raw["status_errors"],
        **after.delta(before),
    }


_H2LOAD_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout"
)
_H2LOAD_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")


def run_h2load(
    stack: Stack,
    rate: float,
    concurrency: int,
    duration: int,
    paths: Sequence[str],
    log_dir: Path,
    tag: str,
    staggered: bool = True,
) -> tuple[dict[str, Any], list[float]]:
    """h2load at `rate` req/s in all over `concurrency` HTTP/1.1 connections: (figures, latencies µs).

    One h2load process `-c C --rps R/C` starts every client's request timer together, so each
    tick sends a burst of C requests. `staggered` runs C processes `-c 1 --rps R/C` instead, their
    starts spread over one period, so the requests arrive evenly spaced at the rate.
    """
    processes = concurrency if staggered else 1
    per_client = max(rate / concurrency, 0.1)
    period = 1.0 / per_client
    argvs: list[list[str]] = []
    logs: list[Path] = []
    body = log_dir / "body.json"
    body.write_text("{}")  # h2load POSTs a file (it cannot map an empty one)
    for index in range(processes):
        request_log = log_dir / f"h2load-{tag}-{index}.tsv"
        request_log.unlink(missing_ok=True)
        logs.append(request_log)
        argvs.append(
            [
                "h2load",
                "--h1",
                "-t1",
                f"-c{concurrency // processes}",
                f"--rps={per_client:.3f}",
                f"-D{duration}",
                "--warm-up-time=1",
                f"--log-file={request_log}",
                f"--data={body}",  # POST: inference calls are what modelguard judges
                *(stack.envoy.url + p for p in paths),
            ]
        )
    before = Counters.read(stack)
    running: list[subprocess.Popen[str]] = []
    outputs: list[tuple[int, str]] = []
    try:
        start = time.monotonic()
        for index, argv in enumerate(argvs):
            target = start + index * period / processes
            now = time.monotonic()
            if target < now:  # spawning took longer than the spacing: the same phase, a period later
                target += math.ceil((now - target) / period) * period
            time.sleep(target - now)
            running.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        deadline = time.monotonic() + duration + 60
        for process in running:
            text, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append((process.returncode, text))
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
    after = Counters.read(stack)
    with (log_dir / "h2load.log").open("a") as handle:
        for argv, (code, text) in zip(argvs, outputs, strict=True):
            handle.write(f"$ {' '.join(argv)}\n(exit {code})\n{text}\n")
    figures: dict[str, Any] = {
        "target_rps": round(rate, 1),
        "achieved_rps": 0.0,
        "requests": 0,
        "succeeded": 0,
        "failed": 0,
        "h2load_processes": processes,
    }
    for code, text in outputs:
        counts = _H2LOAD_REQUESTS.search(text)
        finished = _H2LOAD_FINISHED.search(text)
        if code != 0 or counts is None or finished is None:
            raise RuntimeError(f"h2load failed (exit {code}): {text[-500:]}")
        _total, _started, done_count, succeeded, failed, errored, timeouts = map(int, counts.groups())
        figures["achieved_rps"] += float(finished.group(3))
        figures["requests"] += done_count
        figures["succeeded"] += succeeded
        figures["failed"] += failed + errored + timeouts
    figures["achieved_rps"] = round(figures["achieved_rps"], 1)
    latencies: list[float] = []
    for request_log in logs:
        for line in request_log.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[2].strip().isdigit():
                latencies.append(float(parts[2]))
    figures["logged"] = len(latencies)
    return {**figures, **after.delta(before)}, latencies


# --------------------------------------------------------------------------- the run


@dataclass
class Options:
    duration: int = 10
    concurrency: int = 16
    rounds: int = 2
    warmup: int = 2
    configs: tuple[str, ...] = tuple(CONFIGS)
    fractions: tuple[float, ...] = LOAD_FRACTIONS
    models_hit: int = MODELS
    out: Path = field(default_factory=lambda: Path("out") / f"overhead-{datetime.now():%Y%m%d-%H%M%S}")
    sdk_venv: Path = field(default_factory=lambda: repo_root() / "out" / "sdk-venv")
    smoke: bool = False
    profile: bool = False
    staggered: bool = True
    noop_api: str = "readwrite"
    body_model: bool = False


def _median(values: Sequence[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return round(statistics.median(found), 1) if found else None


def run(options: Options) -> dict[str, Any]:
    out = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    ensure_tools(out / "apt-get.log")
    paths = load_paths(options.models_hit)
    script = write_wrk_script(out / "paths.lua", paths)
    results: dict[str, Any] = {
        "meta": {
            "started": datetime.now().isoformat(timespec="seconds"),
            "argv": sys.argv,
            "options": {
                "duration_s": options.duration,
                "concurrency": options.concurrency,
                "rounds": options.rounds,
                "warmup_s": options.warmup,
                "configs": list(options.configs),
                "load_fractions": list(options.fractions),
                "smoke": options.smoke,
                "profile": options.profile,
                "rate_mode": "staggered" if options.staggered else "burst",
                "noop_api": options.noop_api,
            },
            "paths": paths,
            "models_in_policy": MODELS,
            "machine": {
                "cpus": os.cpu_count(),
                "cpu_model": _cpu_model(),
                "loadavg_before": list(os.getloadavg()),
                "python": platform.python_version(),
            },
            "envoy": tool_version([str(envoy_binary()), "--version"]),
            "wrk": tool_version(["wrk", "-v"]),
            "h2load": tool_version(["h2load", "--version"]),
        },
        "configs": {key: {"label": CONFIGS[key], "available": True} for key in options.configs},
    }
    configs: dict[str, dict[str, Any]] = results["configs"]

    sdk_python: Path | None = None
    if "c" in options.configs:
        try:
            sdk_python = prepare_sdk_venv(options.sdk_venv.resolve(), out / "sdk-venv.log")
            configs["c"]["sdk"] = {"version": SDK_VERSION, "venv": str(options.sdk_venv.resolve())}
        except (Unavailable, OSError, subprocess.SubprocessError) as exc:
            _unavailable(configs["c"], str(exc))

    stacks: dict[str, Stack] = {}
    with contextlib.ExitStack() as exits:
        upstream = exits.enter_context(start_upstream(out, "upstream-envoy"))
        upstream_port = upstream.listener_port
        upstream.name = "upstream Envoy"
        processors: dict[str, tuple[ManagedProcess, int, Callable[[], bool]]] = {}
        for key in options.configs:
            if key == "a" or not configs[key]["available"]:
                continue
            try:
                launched = start_processor(key, out, sdk_python, options.profile, options.noop_api, options.body_model)
            except (Unavailable, OSError, StackError, ValueError) as exc:
                _unavailable(configs[key], str(exc))
                continue
            exits.enter_context(launched[0])
            processors[key] = launched
        try:
            upstream.wait_ready(30.0)
        except StackError as exc:
            raise BenchError(f"the upstream Envoy did not start: {exc}") from exc
        for key in options.configs:
            if not configs[key]["available"]:
                continue
            processor: ManagedProcess | None = None
            processor_port: int | None = None
            try:
                if key in processors:
                    processor, processor_port, probe = processors[key]
                    wait_processor(processor, probe, 60.0)
                processor_ports = () if processor_port is None else (processor_port,)
                envoy = exits.enter_context(start_front_envoy(key, out, upstream_port, processor_ports))
                envoy.wait_ready(30.0)
                stack = Stack(key, envoy, processor)
                check_stack(stack, paths[0])
            except (Unavailable, StackError, OSError, http.client.HTTPException) as exc:
                _unavailable(configs[key], str(exc))
                continue
            stacks[key] = stack
            say(f"({key}) ready: {CONFIGS[key]}, Envoy :{envoy.listener_port}")
        if not stacks:
            raise BenchError("no config could start; see the logs in " + str(out))

        for stack in stacks.values():  # warm-up: connections, pools, caches; not measured
            with contextlib.suppress(*MEASURE_ERRORS):
                run_wrk(stack, script, options.concurrency, options.warmup, paths, out / "wrk-warmup.log")

        order = list(stacks)
        for round_index in range(options.rounds):
            for key in order if round_index % 2 == 0 else order[::-1]:
                say(f"round {round_index + 1}/{options.rounds}: ({key}) wrk -d{options.duration}s")
                try:
                    figures = run_wrk(
                        stacks[key], script, options.concurrency, options.duration, paths, out / "wrk.log"
                    )
                except MEASURE_ERRORS as exc:
                    figures = {"error": str(exc)}
                configs[key].setdefault("throughput_rounds", []).append(figures)
                say(f"    {_short(figures)}")
        for key in stacks:
            configs[key]["throughput"] = _summarize_throughput(configs[key].get("throughput_rounds", []))

        basis_key, capacity = _capacity(configs, stacks)
        results["load"] = {"basis": basis_key, "capacity_rps": capacity, "rates": {}}
        if capacity:
            latencies: dict[tuple[str, float], list[float]] = {}
            runs: dict[tuple[str, float], list[dict[str, Any]]] = {}
            for round_index in range(options.rounds):
                for fraction in options.fractions:
                    rate = capacity * fraction
                    results["load"]["rates"][_pct(fraction)] = round(rate, 1)
                    for key in order if round_index % 2 == 0 else order[::-1]:
                        say(
                            f"round {round_index + 1}/{options.rounds}: ({key}) h2load {rate:.0f} req/s "
                            f"({_pct(fraction)}% of ({basis_key})) -D{options.duration}"
                        )
                        tag = f"{key}-{_pct(fraction)}-r{round_index + 1}"
                        try:
                            figures, samples = run_h2load(
                                stacks[key],
                                rate,
                                options.concurrency,
                                options.duration,
                                paths,
                                out,
                                tag,
                                staggered=options.staggered,
                            )
                        except MEASURE_ERRORS as exc:
                            figures, samples = {"error": str(exc)}, []
                        latencies.setdefault((key, fraction), []).extend(samples)
                        runs.setdefault((key, fraction), []).append(figures)
                        say(f"    {_short(figures, samples)}")
            for key in stacks:
                configs[key]["latency"] = {
                    _pct(f): _summarize_latency(runs.get((key, f), []), latencies.get((key, f), []))
                    for f in options.fractions
                }

        for key, stack in stacks.items():
            if stack.processor is not None:
                configs[key]["processor_rss_mb"] = _rss_mb(stack.processor.pid)
    # every process is stopped here (ExitStack); profiles are written on the way out
    if options.profile:
        results["profile"] = {
            key: summarize_profile(out / f"profile-{key}.prof") for key in ("b", "d") if key in stacks
        }
    results["ratios"], results["targets"] = _ratios(configs)
    results["meta"]["finished"] = datetime.now().isoformat(timespec="seconds")
    return results


def _unavailable(config: dict[str, Any], reason: str) -> None:
    config["available"] = False
    config["reason"] = reason.strip()
    say(f"unavailable: {config['label']}: {reason.strip().splitlines()[0]}")


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _rss_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def _short(figures: dict[str, Any], samples: Sequence[float] = ()) -> str:
    if "error" in figures:
        return "error: " + str(figures["error"])[:200]
    parts = []
    if "rps" in figures:
        parts.append(f"{figures['rps']:.0f} req/s")
        parts.append(f"p50 {figures['p50_us'] / 1000:.2f} ms, p99 {figures['p99_us'] / 1000:.2f} ms")
    else:
        ordered = sorted(samples)
        parts.append(f"{figures['achieved_rps']:.0f} req/s")
        if ordered:
            parts.append(f"p50 {percentile(ordered, 0.5) / 1000:.2f} ms, p99 {percentile(ordered, 0.99) / 1000:.2f} ms")
    if figures.get("processor_cpu_us_per_req") is not None:
        parts.append(f"processor {figures['processor_cpu_us_per_req']:.0f} µs CPU/req")
    if figures.get("failed_open"):
        parts.append(f"FAILED OPEN {figures['failed_open']}")
    return ", ".join(parts)


def _summarize_throughput(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in rounds if "error" not in r]
    if not good:
        return {"error": "; ".join(str(r.get("error")) for r in rounds) or "no run"}
    summary: dict[str, Any] = {
        name: _median([r[name] for r in good])
        for name in ("rps", "p50_us", "p90_us", "p99_us", "processor_cpu_us_per_req", "envoy_cpu_us_per_req")
    }
    summary["rps_rounds"] = [r["rps"] for r in good]
    summary["requests"] = sum(r["requests"] for r in good)
    summary["errors"] = sum(r["socket_errors"] + r["status_errors"] for r in good)
    summary["failed_open"] = sum(r["failed_open"] for r in good)
    return summary


def _summarize_latency(runs: list[dict[str, Any]], samples: list[float]) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]
    if not good or not samples:
        return {"error": "; ".join(str(r.get("error")) for r in runs) or "no samples"}
    ordered = sorted(samples)
    requests = sum(r["requests"] for r in good)
    target = statistics.mean(r["target_rps"] for r in good)
    achieved = statistics.mean(r["achieved_rps"] for r in good)
    failed_open = sum(r["failed_open"] for r in good)
    return {
        "target_rps": round(target, 1),
        "achieved_rps": round(achieved, 1),
        "samples": len(ordered),
        "p50_us": round(percentile(ordered, 0.5), 1),
        "p90_us": round(percentile(ordered, 0.9), 1),
        "p99_us": round(percentile(ordered, 0.99), 1),
        "max_us": round(ordered[-1], 1),
        "failed": sum(r["failed"] for r in good),
        "failed_open": failed_open,
        "processor_cpu_us_per_req": _median([r["processor_cpu_us_per_req"] for r in good]),
        "envoy_cpu_us_per_req": _median([r["envoy_cpu_us_per_req"] for r in good]),
        # the processor could not keep up: the rate was not reached, or Envoy failed open
        "overloaded": achieved < 0.95 * target or failed_open > 0.001 * max(requests, 1),
        "runs": good,
    }


def _capacity(configs: dict[str, dict[str, Any]], stacks: dict[str, Stack]) -> tuple[str | None, float | None]:
    """The throughput the fixed rates are fractions of: (d)'s, else the slowest config's."""

    def rps(key: str) -> float | None:
        value = configs[key].get("throughput", {}).get("rps")
        return float(value) if value else None

    if "d" in stacks and rps("d"):
        return "d", rps("d")
    measured = [(rps(k), k) for k in stacks if rps(k)]
    if not measured:
        return None, None
    value, key = min((v, k) for v, k in measured if v is not None)
    return key, value


def _figure(configs: dict[str, dict[str, Any]], key: str, *path: str) -> float | None:
    node: Any = configs.get(key)
    if not node or not node.get("available"):
        return None
    for name in path:
        if not isinstance(node, dict) or name not in node:
            return None
        node = node[name]
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def _ratio(top: float | None, bottom: float | None) -> float | None:
    if top is None or bottom is None or bottom <= 0:
        return None
    return round(top / bottom, 3)


def _ratios(configs: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rps = {key: _figure(configs, key, "throughput", "rps") for key in CONFIGS}
    ref = _pct(REFERENCE_FRACTION)
    p99 = {key: _figure(configs, key, "latency", ref, "p99_us") for key in CONFIGS}
    added: dict[str, float | None] = {key: None for key in CONFIGS if key != "a"}
    base = p99["a"]
    for key in added:
        value = p99[key]
        if value is not None and base is not None:
            added[key] = round(value - base, 1)
    added_b, added_d = added["b"], added["d"]
    ratios: dict[str, Any] = {
        "throughput_d_over_b": _ratio(rps["d"], rps["b"]),
        "throughput_d_over_a": _ratio(rps["d"], rps["a"]),
        "throughput_d_over_c": _ratio(rps["d"], rps["c"]),
        "throughput_d_over_bu": _ratio(rps["d"], rps["bu"]),
        "throughput_da_over_b": _ratio(rps["da"], rps["b"]),
        "throughput_bu_over_b": _ratio(rps["bu"], rps["b"]),
        "throughput_b_over_a": _ratio(rps["b"], rps["a"]),
        "throughput_c_over_a": _ratio(rps["c"], rps["a"]),
        f"added_p99_us_at_{ref}pct": added,
        f"added_p99_d_over_b_at_{ref}pct": _ratio(added_d, added_b),
        f"added_p99_d_over_bu_at_{ref}pct": _ratio(added_d, added["bu"]),
        f"added_p99_da_over_b_at_{ref}pct": _ratio(added["da"], added_b),
    }
    d_over_b, d_over_c = ratios["throughput_d_over_b"], ratios["throughput_d_over_c"]
    added_ratio = ratios[f"added_p99_d_over_b_at_{ref}pct"]
    added_pass: bool | None = None
    if added_d is not None and added_b is not None:
        added_pass = added_d <= TARGET_ADDED_P99 * added_b if added_b > 0 else added_d <= 0
    targets = [
        {
            "target": f"(d) throughput >= {TARGET_D_OVER_B:g} x (b)",
            "measured": d_over_b,
            "pass": None if d_over_b is None else d_over_b >= TARGET_D_OVER_B,
        },
        {
            "target": f"(d) added p99 <= {TARGET_ADDED_P99:g} x (b)'s, at {ref}% load",
            "measured": added_ratio,
            "pass": added_pass,
        },
        {
            "target": f"(d) throughput >= {TARGET_D_OVER_C:g} x (c)",
            "measured": d_over_c,
            "pass": None if d_over_c is None else d_over_c >= TARGET_D_OVER_C,
        },
    ]
    return ratios, targets


# --------------------------------------------------------------------------- profile


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Top functions of a processor's cProfile dump: overall by own time, and modelguard's own code."""
    if not path.is_file():
        return {"error": f"no profile at {path} (the processor did not exit cleanly?)"}
    stats = pstats.Stats(str(path))
    own_root = str(repo_root() / "ext_proc")
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in raw.values())
    rows: list[dict[str, Any]] = sorted(
        (
            {
                "function": f"{Path(filename).name}:{line}({name})" if line else name,
                "file": filename,
                "calls": nc,
                "tottime_s": round(tt, 4),
                "cumtime_s": round(ct, 4),
                "own_share": round(tt / total, 4) if total else None,
            }
            for (filename, line, name), (_cc, nc, tt, ct, _callers) in raw.items()
        ),
        key=lambda row: -float(row["tottime_s"]),
    )
    own = [row for row in rows if str(row["file"]).startswith(own_root)]
    text_path = path.with_suffix(".txt")
    with text_path.open("w") as handle:
        handle.write(f"{path.name}: {total:.3f} s of CPU time in the main thread (profiled)\n\nby own time:\n")
        handle.writelines(_profile_line(row) for row in rows[:top])
        handle.write("\nmodelguard's own code (ext_proc/), by own time:\n")
        handle.writelines(_profile_line(row) for row in own[:top])
    return {
        "file": str(path),
        "text": str(text_path),
        "total_s": round(total, 3),
        "top": [_strip_file(row) for row in rows[:top]],
        "own_code_top": [_strip_file(row) for row in own[:top]],
        "own_code_s": round(sum(float(row["tottime_s"]) for row in own), 3),
    }


def _profile_line(row: dict[str, Any]) -> str:
    return f"  {row['tottime_s']:8.3f} s  {row['cumtime_s']:8.3f} s cum  {row['calls']:>9}  {row['function']}\n"


def _strip_file(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "file"}


# --------------------------------------------------------------------------- report


def _ms(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value / 1000:.{digits}f}"


def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    options = meta["options"]
    configs: dict[str, dict[str, Any]] = results["configs"]
    load = results.get("load", {})
    fractions = [_pct(f) for f in options["load_fractions"]]
    ref = _pct(REFERENCE_FRACTION)
    a_rps = _figure(configs, "a", "throughput", "rps")
    lines = [
        f"Overhead, {_envoy_version(meta['envoy'])}: "
        f"{meta['machine']['cpus']} CPUs ({meta['machine']['cpu_model']}), "
        f"wrk/h2load -c{options['concurrency']}, {options['duration_s']} s per run, "
        f"{options['rounds']} round(s){', SMOKE' if options['smoke'] else ''}"
        f"{', PROFILED (not comparable)' if options['profile'] else ''}",
        "",
        "| config | throughput (req/s) | vs (a) | p50 / p99 closed loop (ms) | p99 at "
        + (" / ".join(f"{f}%" for f in fractions) + " load" if fractions else "fixed rates (none run)")
        + f" (ms) | added p99 at {ref}% (ms) | processor CPU (µs/req) | Envoy CPU (µs/req) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    added = results["ratios"].get(f"added_p99_us_at_{ref}pct", {})
    for key, config in configs.items():
        name = f"({key}) {config['label']}"
        if not config.get("available"):
            reason = config.get("reason", "?").splitlines()[0]
            lines.append(f"| {name} | unavailable: {reason} | | | | | | |")
            continue
        tput = config.get("throughput", {})
        latency = config.get("latency", {})
        p99s = []
        for f in fractions:
            entry = latency.get(f, {})
            mark = " (overloaded)" if entry.get("overloaded") else ""
            p99s.append(_ms(entry.get("p99_us")) + mark)
        lines.append(
            f"| {name} | {_num(tput.get('rps'))} | {_num(_ratio(tput.get('rps'), a_rps), '{:.2f}')} "
            f"| {_ms(tput.get('p50_us'))} / {_ms(tput.get('p99_us'))} | {' / '.join(p99s)} "
            f"| {_ms(added.get(key)) if key != 'a' else '-'} "
            f"| {_num(tput.get('processor_cpu_us_per_req'), '{:.0f}')} "
            f"| {_num(tput.get('envoy_cpu_us_per_req'), '{:.0f}')} |"
        )
    ratios = results["ratios"]
    lines += [
        "",
        "| ratio | measured | target | |",
        "|---|---:|---:|---|",
        f"| (d)/(b) throughput | {_num(ratios['throughput_d_over_b'], '{:.2f}')} | ≥ {TARGET_D_OVER_B:g} "
        f"| {_verdict(results['targets'][0]['pass'])} |",
        f"| (d)/(a) throughput | {_num(ratios['throughput_d_over_a'], '{:.2f}')} | | |",
        f"| (d)/(c) throughput | {_num(ratios['throughput_d_over_c'], '{:.2f}')} | ≥ {TARGET_D_OVER_C:g} "
        f"| {_verdict(results['targets'][2]['pass'])} |",
        f"| (d)/(b) added p99 over (a) at {ref}% load | {_num(ratios[f'added_p99_d_over_b_at_{ref}pct'], '{:.2f}')} "
        f"| ≤ {TARGET_ADDED_P99:g} | {_verdict(results['targets'][1]['pass'])} |",
        f"| like for like, modelguard's settings: (d)/(bu) throughput; added p99 "
        f"| {_num(ratios['throughput_d_over_bu'], '{:.2f}')}; "
        f"{_num(ratios[f'added_p99_d_over_bu_at_{ref}pct'], '{:.2f}')} | | |",
        f"| like for like, plain grpc.aio: (da)/(b) throughput; added p99 "
        f"| {_num(ratios['throughput_da_over_b'], '{:.2f}')}; "
        f"{_num(ratios[f'added_p99_da_over_b_at_{ref}pct'], '{:.2f}')} | | |",
        f"| the settings alone: (bu)/(b) throughput | {_num(ratios['throughput_bu_over_b'], '{:.2f}')} | | |",
        "",
    ]
    rates = load.get("rates", {})
    if rates:
        lines.append(
            f"Fixed-rate runs: {', '.join(f'{k}% = {v:,.0f} req/s' for k, v in rates.items())} "
            f"(of ({load.get('basis')})'s closed-loop throughput {load.get('capacity_rps', 0):,.0f} req/s), "
            f"the same rates for every config. CPU: per request served, over the closed-loop runs. "
            f"Targets are informative only."
        )
    return "\n".join(lines) + "\n"


def _envoy_version(text: str) -> str:
    found = re.search(r"/(\d+\.\d+\.\d+)/", text)
    return f"Envoy {found.group(1)}" if found else "Envoy"


def _verdict(value: bool | None) -> str:
    return "n/a" if value is None else ("pass" if value else "FAIL")


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=None, help="seconds per measurement (10; smoke 1)")
    parser.add_argument("--concurrency", type=int, default=None, help="connections of wrk and h2load (16; smoke 8)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of every measurement, alternating order (2)")
    parser.add_argument("--warmup", type=int, default=None, help="seconds of unmeasured load per config first (2)")
    parser.add_argument("--configs", default=None, help=f"which of {','.join(CONFIGS)} (all; smoke a,b,d)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (./out/overhead-TIME)")
    parser.add_argument("--sdk-venv", type=Path, default=None, help="venv for envoy-extproc-sdk (./out/sdk-venv)")
    parser.add_argument("--models-hit", type=int, default=MODELS, help=f"models the load spreads over ({MODELS})")
    parser.add_argument("--smoke", action="store_true", help="1 s runs, a,b,d, one round, one rate (for the tests)")
    parser.add_argument(
        "--loads",
        default=None,
        help="fixed rates, in %% of (d)'s throughput (25,50,75; smoke 50); 'none' skips them",
    )
    parser.add_argument(
        "--rate-mode",
        choices=["staggered", "burst"],
        default="staggered",
        help="fixed-rate load: C h2load processes -c1, spread over a period (staggered), or one -cC (burst)",
    )
    parser.add_argument(
        "--noop-api",
        choices=["readwrite", "generator"],
        default="readwrite",
        help="handler style of (b): context.read/write (readwrite, the floor) or an async generator (modelguard's)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="run (b) and (d) under cProfile (CPU time); figures not comparable"
    )
    parser.add_argument(
        "--body-model",
        action="store_true",
        help="(d)'s policy also matches one model by an OpenAI body's model (the load stays headers-only)",
    )
    args = parser.parse_args(argv)
    options = Options()
    if args.smoke:
        options.duration, options.concurrency, options.rounds, options.warmup = 1, 8, 1, 1
        options.configs, options.fractions = SMOKE_CONFIGS, (REFERENCE_FRACTION,)
    options.smoke = args.smoke
    options.profile = args.profile
    options.staggered = args.rate_mode == "staggered"
    options.noop_api = args.noop_api
    options.models_hit = args.models_hit
    options.body_model = args.body_model
    for name in ("duration", "concurrency", "rounds", "warmup"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                parser.error(f"--{name} must be at least 1")
            setattr(options, name, value)
    if args.configs is not None:
        keys = tuple(dict.fromkeys(k.strip() for k in args.configs.split(",") if k.strip()))
        unknown = [k for k in keys if k not in CONFIGS]
        if unknown or not keys:
            parser.error(f"--configs: choose from {','.join(CONFIGS)} (got {args.configs!r})")
        options.configs = tuple(k for k in CONFIGS if k in keys)
    if args.loads is not None:
        try:
            loads = () if args.loads.strip() == "none" else tuple(float(x) / 100 for x in args.loads.split(","))
        except ValueError:
            parser.error(f"--loads: percentages like 25,50,75 (got {args.loads!r})")
        if any(not 0 < f <= 2 for f in loads):
            parser.error("--loads: each percentage must be above 0 and at most 200")
        options.fractions = loads
    if args.out is not None:
        options.out = args.out
    if args.sdk_venv is not None:
        options.sdk_venv = args.sdk_venv
    return options


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every process started is stopped on the way out."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        with sigterm_as_interrupt():
            results = run(options)
    except KeyboardInterrupt:
        say("interrupted: every process the benchmark started has been stopped")
        return 130
    except BenchError as exc:
        say(f"bench.overhead: {exc}")
        return 1
    out = options.out.resolve()
    table = markdown(results)
    (out / "overhead.md").write_text(table)
    (out / "overhead.json").write_text(json.dumps(results, indent=2) + "\n")
    say("")
    say(table)
    if options.profile:
        for key, summary in results.get("profile", {}).items():
            say(f"profile ({key}): {summary.get('text', summary.get('error'))}")
    say(f"written: {out / 'overhead.md'}, {out / 'overhead.json'}")
    ours_missing = [k for k, c in results["configs"].items() if k != "c" and not c.get("available")]
    return 1 if ours_missing else 0


if __name__ == "__main__":
    sys.exit(main())
