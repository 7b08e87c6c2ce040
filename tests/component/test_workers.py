"""`modelguard serve --workers N`: N processes on consecutive ports, restarted when they die,
drained together on SIGTERM, gone with their supervisor, given up on when they cannot start."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ext_proc.processes import consecutive_free_ports, http_status, wait_for
from ext_proc.server.workers import MAX_FAILED_STARTS, SUPERVISOR_PID, worker_addresses
from tests.component.conftest import serve_command
from tests.component.log_lines import LogLines
from tests.component.test_cli_serve import exchange_over_grpc


def test_worker_addresses_count_up_from_the_given_ports() -> None:
    assert worker_addresses("0.0.0.0:50051", "127.0.0.1:9464", 3) == [
        ("0.0.0.0:50051", "127.0.0.1:9464"),
        ("0.0.0.0:50052", "127.0.0.1:9465"),
        ("0.0.0.0:50053", "127.0.0.1:9466"),
    ]
    assert worker_addresses("[::]:50051", "[::1]:9464", 2)[1] == ("[::]:50052", "[::1]:9465")


@pytest.mark.parametrize(
    ("grpc", "admin", "message"),
    [("127.0.0.1:0", "127.0.0.1:9464", "fixed ports"), ("127.0.0.1:65535", "127.0.0.1:9464", "ports up to")],
)
def test_worker_addresses_refuse_what_cannot_work(grpc: str, admin: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        worker_addresses(grpc, admin, 2)


def ready(port: int) -> bool:
    return http_status(f"http://127.0.0.1:{port}/readyz", timeout=1.0) == 200


def test_two_workers_serve_restart_and_drain() -> None:
    grpc_base, admin_base = consecutive_free_ports(2), consecutive_free_ports(2)
    supervisor = subprocess.Popen(
        serve_command(
            "--admin-grpc-address",
            "off",  # the ports after the admin block are not known to be free
            "--workers",
            "2",
            "--grace",
            "1",
            "--grpc-address",
            f"127.0.0.1:{grpc_base}",
            "--admin-address",
            f"127.0.0.1:{admin_base}",
        ),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: ready(admin_base) and ready(admin_base + 1), 30.0, interval=0.1)
        assert supervisor.stderr is not None
        pids: list[int] = []
        for _ in range(50):
            entry = json.loads(supervisor.stderr.readline())
            if entry.get("event") == "workers_started":
                pids = entry["pids"]
                break
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        assert wait_for(lambda: not ready(admin_base), 5.0, interval=0.1)
        assert wait_for(lambda: ready(admin_base), 20.0, interval=0.1), "the killed worker was not restarted"
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0
        assert not ready(admin_base) and not ready(admin_base + 1)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(timeout=5)


def test_workers_need_fixed_ports() -> None:
    result = subprocess.run(
        serve_command("--workers", "2", "--grpc-address", "127.0.0.1:0"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "fixed ports" in result.stderr


def alive(pid: int) -> bool:
    """Running, not merely a zombie: an orphan's exit is reaped by whoever adopted it, if anyone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def start_two_workers(grpc_base: int, admin_base: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        serve_command(
            "--workers", "2", "--grace", "1", "--admin-grpc-address", "off",
            "--grpc-address", f"127.0.0.1:{grpc_base}", "--admin-address", f"127.0.0.1:{admin_base}",
        ),
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def stop_all(supervisor: subprocess.Popen[str], pids: list[int]) -> None:
    """Test clean-up: nothing this test started may outlive it, whatever the code under test did."""
    if supervisor.poll() is None:
        supervisor.kill()
        supervisor.wait(timeout=5)
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Workers:
    supervisor: subprocess.Popen[str]
    lines: LogLines
    pids: list[int]
    """Every worker pid seen: stopped at the end whatever the code under test did (add restarted ones)."""


@contextlib.contextmanager
def two_workers(grpc_base: int, admin_base: int) -> Iterator[Workers]:
    """A supervisor of two workers, once it has started them; everything it started is stopped after."""
    supervisor = start_two_workers(grpc_base, admin_base)
    pids: list[int] = []
    try:
        lines = LogLines(supervisor)
        pids += lines.event("workers_started", timeout=20)[0]["pids"]
        yield Workers(supervisor, lines, pids)
    finally:
        stop_all(supervisor, pids)


def test_hup_while_workers_start_reloads_them_instead_of_killing_them() -> None:
    grpc_base, admin_base = consecutive_free_ports(2), consecutive_free_ports(2)
    with two_workers(grpc_base, admin_base) as workers:
        supervisor, lines = workers.supervisor, workers.lines
        for _ in range(100):  # for the first second: the workers are still importing, where HUP's
            supervisor.send_signal(signal.SIGHUP)  # default action would kill them
            time.sleep(0.01)
        assert wait_for(lambda: ready(admin_base) and ready(admin_base + 1), 30.0, interval=0.1)
        lines.event("policy_unchanged", timeout=10, count=2)  # each took a HUP that came early as a reload
        assert not any(entry.get("event") == "worker_restart" for entry in lines.entries)
        assert supervisor.poll() is None and all(alive(pid) for pid in workers.pids)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_sigkill_of_the_supervisor_takes_its_workers_with_it() -> None:
    grpc_base, admin_base = consecutive_free_ports(2), consecutive_free_ports(2)
    with two_workers(grpc_base, admin_base) as workers:
        supervisor, pids = workers.supervisor, workers.pids
        assert wait_for(lambda: ready(admin_base) and ready(admin_base + 1), 30.0, interval=0.1)
        supervisor.kill()
        supervisor.wait(timeout=5)
        gone = wait_for(lambda: not any(alive(pid) for pid in pids), 10.0, interval=0.1)
        assert gone, "workers outlived their supervisor"
        assert not ready(admin_base) and not ready(admin_base + 1)


