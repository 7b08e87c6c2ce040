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
passes the signal on and waits for every worker to drain. A worker that keeps dying within its
first seconds (STARTUP_WINDOW) is not restarted forever: after MAX_FAILED_STARTS in a row the
supervisor stops the others and exits 1. HUP is passed to every worker, each of which reloads the
policy file (server/reload.py); USR1 and USR2 are logged and not passed on (ext_proc.server.signals).
Workers die with their supervisor, SIGKILL included, on Linux (follow_supervisor).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import MutableMapping, Sequence
from types import FrameType

from ext_proc.server.settings import join_address, split_address
from ext_proc.server.signals import (
    ALREADY_DRAINING,
    DRAIN_SIGNALS,
    IGNORED_SIGNALS,
    NO_RELOAD_WHILE_DRAINING,
    RELOAD_SIGNAL,
    log_ignored,
)

log = logging.getLogger("modelguard.workers")

POLL_INTERVAL = 0.2
RESTART_INTERVAL = 1.0
"""A worker is restarted at most this often, so that one that cannot start does not spin a core."""
STARTUP_WINDOW = 5.0
"""A worker that exits this soon after its start failed to start (a taken port, an unusable
certificate, a policy file gone since the supervisor checked it) rather than crashed in service."""
MAX_FAILED_STARTS = 5
"""Consecutive failed starts of one worker after which the supervisor stops every worker and exits 1:
restarting cannot fix what stops a start, and a supervisor that exits is what an orchestrator notices
and reports. With RESTART_INTERVAL 1 s it gives up about 5 s (5 starts) after the first attempt."""

SUPERVISOR_PID = "MODELGUARD_SUPERVISOR_PID"
"""The environment variable through which a worker learns its supervisor's pid (follow_supervisor)."""
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def worker_addresses(grpc_address: str, admin_address: str, workers: int) -> list[tuple[str, str]]:
    """The (gRPC, admin) address of each worker; ValueError for port 0 or ports past 65535."""
    grpc_host, grpc_port = split_address(grpc_address)
    admin_host, admin_port = split_address(admin_address)
    if grpc_port == 0 or admin_port == 0:
        raise ValueError("--workers needs fixed ports (not 0): worker i listens on port + i")
    if max(grpc_port, admin_port) + workers - 1 > 65535:
        raise ValueError(f"{workers} workers need ports up to {max(grpc_port, admin_port) + workers - 1}")
    return [(join_address(grpc_host, grpc_port + i), join_address(admin_host, admin_port + i)) for i in range(workers)]


def admin_grpc_addresses(admin_grpc_address: str, taken: Sequence[str], workers: int) -> list[str]:
    """Each worker's admin gRPC address, counting up like the others; ValueError if they would
    take a port of ``taken`` (the other addresses of the workers) or run past 65535."""
    host, port = split_address(admin_grpc_address)
    if port == 0:
        raise ValueError("--workers needs a fixed --admin-grpc-address port (not 0): worker i listens on port + i")
    if port + workers - 1 > 65535:
        raise ValueError(f"{workers} workers need admin gRPC ports up to {port + workers - 1}")
    ports = {split_address(address)[1] for address in taken}
    clash = sorted(ports & set(range(port, port + workers)))
    if clash:
        raise ValueError(
            f"the admin gRPC ports {port}-{port + workers - 1} would take port {clash[0]}, which another "
            "port of the server has: give --admin-grpc-address a free port (outside every --workers range)"
        )
    return [join_address(host, port + i) for i in range(workers)]


WORKER_INDEX = "MODELGUARD_WORKER_INDEX"
WORKER_ADMIN_GRPC = "MODELGUARD_WORKER_ADMIN_GRPC"
"""How a worker learns its index and every worker's admin gRPC address (for ``ctl``'s fan-out)."""


def worker_identity(environ: MutableMapping[str, str]) -> tuple[int, tuple[str, ...]]:
    """(index, every worker's admin gRPC address) in a worker; (0, ()) in a lone server."""
    index = environ.pop(WORKER_INDEX, "0")
    peers = environ.pop(WORKER_ADMIN_GRPC, "")
    return (int(index) if index.isdigit() else 0), tuple(peer for peer in peers.split(",") if peer)


