"""Scrapes during traffic: do /metrics reads delay the decisions served on the same event loop?

One modelguard (``serve``, N models x 3 tiers, bench/policies.py) behind the reference Envoy
config, in front of a direct_response upstream (bench/overhead.py's stack). An open-loop client
(ext_proc/demo/loadgen.py, a process of its own) sends a fixed rate for D seconds while a
scraper in this process reads /metrics back to back. A decision that waits behind a scrape for
longer than Envoy's ``message_timeout`` (0.2 s) fails open: Envoy counts it in its ext_proc
stats (``failure_mode_allowed``, ``message_timeouts``) and the answer comes back untagged.

Per model count two phases: ``idle`` (the same load, no scrapes: the baseline) and ``scraping``.
Reported: requests sent, the client's worst and p99 latency, answers without
``x-modelguard-tier`` or not 200, Envoy's fail-open counters, the scrapes made and the worst
scrape's duration. Every scrape's answer is checked for completeness (200, every tier present).

Usage:
  python -m bench.scrape [--models 1000[,3000]] [--rate 100] [--duration 10] [--paths /metrics]
                         [--no-idle] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.overhead import (
    LIGHT_ROUTE,
    PRIMARY_ROUTE,
    Stack,
    check_stack,
    start_front_envoy,
    start_upstream,
)
from bench.policies import policy_document
from ext_proc.demo.loadgen import read_samples
from ext_proc.processes import EnvoyProcess, ModelguardProcess, free_ports, http_request
from ext_proc.samples import percentile

PATH = "/v2/models/model-0/infer"
ENVOY_STATS = r"^http\.ingress_http\.ext_proc\.modelguard\.(failure_mode_allowed|message_timeouts|streams_failed)$"
BREAKER_TIERS_PER_MODEL = 2  # primary and light route; the third tier answers itself


@dataclass
class Scraper:
    """Reads the admin paths in turn, back to back, until stopped; each answer checked for size."""

    admin_url: str
    paths: list[str]
    models: int
    durations: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            path = self.paths[index % len(self.paths)]
            index += 1
            started = time.perf_counter()
            try:
                answer = http_request(self.admin_url + path, timeout=30.0)
            except OSError as exc:
                self.problems.append(f"{path}: {exc}")
                continue
            self.durations.append(time.perf_counter() - started)
            problem = self._check(path, answer.status, answer.body)
            if problem:
                self.problems.append(f"{path}: {problem}")

    def _check(self, path: str, status: int, body: bytes) -> str | None:
        if status != 200:
            return f"status {status}"
        expected = self.models * BREAKER_TIERS_PER_MODEL
        if path == "/metrics":
            found = body.count(b"\nmodelguard_inflight{")
            if not body.endswith(b"\n") or found != expected:
                return f"incomplete: {found} of {expected} inflight series"
        elif path == "/v1/state":
            models = json.loads(body)["models"]
            if len(models) != self.models:
                return f"incomplete: {len(models)} of {self.models} models"
        return None


def write_policy(path: Path, models: int) -> Path:
    document = policy_document(models, primary_route=PRIMARY_ROUTE, light_route=LIGHT_ROUTE)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run_load(url: str, rate: float, duration: float, out: Path) -> list[Any]:
    """The open-loop client in its own process, so its latencies do not include the scraper's work."""
    command = [sys.executable, "-m", "ext_proc.demo.loadgen", "--url", url, "--rate", str(rate),
               "--duration", str(duration), "--timeout", "5", "--out", str(out)]  # fmt: skip
    with (out.with_suffix(".log")).open("w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, timeout=duration + 60)
    return read_samples(out)


def phase(
    name: str, stack: Stack, modelguard: ModelguardProcess, options: argparse.Namespace, models: int, out: Path
) -> dict[str, Any]:
    before = stack.envoy.stats(ENVOY_STATS)
    scraper = Scraper(modelguard.admin_url, options.paths.split(","), models) if name == "scraping" else None
    if scraper is not None:
        scraper.start()
    try:
        samples = run_load(stack.envoy.url + PATH, options.rate, options.duration, out / f"load-{models}-{name}.jsonl")
    finally:
        if scraper is not None:
            scraper.stop()
    after = stack.envoy.stats(ENVOY_STATS)

    def stat(suffix: str) -> int:
        return sum(v - before.get(k, 0) for k, v in after.items() if k.endswith(suffix))

    latencies = sorted(s.latency for s in samples)
    durations = scraper.durations if scraper is not None else []
    return {
        "models": models,
        "phase": name,
        "requests": len(samples),
        "worst_ms": round(latencies[-1] * 1000, 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
        "untagged_or_failed": sum(1 for s in samples if s.status != 200 or not s.tier),
        "failure_mode_allowed": stat(".failure_mode_allowed"),
        "message_timeouts": stat(".message_timeouts"),
        "streams_failed": stat(".streams_failed"),
        "scrapes": len(durations),
        "worst_scrape_s": round(max(durations), 3) if durations else None,
        "scrape_problems": scraper.problems[:10] if scraper is not None else [],
    }


def measure(models: int, options: argparse.Namespace, upstream_port: int) -> list[dict[str, Any]]:
    out: Path = options.out
    grpc_port, admin_port = free_ports(2)
    modelguard = ModelguardProcess(
        write_policy(out / f"policy-{models}.yaml", models),
        grpc_port=grpc_port,
        admin_port=admin_port,
        log_path=out / f"modelguard-{models}.log",
    )
    envoy: EnvoyProcess | None = None
    try:
        modelguard.wait_ready(120.0)
        envoy = start_front_envoy(f"scrape-{models}", out, upstream_port, [grpc_port])
        envoy.wait_ready(20.0)
        stack = Stack("d", envoy, modelguard)
        check_stack(stack, PATH)
        phases = ["scraping"] if options.no_idle else ["idle", "scraping"]
        return [phase(name, stack, modelguard, options, models, out) for name in phases]
    finally:
        if envoy is not None:
            envoy.stop()
        modelguard.stop(grace=5.0)


def markdown(rows: list[dict[str, Any]], options: argparse.Namespace) -> str:
    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)

    lines = [
        f"Scrapes of {options.paths} during {options.rate:g} req/s for {options.duration:g} s through Envoy "
        f"(message_timeout 0.2 s), {os.cpu_count()} CPUs",
        "",
        "| models | phase | requests | worst latency (ms) | p99 (ms) | untagged or not 200 | failure_mode_allowed "
        "| message_timeouts | scrapes | worst scrape (s) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("models", "phase", "requests", "worst_ms", "p99_ms", "untagged_or_failed", "failure_mode_allowed",
            "message_timeouts", "scrapes", "worst_scrape_s")  # fmt: skip
    lines += ["| " + " | ".join(cell(row[key]) for key in keys) + " |" for row in rows]
    problems = [f"- {row['models']} models: {p}" for row in rows for p in row["scrape_problems"]]
    if problems:
        lines += ["", "Scrape problems:", *problems]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="1000", help="model counts, comma-separated (1000)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (100)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase (10)")
    parser.add_argument("--paths", default="/metrics", help="admin paths the scraper reads in turn (/metrics)")
    parser.add_argument("--no-idle", action="store_true", help="skip the phase without scrapes")
    parser.add_argument("--out", type=Path, default=Path("out") / f"scrape-{time.strftime('%Y%m%d-%H%M%S')}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    options.out.mkdir(parents=True, exist_ok=True)
    upstream = start_upstream(options.out)
    upstream_listener = upstream.listener_port
    try:
        upstream.wait_ready(20.0)
        rows = [row for models in options.models.split(",") for row in measure(int(models), options, upstream_listener)]
    finally:
        upstream.stop()
    table = markdown(rows, options)
    print(table)
    (options.out / "scrape.md").write_text(table + "\n")
    (options.out / "scrape.json").write_text(json.dumps(rows, indent=2))
    return 1 if any(row["scrape_problems"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
