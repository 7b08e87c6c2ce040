"""Canary gating under real Envoy: at 10% of keys and 200 req/s, a v2 failing 30% of its calls
(stable 1%) is aborted after at most 20 failed canary responses and every canary key is back on
stable; a v2 twice as slow without errors is aborted on latency; an abort survives ``kill -9``
and a restart, and ``modelguard ctl canary resume`` lets it run again. Each figure is printed."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ext_proc.core.canary.buckets import Buckets
from ext_proc.processes import ModelguardProcess, free_ports, http_request
from ext_proc.processes.waiting import wait_for
from tests.e2e.e2e_harness import EnvoyFactory, Upstream, model_cluster_ports

pytestmark = pytest.mark.e2e

POLICY = """\
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: recommender-resnet50}
      - {name: light,   route: recommender-mobilenet}
    canary:
      route: recommender-resnet50-v2
      weight: 10%
      sticky_header: x-user-id
"""
TOKEN = "e2e-canary-token-0123456789abcdef"
USERS = [f"user-{index}" for index in range(2000)]
FLAGGER_DEFAULT_S = 60 * 5
"""Flagger's documented example: analysis every 1m, rollback after 5 failed checks."""


@dataclass(frozen=True)
class Call:
    at: float  # wall clock
    user: str
    status: int
    arm: str | None


@dataclass
class Load:
    """Keyed requests at ``rate`` per second from a few keep-alive connections, bounded."""

    url: str
    rate: float = 200.0
    threads: int = 4
    max_duration: float = 60.0
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)]

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        parts = urlsplit(self.url)
        assert parts.hostname is not None and parts.port is not None
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
        interval = self.threads / self.rate
        deadline = time.monotonic() + self.max_duration
        next_at = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < deadline:
            user = rng.choice(USERS)
            try:
                connection.request("POST", parts.path, body=b"{}", headers={"x-user-id": user})
                response = connection.getresponse()
                response.read()
                call = Call(time.time(), user, response.status, response.getheader("x-modelguard-arm"))
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
                call = Call(time.time(), user, 0, None)
            with self._lock:
                self.calls.append(call)
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        connection.close()

    def since(self, at: float) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.at >= at]

    @contextmanager
    def running(self) -> Iterator[Load]:
        for worker in self._workers:
            worker.start()
        try:
            yield self
        finally:
            self._stop.set()
            for worker in self._workers:
                worker.join(5)


def canary_state(modelguard: ModelguardProcess) -> dict[str, Any]:
    found: dict[str, Any] = http_request(modelguard.admin_url + "/v1/canary/recommender").json()
    return found


def wait_aborted(modelguard: ModelguardProcess, timeout: float) -> dict[str, Any] | None:
    def aborted() -> dict[str, Any] | None:
        state = canary_state(modelguard)
        return state if state["state"] == "aborted" else None

    return wait_for(aborted, timeout, interval=0.02)


@dataclass
class Stack:
    primary: Upstream
    canary: Upstream
    modelguard: ModelguardProcess
    url: str
    admin_grpc: str
    flags: list[str]


