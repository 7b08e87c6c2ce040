"""``modelguard demo``: the whole stack on this machine, the incident, and its timeline.

Starts, as separate processes on free 127.0.0.1 ports: 3 primary and 2 light model servers and
the canary's v2 host, modelguard, Envoy (the reference config from envoy/envoy.yaml) and an
open-loop load generator; then plays a scenario (scenario.py: the incident, ``bad_host`` or ``slow_fault``) by
injecting faults into the model servers, prints a line per second while it runs (with the breaker's
and the canary's states, as modelguard's admin port tells them), and ends with a timeline table, a
JSON report and a PNG chart. Every process it started is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from ext_proc.demo import report, results, scenario
from ext_proc.demo.loadgen import CANARY_ARM
from ext_proc.policy import load_policy
from ext_proc.processes import (
    EnvoyProcess,
    ManagedProcess,
    ModelguardProcess,
    free_ports,
    reference_envoy_config,
    render_envoy_config,
    say,
)

DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")
MODEL = scenario.MODEL
PRIMARY_CLUSTER = "recommender-resnet50"
LIGHT_CLUSTER = "recommender-mobilenet"
CANARY_CLUSTER = "recommender-resnet50-v2"
MODEL_PATH = "/v2/models/recommender/infer"


@dataclass
class DemoOptions:
    duration: float = 80.0
    rate: float = 100.0
    policy: Path = DEFAULT_POLICY
    out: Path | None = None
    with_modelguard: bool = True
    extra_http_filters: tuple[dict[str, Any], ...] = ()
    """Envoy HTTP filters to add before the router, e.g. admission_control for a comparison."""
    next_tier_retries: bool = True
    """Envoy retries a failed primary try on the light tier (envoy/envoy.yaml); False: only on
    another primary replica (processes.render_envoy_config)."""
    try_log: bool = True
    """Envoy logs failed tries to modelguard (envoy/envoy.yaml's upstream_log); False: modelguard
    judges the answers alone."""
    chart: bool = True
    scenario: str = "incident"
    """Which script of scenario.SCENARIOS to play: ``incident``, ``bad_host`` or ``slow_fault``."""


@dataclass
class Host:
    host_id: str
    variant: str
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Demo:
    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        suffix = "" if options.with_modelguard else "-unprotected"
        self.out = options.out or Path.cwd() / f"modelguard-demo-{stamp}{suffix}"
        self.processes: list[ManagedProcess] = []
        self.hosts: list[Host] = []
        self.modelguard: ModelguardProcess | None = None
        self.envoy: EnvoyProcess | None = None
        self.events: list[report.Event] = []
        self.polls: list[report.Poll] = []
        self.outlier_stats: dict[str, int] = {}
        """Envoy's outlier-detection counters of the primary cluster at the end of the load, e.g.
        ``ejections_enforced_total``: the ejections, a host let back in and ejected again included
        (the half-second polls of ``ejections_active`` miss a return that lasts a fraction of that)."""
        self.breaker = "closed" if options.with_modelguard else "n/a"
        self.phase = "normal"
        self.has_canary = False
        """Whether the policy gives the model a canary that modelguard runs (and the demo shows)."""
        self.canary_state = ""
        self.canary_weight = 0.0
        self.load_started = time.time()
        """When the load started (set again as it starts), for the times of the live view's lines."""
        self.load = scenario.Load()
        """The scenario's load shape (scenario.LOADS), when not the steady rate."""

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> int:
        scenario.steps(self.options.scenario, self.options.duration)  # KeyError / ValueError before any start
        self.load = scenario.LOADS.get(self.options.scenario, scenario.Load())
        if self.load.policy is not None and self.options.policy == DEFAULT_POLICY:
            self.options.policy = DEFAULT_POLICY.with_name(self.load.policy)
        self.out.mkdir(parents=True, exist_ok=True)
        policy = load_policy(self.options.policy)
        tiers = [t.name for t in policy.model(MODEL).tiers]
        self.has_canary = self.options.with_modelguard and policy.model(MODEL).canary is not None
        try:
            await self._start_stack()
            start, end = await self._play()
        finally:
            self._stop_all()
        return self._report(start, end, tiers)

    async def _start_stack(self) -> None:
        log = self.out
        say(f"starting the stack in {self.out} ...")
        hosts = [(h, "primary") for h in scenario.PRIMARY_HOSTS] + [(h, "light") for h in scenario.LIGHT_HOSTS]
        hosts += [(h, "v2") for h in scenario.CANARY_HOSTS]
        ports = free_ports(len(hosts) + 4)
        for (host_id, variant), port in zip(hosts, ports, strict=False):
            argv = [
                sys.executable,
                "-m",
                "ext_proc.demo.model_server",
                "--model",
                MODEL,
                "--variant",
                variant,
                "--host-id",
                host_id,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--base-latency-ms",
                str(scenario.BASE_LATENCY_MS[variant]),
                "--base-latency-sigma",
                str(scenario.BASE_LATENCY_SIGMA),
                *capacity_args(self.load, variant),
            ]
            process = ManagedProcess(argv, log / f"{host_id}.log")
            self.processes.append(process)
            self.hosts.append(Host(host_id, variant, port, process))
        listener, admin, grpc_port, mg_admin = ports[len(hosts) :]
        async with aiohttp.ClientSession() as session:
            for host in self.hosts:
                await wait_http(session, host.url + "/v2/health/ready", 30.0, f"model server {host.host_id}")
        if self.options.with_modelguard:
            self.modelguard = ModelguardProcess(
                self.options.policy,
                grpc_port=grpc_port,
                admin_port=mg_admin,
                log_path=log / "modelguard.log",
                extra_args=["--state-dir", str(log / "state")],  # the demo's own: nobody's forced states
            )
            self.processes.append(self.modelguard)
            self.modelguard.wait_ready(30.0)
        cluster_ports = {
            PRIMARY_CLUSTER: [h.port for h in self.hosts if h.variant == "primary"],
            LIGHT_CLUSTER: [h.port for h in self.hosts if h.variant == "light"],
            CANARY_CLUSTER: [h.port for h in self.hosts if h.variant == "v2"],
            "modelguard": [grpc_port],
        }
        config = render_envoy_config(
            reference_envoy_config(),
            log / "envoy.yaml",
            listener_port=listener,
            admin_port=admin,
            cluster_ports=cluster_ports,
            without_ext_proc=not self.options.with_modelguard,
            extra_http_filters=self.options.extra_http_filters,
            next_tier_retries=self.options.next_tier_retries,
            try_log=self.options.try_log,
        )
        self.envoy = EnvoyProcess(config, listener_port=listener, admin_port=admin, log_path=log / "envoy.log")
        self.processes.append(self.envoy)
        self.envoy.wait_ready(30.0)
        say(
            f"ready: Envoy :{listener} (admin :{admin}), "
            + (f"modelguard :{grpc_port} (admin :{mg_admin}), " if self.options.with_modelguard else "NO modelguard, ")
            + ", ".join(f"{h.host_id} :{h.port}" for h in self.hosts)
        )

    async def _play(self) -> tuple[float, float]:
        assert self.envoy is not None
        options = self.options
        samples_path = self.out / "samples.jsonl"
        url = f"http://127.0.0.1:{self.envoy.listener_port}{MODEL_PATH}"
        loadgen = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ext_proc.demo.loadgen",
            "--url",
            url,
            "--rate",
            str(options.rate),
            "--duration",
            str(options.duration),
            "--out",
            str(samples_path),
            *load_args(self.load, options.rate),
            stdout=asyncio.subprocess.PIPE,
        )
        start = self.load_started = time.time()
        say(
            f"load: {options.rate:g} req/s for {options.duration:g} s "
            + ("with" if options.with_modelguard else "WITHOUT")
            + " modelguard"
            + ("" if options.scenario == "incident" else f", scenario {options.scenario}")
        )
        async with aiohttp.ClientSession() as session:
            tasks = [
                asyncio.create_task(self._script(session, start)),
                asyncio.create_task(self._poll(session)),
            ]
            try:
                await self._live(loadgen, start)
                await asyncio.wait_for(loadgen.wait(), 30.0)
                self.outlier_stats = await self._outlier_stats(session)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if loadgen.returncode is None:
                    loadgen.terminate()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(loadgen.wait(), 5.0)
        return start, start + options.duration

    async def _script(self, session: aiohttp.ClientSession, start: float) -> None:
        for step in scenario.steps(self.options.scenario, self.options.duration):
            await asyncio.sleep(max(0.0, start + step.at - time.time()))
            await self._apply(session, step.faults)
            self.events.append(report.Event(time.time(), step.kind, step.label))
            self.phase = step.label
            say(f"--- t={time.time() - start:5.1f}s  {step.label}")

    async def _apply(self, session: aiohttp.ClientSession, faults: dict[str, dict[str, Any] | None]) -> None:
        by_id = {h.host_id: h for h in self.hosts}
        for host_id, fault in faults.items():
            url = by_id[host_id].url + "/admin/fault"
            request = session.delete(url) if fault is None else session.put(url, json=fault)
            async with request as response:
                if response.status != 200:
                    raise RuntimeError(f"{host_id} refused fault {fault}: {await response.text()}")

    async def _poll(self, session: aiohttp.ClientSession) -> None:
        """Every half second: the primary breaker's state, the canary's, and Envoy's ejected
        primary hosts."""
        assert self.envoy is not None
        stat = f"cluster.{PRIMARY_CLUSTER}.outlier_detection.ejections_active"
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError, ValueError):
                async with session.get(f"{self.envoy.admin_url}/stats?filter=^{stat}$") as response:
                    text = await response.text()
                ejected = int(text.split(":")[-1]) if ":" in text else 0
                self.polls.append(report.Poll(time.time(), ejected))
                if self.modelguard is not None:
                    async with session.get(f"{self.modelguard.admin_url}/v1/state") as response:
                        state = await response.json()
                    self.breaker = state["models"][MODEL]["tiers"]["primary"]["state"]
                if self.has_canary:
                    await self._poll_canary(session)
            await asyncio.sleep(0.5)

    async def _outlier_stats(self, session: aiohttp.ClientSession) -> dict[str, int]:
        """The primary cluster's outlier-detection counters and gauges off Envoy's admin stats
        ({} when Envoy does not answer)."""
        assert self.envoy is not None
        prefix = f"cluster.{PRIMARY_CLUSTER}.outlier_detection."
        found: dict[str, int] = {}
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            url = f"{self.envoy.admin_url}/stats?filter=^{prefix.replace('.', '[.]')}"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5.0)) as response:
                text = await response.text()
            for line in text.splitlines():
                name, _, value = line.partition(": ")
                if name.startswith(prefix) and value.strip().isdigit():
                    found[name.removeprefix(prefix)] = int(value)
        return found

    async def _poll_canary(self, session: aiohttp.ClientSession) -> None:
        """The canary's state and weight (GET /v1/canary/<model>); a change is said as it is seen,
        with the reason of the order behind it (a guardrail's abort names the guardrail)."""
        assert self.modelguard is not None
        async with session.get(f"{self.modelguard.admin_url}/v1/canary/{MODEL}") as response:
            found = await response.json()
        state, weight = str(found["state"]), float(found["weight"])
        if self.canary_state and state != self.canary_state:
            order = found.get("order") or {}
            why = f" ({order.get('reason')}, by {order.get('caller')})" if order else ""
            at = time.time() - self.load_started
            say(f"--- t={at:5.1f}s  canary {self.canary_state} -> {state}, weight {weight:.0%}{why}")
        self.canary_state, self.canary_weight = state, weight

    async def _live(self, loadgen: asyncio.subprocess.Process, start: float) -> None:
        assert loadgen.stdout is not None
        while True:
            line = await loadgen.stdout.readline()
            if not line:
                return
            with contextlib.suppress(ValueError):
                second = json.loads(line)
                tiers = second.get("tiers", {})
                answered = max(1, second.get("answered", 0))
                shares = "  ".join(f"{name} {count / answered:4.0%}" for name, count in sorted(tiers.items()))
                ejected = self.polls[-1].ejected_hosts if self.polls else 0
                say(
                    f"t={second['t'] - start:5.1f}s  {second.get('answered', 0):4d} answered  "
                    f"errors {second.get('failed', 0):3d}  p99 {second.get('p99_ms', 0):7.1f} ms  "
                    f"breaker {self.breaker:9s} ejected {ejected}  | {shares}" + self._canary_view(second)
                )

    def _canary_view(self, second: dict[str, Any]) -> str:
        """The live line's canary part: its state and weight, and this second's canary-arm calls."""
        if not self.has_canary:
            return ""
        on_arm = second.get("arms", {}).get(CANARY_ARM, 0)
        return (
            f"  | canary {self.canary_state or '?'} {self.canary_weight:.0%}: "
            f"{on_arm} calls, {second.get('canary_failed', 0)} failed"
        )

    # -- the report ------------------------------------------------------------------------

    def _report(self, start: float, end: float, tiers: list[str]) -> int:
        return results.write(self, start, end, tiers)

    def _stop_all(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()


async def wait_http(session: aiohttp.ClientSession, url: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=1.0)) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} was not ready at {url} within {timeout:g} s")


def capacity_args(load: scenario.Load, variant: str) -> list[str]:
    """A model server's workers and queue for the scenario's load (none: no limit)."""
    if load.capacity is None or variant not in load.capacity:
        return []
    workers, queue = load.capacity[variant]
    return ["--workers", str(workers), "--queue", str(queue)]


def load_args(load: scenario.Load, rate: float) -> list[str]:
    """The load generator's ramp (stages as multiples of ``rate``) and criticality mix."""
    found = ["--ramp", ",".join(f"{stage * rate:g}" for stage in load.ramp)] if load.ramp else []
    if load.mix:
        found += ["--mix", ",".join(f"{name}={share:g}" for name, share in load.mix.items())]
    return found


def run_demo(options: DemoOptions) -> int:
    """Run the demo; Ctrl-C or SIGTERM stop it, and every process it started, cleanly (exit 130)."""

    async def main() -> int:
        task = asyncio.ensure_future(Demo(options).run())
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            say("interrupted: every process the demo started has been stopped")
            return 130

    return asyncio.run(main())
