"""Scale-out: closed-loop throughput through Envoy + ``modelguard serve --workers N`` for several N,
side by side in one invocation (same upstream, same Envoy config, same wrk settings).

Envoy's modelguard cluster lists the N worker endpoints and balances ext_proc streams across
them. Usage: python -m bench.workers [--workers 1,2] [--duration 10] [--concurrency 16] [--out DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.overhead import (
    Stack,
    check_stack,
    ensure_tools,
    load_paths,
    run_wrk,
    start_front_envoy,
    start_upstream,
    write_policy,
    write_wrk_script,
)
from ext_proc.processes import (
    EnvoyProcess,
    ManagedProcess,
    consecutive_free_ports,
    http_request,
    http_status,
    modelguard_command,
    wait_for,
)


def _ready(port: int) -> bool:
    return http_status(f"http://127.0.0.1:{port}/readyz", timeout=1.0) == 200


def _successes(admin_port: int) -> int:
    """Responses a worker judged, from its /v1/state (every model, every tier)."""
    state = http_request(f"http://127.0.0.1:{admin_port}/v1/state", timeout=5.0).json()
    return sum(
        int(tier["outcomes"]["success"]) for model in state["models"].values() for tier in model["tiers"].values()
    )


def measure(workers: int, out: Path, upstream_port: int, duration: int, concurrency: int) -> dict[str, Any]:
    grpc_base, admin_base = consecutive_free_ports(workers), consecutive_free_ports(workers)
    policy = write_policy(out / "policy.yaml")
    supervisor = ManagedProcess(
        [*modelguard_command(), "serve", "--policy", str(policy), "--workers", str(workers),
         "--grpc-address", f"127.0.0.1:{grpc_base}", "--admin-address", f"127.0.0.1:{admin_base}",
         "--admin-grpc-address", "off"],
        out / f"modelguard-{workers}.log",
    )  # fmt: skip
    envoy: EnvoyProcess | None = None
    try:
        for index in range(workers):
            if not wait_for(functools.partial(_ready, admin_base + index), 30.0, 0.1):
                raise RuntimeError(f"worker {index} of {workers} did not become ready")
        envoy = start_front_envoy(f"workers{workers}", out, upstream_port, range(grpc_base, grpc_base + workers))
        envoy.wait_ready(20.0)
        stack = Stack(f"workers={workers}", envoy, None)
        paths = load_paths(20)
        time.sleep(6.0)  # Envoy's health check (5 s interval) marks every worker endpoint healthy
        check_stack(Stack("d", envoy, supervisor), paths[0])
        script = write_wrk_script(out / "paths.lua", paths)
        run_wrk(stack, script, concurrency, 2, paths, out / "wrk.log")  # warm-up
        result = run_wrk(stack, script, concurrency, duration, paths, out / "wrk.log")
        served = [_successes(admin_base + i) for i in range(workers)]
        return {
            "workers": workers,
            "rps": result["rps"],
            "p99_us": result["p99_us"],
            "failed_open": result["failed_open"],
            "share_per_worker": [round(n / max(1, sum(served)), 3) for n in served],
        }
    finally:
        if envoy is not None:
            envoy.stop()
        supervisor.stop(grace=5.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (1,2)")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("out") / f"workers-{time.strftime('%Y%m%d-%H%M%S')}")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ensure_tools(args.out / "tools.log")
    upstream = start_upstream(args.out)
    upstream_listener = upstream.listener_port
    try:
        upstream.wait_ready(20.0)
        rows = [measure(int(n), args.out, upstream_listener, args.duration, args.concurrency)
                for n in args.workers.split(",")]  # fmt: skip
    finally:
        upstream.stop()
    base = rows[0]["rps"]
    lines = [
        f"Scale-out on {os.cpu_count()} CPUs (Envoy --concurrency 1, wrk -c{args.concurrency}, {args.duration} s)",
        "",
        "| workers | throughput (req/s) | vs first | p99 (ms) | failed open | share of streams per worker |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['workers']} | {r['rps']:,.0f} | {r['rps'] / base:.2f} | {r['p99_us'] / 1000:.2f} | {r['failed_open']} "
        f"| {' / '.join(f'{x:.0%}' for x in r['share_per_worker'])} |"
        for r in rows
    ]
    table = "\n".join(lines)
    print(table)
    (args.out / "workers.md").write_text(table + "\n")
    (args.out / "workers.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