@pytest.fixture
def stack(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[..., ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> Stack:
    primary, light, canary = upstream_factory("primary"), upstream_factory("light"), upstream_factory("canary")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    (admin_grpc_port,) = free_ports(1)
    address = f"127.0.0.1:{admin_grpc_port}"
    flags = ["--admin-grpc-address", address, "--state-dir", str(tmp_path / "state"),
             "--admin-token-file", str(token_file)]  # fmt: skip
    modelguard = modelguard_factory(policy, extra_args=flags)
    envoy = envoy_factory(model_cluster_ports(modelguard.grpc_port, [primary.port], [light.port], [canary.port]))
    return Stack(primary, canary, modelguard, envoy.url + "/v2/models/recommender/infer", address, flags)


def test_a_canary_failing_30_percent_is_aborted_within_20_failures_and_every_key_goes_back(stack: Stack) -> None:
    stack.primary.set_behaviour(error_rate=0.01)
    stack.canary.set_behaviour(error_rate=0.30)
    with Load(stack.url).running() as load:
        aborted = wait_aborted(stack.modelguard, timeout=30)
        assert aborted is not None, f"not aborted: {canary_state(stack.modelguard)}"
        abort_at = aborted["order"]["since"]
        time.sleep(2.0)
        after = load.since(abort_at + 0.2)  # requests sent once the abort had taken effect
    answered = stack.canary.answered
    first_call = answered[0][0]
    failed_before = sum(1 for at, status in answered if status == 503 and at <= abort_at)
    judged = aborted["arms"]["canary"]
    buckets = Buckets("recommender", "recommender-resnet50-v2", random.Random())
    canary_keys_after = [call for call in after if buckets.of(call.user) < 1000]  # the keys in the 10%
    rate = len(load.calls) / (load.calls[-1].at - load.calls[0].at)
    print(
        f"\ncanary aborted {abort_at - first_call:.2f} s after its first call (Flagger's documented example:"
        f" {FLAGGER_DEFAULT_S} s); cause {aborted['order']['reason']!r}; judged {judged['calls']} canary calls,"
        f" {judged['failures']} failed; the canary server answered {failed_before} failures before the abort;"
        f" {len(canary_keys_after)} requests of canary keys afterwards, all stable (load {rate:.0f} req/s)"
    )
    assert rate > 150
    assert judged["failures"] <= 20 and failed_before <= 20 + 5  # +5: in flight at the abort, not judged
    assert canary_keys_after and all(call.arm == "stable" for call in canary_keys_after)
    assert not [at for at, _ in answered if at > abort_at + 0.2], "the canary still got requests after the abort"


def test_a_canary_twice_as_slow_without_errors_is_aborted_on_latency(stack: Stack) -> None:
    stack.primary.set_behaviour(delay=0.02)
    stack.canary.set_behaviour(delay=0.04)
    with Load(stack.url, rate=100).running():
        aborted = wait_aborted(stack.modelguard, timeout=40)
    assert aborted is not None, f"not aborted: {canary_state(stack.modelguard)}"
    judged = aborted["arms"]["canary"]
    print(
        f"\nlatency-only canary aborted after {judged['calls']} canary calls ({judged['slow']} slower than"
        f" {judged['slow_after'] * 1000:.1f} ms = 1.5 x stable's p95), {judged['failures']} failures"
    )
    assert aborted["order"]["reason"] == "guardrail latency" and judged["failures"] == 0


def ctl(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "MODELGUARD_ADMIN_TOKEN": TOKEN}
    return subprocess.run(
        [sys.executable, "-m", "ext_proc.cli", "ctl", "--address", stack.admin_grpc, *args],
        capture_output=True, text=True, timeout=30, env=environment,
    )  # fmt: skip


def test_an_abort_survives_kill_9_and_a_restart_and_resume_runs_it_again(
    stack: Stack, modelguard_factory: Callable[..., ModelguardProcess]
) -> None:
    aborted = ctl(stack, "canary", "abort", "recommender", "--reason", "e2e: bad v2")
    assert aborted.returncode == 0 and "aborted" in aborted.stdout, aborted.stderr
    os.kill(stack.modelguard.pid, signal.SIGKILL)
    stack.modelguard.proc.wait(10)
    again = modelguard_factory(stack.modelguard.policy, extra_args=stack.flags, grpc_port=stack.modelguard.grpc_port)
    assert canary_state(again)["state"] == "aborted"
    with Load(stack.url, rate=50).running() as load:
        time.sleep(1.0)
        assert load.calls and all(call.arm == "stable" for call in load.calls if call.status == 200)
        resumed = ctl(stack, "canary", "resume", "recommender")
        assert resumed.returncode == 0 and "active at 10%" in resumed.stdout, resumed.stderr
        asked = time.time()
        assert wait_for(lambda: any(call.arm == "canary" for call in load.since(asked)), 10, interval=0.05)
    state = json.loads(ctl(stack, "canary", "--output", "json").stdout)
    assert state["canaries"][0]["canary"]["state"] == "active"
