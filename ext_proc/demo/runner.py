"""``modelguard demo``: the whole stack on this machine, the incident, and its timeline.

Starts, as separate processes on free 127.0.0.1 ports: 3 primary and 2 light model servers,
modelguard, Envoy (the reference config from envoy/envoy.yaml) and an open-loop load
generator; then plays the scenario (scenario.py) by injecting faults into the model servers,
prints a line per second while it runs, and ends with a timeline table, a JSON report and a
PNG chart. Every process it started is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from calendar import timegm
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from ext_proc.demo import report, scenario
from ext_proc.demo.loadgen import read_samples
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
MODEL = "recommender"
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
    chart: bool = True


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
        self.breaker = "closed" if options.with_modelguard else "n/a"
        self.phase = "normal"

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        policy = load_policy(self.options.policy)
        tiers = [t.name for t in policy.model(MODEL).tiers]
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
            CANARY_CLUSTER: [self.hosts[0].port],
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
            stdout=asyncio.subprocess.PIPE,
        )
        start = time.time()
        say(
            f"load: {options.rate:g} req/s for {options.duration:g} s "
            + ("with" if options.with_modelguard else "WITHOUT")
            + " modelguard"
        )
        async with aiohttp.ClientSession() as session:
            tasks = [
                asyncio.create_task(self._script(session, start)),
                asyncio.create_task(self._poll(session)),
            ]
            try:
                await self._live(loadgen, start)
                await asyncio.wait_for(loadgen.wait(), 30.0)
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
        for step in scenario.incident(self.options.duration):
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
        """Every half second: the primary breaker's state and Envoy's ejected primary hosts."""
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
            await asyncio.sleep(0.5)

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
                    f"breaker {self.breaker:9s} ejected {ejected}  | {shares}"
                )

    # -- the report ------------------------------------------------------------------------

    def _report(self, start: float, end: float, tiers: list[str]) -> int:
        samples = read_samples(self.out / "samples.jsonl")
        transitions = read_transitions(self.out / "modelguard.log") if self.options.with_modelguard else []
        protected = self.options.with_modelguard
        rows = report.timeline(samples, start, end, transitions, self.polls, MODEL, tiers[0], protected)
        summary = report.summarize(samples, self.events, transitions, MODEL, tiers[0], tiers[1], protected, end)
        order = tiers if protected else [f"{t} (unprotected)" for t in ("primary", "light")]
        text = report.table(rows, order)
        (self.out / "timeline.md").write_text(text + "\n", encoding="utf-8")
        report.write_json(
            self.out / "report.json",
            summary,
            rows,
            [report.Event(e.t - start, e.kind, e.label) for e in self.events],
            {
                "options": {
                    "duration": self.options.duration,
                    "rate": self.options.rate,
                    "policy": str(self.options.policy),
                    "with_modelguard": protected,
                },
                "transitions": [{**asdict(t), "t": round(t.t - start, 3)} for t in transitions],
            },
        )
        if self.options.chart:
            title = "modelguard demo: recommender" + ("" if protected else " (WITHOUT modelguard)")
            report.chart(self.out / "timeline.png", rows, self.events, start, order, title)
        say("\n" + text + "\n")
        say(render_summary(summary))
        say(
            f"report: {self.out / 'report.json'}   chart: {self.out / 'timeline.png'}   "
            f"timeline: {self.out / 'timeline.md'}"
        )
        return 0 if summary.passed else 1

    def _stop_all(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()


def render_summary(summary: report.Summary) -> str:
    def seconds(value: float | None) -> str:
        return "never" if value is None else f"{value:.2f} s"

    lines = [
        f"requests {summary.requests}, client-visible errors {summary.failed}",
        f"one bad primary host: {summary.single_host_fault_failed} client errors, {summary.false_trips} breaker trips",
        f"whole-model fault: {summary.whole_fault_failed} of {summary.whole_fault_requests} requests failed "
        f"for clients, p99 {summary.whole_fault_p99_ms:g} ms",
    ]
    if summary.protected:
        lines += [
            f"fault -> breaker open {seconds(summary.fault_to_breaker_open_s)}, "
            f"-> first light answer {seconds(summary.fault_to_first_light_s)}; light share while open "
            f"{summary.light_share_during_fault:.0%}",
            f"fault cleared -> first primary answer {seconds(summary.clear_to_first_primary_s)}, "
            f"-> breaker closed {seconds(summary.clear_to_breaker_closed_s)}",
        ]
    lines.append("expectations:")
    lines += [f"  [{'ok' if held else 'FAILED'}] {name}" for name, held in summary.expectations.items()]
    return "\n".join(lines)


def read_transitions(log_path: Path) -> list[report.Transition]:
    """Breaker transitions from modelguard's JSON log, with their wall-clock times."""
    found: list[report.Transition] = []
    if not log_path.exists():
        return found
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"breaker_transition"' not in line:
            continue
        with contextlib.suppress(ValueError, KeyError):
            entry = json.loads(line)
            found.append(
                report.Transition(
                    t=_epoch(entry["ts"]),
                    model=entry["model"],
                    tier=entry["tier"],
                    from_state=entry["from_state"],
                    to_state=entry["to_state"],
                    cause=entry["cause"],
                )
            )
    return found


def _epoch(stamp: str) -> float:
    """The log's UTC timestamp (2026-11-21T05:55:02.134Z) as seconds since the epoch."""
    base, _, millis = stamp.rstrip("Z").partition(".")
    return timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + int(millis or 0) / 1000


async def wait_http(session: aiohttp.ClientSession, url: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=1.0)) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} was not ready at {url} within {timeout:g} s")


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