def supervise(
    policy: str,
    addresses: Sequence[tuple[str, str]],
    grace: float,
    log_level: str,
    event_loop: str = "auto",
    extra_args: Sequence[str] = (),
    early: Sequence[int] = (),
    admin_grpc: Sequence[str] = (),
) -> int:
    """``extra_args`` go to every worker's command line as they are (the TLS flags, the state
    directory); ``early`` are the signals received before this was called (EarlySignals), acted
    on as if they came now; ``admin_grpc`` is each worker's admin gRPC address (none: off)."""

    def command(index: int) -> list[str]:
        grpc_address, admin_address = addresses[index]
        return [
            sys.executable, "-m", "ext_proc.cli", "serve", "--policy", policy,
            "--grpc-address", grpc_address, "--admin-address", admin_address,
            "--admin-grpc-address", admin_grpc[index] if admin_grpc else "off",
            "--grace", str(grace), "--log-level", log_level, "--event-loop", event_loop,
            *extra_args,
        ]  # fmt: skip

    stopping = False
    received: list[int] = []  # logged from the loop below, not from inside a signal handler

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            received.append(signum)  # a second one: logged as changing nothing
        stopping = True

    def on_ignored_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    reload_wanted = False

    def on_reload_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal reload_wanted
        reload_wanted = True

    def pass_reload() -> None:
        """HUP each live worker: every one reloads the file itself (and each also notices a change
        of the file by itself)."""
        nonlocal reload_wanted
        if not reload_wanted:
            return
        reload_wanted = False
        if stopping:
            log_ignored(log, RELOAD_SIGNAL, NO_RELOAD_WHILE_DRAINING)
            return
        live = [worker for worker in workers if worker.poll() is None]
        for worker in live:
            worker.send_signal(RELOAD_SIGNAL)
        log.info(
            "SIGHUP passed to the workers",
            extra={"event": "reload_passed", "signal": RELOAD_SIGNAL.name, "pids": [w.pid for w in live]},
        )

    def log_received() -> None:
        while received:
            signum = received.pop(0)
            log_ignored(log, signum, IGNORED_SIGNALS.get(signal.Signals(signum), ALREADY_DRAINING))

    # The environment names this process so that each worker can ask to die with it (follow_supervisor).
    environment = {**os.environ, SUPERVISOR_PID: str(os.getpid()), WORKER_ADMIN_GRPC: ",".join(admin_grpc)}

    def start(index: int) -> subprocess.Popen[bytes]:
        # HUP blocked across the spawn: the worker inherits the mask and so cannot die of a HUP
        # passed on before it has its handlers; EarlySignals.install unblocks it, and a HUP that
        # came meanwhile is then taken as a reload.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {RELOAD_SIGNAL})
        try:
            return subprocess.Popen(command(index), env={**environment, WORKER_INDEX: str(index)})
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    for signum in DRAIN_SIGNALS:
        signal.signal(signum, on_signal)
    signal.signal(RELOAD_SIGNAL, on_reload_signal)
    for signum in IGNORED_SIGNALS:
        signal.signal(signum, on_ignored_signal)
    workers: list[subprocess.Popen[bytes]] = []
    for number in early:
        if number in DRAIN_SIGNALS:
            on_signal(number, None)
        elif number != RELOAD_SIGNAL:  # a HUP before any worker: they read the file as it is now
            on_ignored_signal(number, None)
    if stopping:  # told to stop before any worker started: nothing to drain
        log_received()
        log.info("stopped before starting workers", extra={"event": "workers_stopped", "exit_codes": []})
        return 0
    workers = [start(index) for index in range(len(addresses))]
    started = [time.monotonic()] * len(workers)
    exited: list[float | None] = [None] * len(workers)
    failed_starts = [0] * len(workers)
    gave_up = False
    log.info("workers started", extra={"event": "workers_started", "pids": [w.pid for w in workers]})
    while not stopping:
        time.sleep(POLL_INTERVAL)
        log_received()
        pass_reload()
        for index, worker in enumerate(workers):
            code = worker.poll()
            if code is None or stopping:
                continue
            now = time.monotonic()
            if exited[index] is None:
                exited[index] = now
                lived = now - started[index]
                failed_starts[index] = failed_starts[index] + 1 if lived < STARTUP_WINDOW else 0
                if failed_starts[index] >= MAX_FAILED_STARTS:
                    log.error(
                        "worker keeps failing to start (e.g. its port is taken); stopping every worker",
                        extra={
                            "event": "worker_failing",
                            "worker": index,
                            "address": addresses[index],
                            "exit_code": code,
                            "failed_starts": failed_starts[index],
                            "reason": "worker keeps failing to start (e.g. its port is taken)",
                        },
                    )
                    gave_up = stopping = True
                    break
            if now - started[index] < RESTART_INTERVAL:
                continue
            workers[index] = start(index)
            started[index], exited[index] = time.monotonic(), None
            log.error(
                "worker exited; restarting it",
                extra={
                    "event": "worker_restart",
                    "worker": index,
                    "exit_code": code,
                    "address": addresses[index],
                    "pid": workers[index].pid,
                    "failed_starts": failed_starts[index],
                },
            )
    log_received()
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace + 5.0
    while time.monotonic() < deadline and any(worker.poll() is None for worker in workers):
        time.sleep(POLL_INTERVAL)
        log_received()
        pass_reload()
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
    # A worker that the TERM found still starting up, before its own handlers, died of it with
    # nothing in flight: that is a drained worker, not a failed one.
    codes = [0 if code == -signal.SIGTERM else code for code in (worker.wait() for worker in workers)]
    log_received()
    log.info("workers stopped", extra={"event": "workers_stopped", "exit_codes": codes})
    return 1 if gave_up or any(code != 0 for code in codes) else 0


def follow_supervisor(environ: MutableMapping[str, str]) -> bool:
    """In a worker: make sure it cannot outlive its supervisor; False if the supervisor is gone already.

    A supervisor killed with SIGKILL (the OOM killer, ``kill -9``, a container runtime past its
    stop timeout) has no chance to stop its workers, and they would keep their ports, serve with
    nobody to restart or stop them, and block the next supervisor's start. On Linux the kernel
    sends this process SIGTERM, a normal drain, the moment its parent dies (PR_SET_PDEATHSIG).
    That request is made here, at the worker's start-up, rather than between fork and exec
    (``preexec_fn``, unsafe once threads exist); the parent may die before it takes effect, so
    the parent pid is compared with the one the supervisor left in the environment afterwards.
    Elsewhere (macOS, BSD) there is no such request: it is skipped, and workers of a killed
    supervisor must be stopped by hand. Not a worker (no SUPERVISOR_PID): nothing to do.
    """
    expected = environ.pop(SUPERVISOR_PID, None)
    if expected is None:
        return True
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        except (OSError, AttributeError) as exc:
            log.warning(
                "cannot ask to die with the supervisor: %s", exc, extra={"event": "parent_death_signal_unavailable"}
            )
    if str(os.getppid()) != expected:
        log.error(
            "the supervisor is gone before this worker started; exiting",
            extra={"event": "supervisor_gone", "supervisor_pid": expected, "parent_pid": os.getppid()},
        )
        return False
    return True
