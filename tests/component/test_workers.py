"""`modelguard serve --workers N`: N processes on consecutive ports, restarted when they die,
drained together on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from ext_proc.demo.stack import consecutive_free_ports
from ext_proc.workers import worker_addresses
from tests.component.conftest import serve_command


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
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_until(predicate: object, timeout: float) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_two_workers_serve_restart_and_drain() -> None:
    grpc_base, admin_base = consecutive_free_ports(2), consecutive_free_ports(2)
    supervisor = subprocess.Popen(
        serve_command(
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
        assert wait_until(lambda: ready(admin_base) and ready(admin_base + 1), 30.0)
        assert supervisor.stderr is not None
        pids: list[int] = []
        for _ in range(50):
            entry = json.loads(supervisor.stderr.readline())
            if entry.get("event") == "workers_started":
                pids = entry["pids"]
                break
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        assert wait_until(lambda: not ready(admin_base), 5.0)
        assert wait_until(lambda: ready(admin_base), 20.0), "the killed worker was not restarted"
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