def test_a_worker_whose_supervisor_is_gone_at_start_up_exits() -> None:
    # The race between the fork and the parent-death request: a parent pid other than the one the
    # supervisor wrote down means it died (and this process was adopted) before the request took.
    result = subprocess.run(
        serve_command("--grpc-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0"),
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, SUPERVISOR_PID: str(os.getpid() + 1_000_000)},
    )
    assert result.returncode == 1
    assert '"event": "supervisor_gone"' in result.stderr and '"event": "serving"' not in result.stderr


def test_hup_reaches_every_worker_usr1_usr2_only_the_supervisor_which_logs_them() -> None:
    grpc_base, admin_base = consecutive_free_ports(2), consecutive_free_ports(2)
    with two_workers(grpc_base, admin_base) as workers:
        supervisor, lines, pids = workers.supervisor, workers.lines, workers.pids
        assert wait_for(lambda: ready(admin_base) and ready(admin_base + 1), 30.0, interval=0.1)
        supervisor.send_signal(signal.SIGHUP)
        (passed,) = lines.event("reload_passed", timeout=10)
        assert sorted(passed["pids"]) == sorted(pids)
        reloads = lines.event("policy_unchanged", timeout=10, count=2)  # each worker read the file again
        assert {entry["trigger"] for entry in reloads} == {"SIGHUP"}
        for signum in (signal.SIGUSR1, signal.SIGUSR2):
            supervisor.send_signal(signum)
        ignored = lines.event("signal_ignored", timeout=10, count=2)
        assert [entry["signal"] for entry in ignored] == ["SIGUSR1", "SIGUSR2"]
        assert {entry["logger"] for entry in ignored} == {"modelguard.workers"}  # the supervisor's
        assert supervisor.poll() is None and all(alive(pid) for pid in pids)
        for port in (grpc_base, grpc_base + 1):
            (first,) = exchange_over_grpc(port)
            assert first.request_headers.response.clear_route_cache
        assert ready(admin_base) and ready(admin_base + 1)
        assert not any(entry.get("event") == "worker_restart" for entry in lines.entries)
        assert sum(e.get("event") == "signal_ignored" for e in lines.entries) == 2  # USR1 and USR2: not passed on
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0
        assert wait_for(lambda: not any(alive(pid) for pid in pids), 5.0, interval=0.1)
        assert lines.event("workers_stopped", timeout=5)[0]["exit_codes"] == [0, 0]


def test_a_supervisor_whose_worker_cannot_bind_gives_up_with_exit_1() -> None:
    grpc_base, admin_base = consecutive_free_ports(2), consecutive_free_ports(2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", grpc_base + 1))  # worker 1's gRPC port, held by another process
        taken.listen()
        began = time.monotonic()
        with two_workers(grpc_base, admin_base) as workers:
            supervisor, lines, pids = workers.supervisor, workers.lines, workers.pids
            assert supervisor.wait(timeout=60) == 1
            took = time.monotonic() - began
            (failing,) = lines.event("worker_failing", timeout=5)
            assert failing["level"] == "error"
            assert failing["worker"] == 1
            assert failing["address"] == [f"127.0.0.1:{grpc_base + 1}", f"127.0.0.1:{admin_base + 1}"]
            assert failing["exit_code"] == 1 and failing["failed_starts"] == MAX_FAILED_STARTS
            assert failing["reason"] == "worker keeps failing to start (e.g. its port is taken)"
            restarts = [e for e in lines.entries if e.get("event") == "worker_restart"]
            assert [e["worker"] for e in restarts] == [1] * (MAX_FAILED_STARTS - 1)
            pids += [int(e["pid"]) for e in restarts]
            assert not any(alive(pid) for pid in pids), "a worker outlived the supervisor that gave up"
            assert not ready(admin_base)
            assert took < 40, f"gave up only after {took:.1f} s"


def test_sigterm_while_the_workers_start_up_is_a_clean_stop() -> None:
    grpc_base, admin_base = consecutive_free_ports(2), consecutive_free_ports(2)
    with two_workers(grpc_base, admin_base) as workers:
        supervisor, lines = workers.supervisor, workers.lines
        supervisor.send_signal(signal.SIGTERM)  # the workers are still importing, before any handler of theirs
        assert supervisor.wait(timeout=20) == 0
        assert lines.event("workers_stopped", timeout=5)[0]["exit_codes"] == [0, 0]
