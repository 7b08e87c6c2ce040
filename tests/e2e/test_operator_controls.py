"""Operator controls under real Envoy at 100 req/s: ``modelguard ctl force-open`` moves live
traffic to the next tier within a second, the forced state survives ``kill -9`` and a restart on
the same state directory, and ``ctl auto`` brings traffic back. Each time is printed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ext_proc.processes import ModelguardProcess, free_ports
from tests.e2e.e2e_harness import EnvoyFactory, Traffic, Upstream, model_cluster_ports, running_traffic

pytestmark = pytest.mark.e2e

POLICY = """\
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: recommender-resnet50}
      - {name: light,   route: recommender-mobilenet}
"""
TOKEN = "e2e-operator-token-0123456789"
MOVED_WITHIN_S = 1.0


def ctl(address: str, token_file: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    token = [] if token_file is None else ["--token-file", str(token_file)]
    environment = {k: v for k, v in os.environ.items() if k != "MODELGUARD_ADMIN_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "ext_proc.cli", "ctl", "--address", address, *token, *args],
        capture_output=True, text=True, timeout=30, env=environment,
    )  # fmt: skip


def test_force_open_survives_kill_9_and_auto_brings_traffic_back(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[..., ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    primary, light = upstream_factory("primary"), upstream_factory("light")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    (admin_grpc_port,) = free_ports(1)
    address = f"127.0.0.1:{admin_grpc_port}"
    flags = ["--admin-grpc-address", address, "--state-dir", str(tmp_path / "state"), "--admin-token-file",
             str(token_file)]  # fmt: skip
    modelguard = modelguard_factory(policy, extra_args=flags)
    envoy = envoy_factory(model_cluster_ports(modelguard.grpc_port, [primary.port], [light.port]))
    url = envoy.url + "/v2/models/recommender/infer"

    with running_traffic(Traffic(url, interval=0.01, max_duration=90, max_requests=9_000)) as traffic:
        assert traffic.wait_run(time.monotonic(), lambda s: s.served_by_primary, 20, 10) is not None

        refused = ctl(address, None, "force-open", "recommender", "primary")
        assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr

        asked = time.monotonic()
        forced = ctl(address, token_file, "force-open", "recommender", "primary", "--reason", "e2e: gpu node hot")
        answered = time.monotonic()
        assert forced.returncode == 0, forced.stderr
        moved = traffic.wait_run(asked, lambda s: s.served_degraded_by_light, 30, 10)
        assert moved is not None, "traffic did not move to light"
        move_s = max(0.0, moved.t - asked)
        assert move_s < MOVED_WITHIN_S, f"traffic moved {move_s:.2f} s after ctl force-open was run"
        assert light.last_headers.get("x-modelguard-reason") == "forced"
        after = [s for s in traffic.since(answered + 0.05) if s.status == 200]
        assert after and not any(s.served_by_primary for s in after), "primary served after the force took effect"

        os.kill(modelguard.pid, signal.SIGKILL)
        killed = time.monotonic()
        restarted = modelguard_factory(policy, grpc_port=modelguard.grpc_port, extra_args=flags)
        ready = time.monotonic()
        first_after = traffic.wait_first(ready, lambda s: s.status == 200, 5)
        assert first_after is not None and first_after.served_degraded_by_light, first_after
        assert traffic.wait_run(ready, lambda s: s.served_degraded_by_light, 50, 10) is not None
        assert not any(s.served_by_primary for s in traffic.since(ready + 0.05) if s.status == 200)
        shown = ctl(address, None, "state")
        assert "forced_open" in shown.stdout and "e2e: gpu node hot" in shown.stdout

        handed_back = time.monotonic()
        auto = ctl(address, token_file, "auto", "recommender", "primary")
        assert auto.returncode == 0, auto.stderr
        back = traffic.wait_run(handed_back, lambda s: s.served_by_primary, 30, 10)
        assert back is not None, "traffic did not come back to primary"
        back_s = max(0.0, back.t - handed_back)
        down = [s for s in traffic.since(killed, ready)]

    assert restarted.tier_state("recommender", "primary") == "closed"
    print(
        f"ctl force-open -> traffic on light: {move_s:.3f} s (ctl itself took {answered - asked:.3f} s); "
        f"kill -9 -> restart ready {ready - killed:.2f} s, {len(down)} requests meanwhile (fail-open), first "
        f"request after restart served by {first_after.tier}; ctl auto -> traffic on primary: {back_s:.3f} s"
    )
    assert back_s < MOVED_WITHIN_S
