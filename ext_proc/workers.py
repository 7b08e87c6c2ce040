"""``modelguard serve --workers N``: N single-threaded servers, one per core, one port each.

Python's gRPC stack keeps one process on one core, and a gRPC stream cannot be handed between
processes, so scaling out means N processes. They take consecutive ports (the gRPC port and the
admin port each count up from the given ones) rather than sharing one with SO_REUSEPORT:
Envoy multiplexes every stream of a worker thread over one HTTP/2 connection, which the kernel
would pin to a single process. Listing the N endpoints in Envoy's modelguard cluster lets Envoy
balance streams (requests) across them.

State is partitioned, not shared: each worker runs its own breakers on the share of traffic
Envoy sends it. With round-robin every worker sees about 1/N of a model's calls, so a breaker
needs ``min_calls`` calls within its own window (N x min_calls in all) before judging, and
each worker opens, probes and closes on its own evidence. A shared-state backend (Redis) is a
later, separate piece of work.

The supervisor restarts a worker that dies (at most once a second) and, on SIGTERM or SIGINT,
passes the signal on and waits for every worker to drain.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from ext_proc.settings import split_address

log = logging.getLogger("modelguard.workers")

RESTART_INTERVAL = 1.0


def worker_addresses(grpc_address: str, admin_address: str, workers: int) -> list[tuple[str, str]]:
    """The (gRPC, admin) address of each worker; ValueError for port 0 or ports past 65535."""
    grpc_host, grpc_port = split_address(grpc_address)
    admin_host, admin_port = split_address(admin_address)
    if grpc_port == 0 or admin_port == 0:
        raise ValueError("--workers needs fixed ports (not 0): worker i listens on port + i")
    if max(grpc_port, admin_port) + workers - 1 > 65535:
        raise ValueError(f"{workers} workers need ports up to {max(grpc_port, admin_port) + workers - 1}")
    return [(_join(grpc_host, grpc_port + i), _join(admin_host, admin_port + i)) for i in range(workers)]


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def supervise(
    policy: str,
    addresses: Sequence[tuple[str, str]],
    grace: float,
    log_level: str,
    event_loop: str = "auto",
    extra_args: Sequence[str] = (),
) -> int:
    """``extra_args`` go to every worker's command line as they are (the TLS flags)."""

    def command(grpc_address: str, admin_address: str) -> list[str]:
        return [
            sys.executable, "-m", "ext_proc.cli", "serve", "--policy", policy,
            "--grpc-address", grpc_address, "--admin-address", admin_address,
            "--grace", str(grace), "--log-level", log_level, "--event-loop", event_loop,
            *extra_args,
        ]  # fmt: skip

    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    workers = [subprocess.Popen(command(*pair)) for pair in addresses]
    started = [time.monotonic()] * len(workers)
    log.info("workers started", extra={"event": "workers_started", "pids": [w.pid for w in workers]})
    while not stopping:
        time.sleep(0.2)
        for index, worker in enumerate(workers):
            code = worker.poll()
            if code is None or stopping:
                continue
            if time.monotonic() - started[index] < RESTART_INTERVAL:
                continue
            log.error(
                "worker exited; restarting it",
                extra={"event": "worker_restart", "worker": index, "exit_code": code, "address": addresses[index]},
            )
            workers[index] = subprocess.Popen(command(*addresses[index]))
            started[index] = time.monotonic()
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace + 5.0
    codes = []
    for worker in workers:
        try:
            codes.append(worker.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            worker.kill()
            codes.append(worker.wait())
    log.info("workers stopped", extra={"event": "workers_stopped", "exit_codes": codes})
    return 0 if all(code == 0 for code in codes) else 1
