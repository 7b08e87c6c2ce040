"""Reloading the policy under real Envoy: a new threshold takes effect on the next decision, an
open breaker stays open across a reload that leaves its model alone, and a broken file is refused
while the old policy keeps serving. Every swap is timed from the write to the new policy being
live (``modelguard_policy_info``), and printed."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ext_proc.processes import EnvoyProcess, ModelguardProcess, http_request, wait_for
from tests.e2e.e2e_harness import EnvoyFactory, Upstream, model_cluster_ports, send_sample

pytestmark = pytest.mark.e2e

POLICY = """\
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: recommender-resnet50}
      - {name: light,   route: recommender-mobilenet}
    breaker: {window: 30s, min_calls: MIN_CALLS, failure_rate: 0.5, consecutive_failures: 0,
              open_duration: 60s, max_open_duration: 60s}
"""
LIVE_WITHIN_S = 2.0  # the bound for a change of the file to be noticed; SIGHUP is at once


def metric(modelguard: ModelguardProcess, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = http_request(modelguard.admin_url + "/metrics", timeout=5).body.decode()
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def live_sha(modelguard: ModelguardProcess) -> str:
    (labels,) = metric(modelguard, "modelguard_policy_info")
    return dict(labels)["sha256"]


def reloads(modelguard: ModelguardProcess, result: str) -> float:
    return metric(modelguard, "modelguard_policy_reloads_total").get((("result", result),), 0.0)


def rename_over(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def swap_until_live(modelguard: ModelguardProcess, path: Path, text: str, write: Callable[[Path, str], None]) -> float:
    """Write ``text`` with ``write``; the seconds until modelguard serves it."""
    sha = hashlib.sha256(text.encode()).hexdigest()
    started = time.monotonic()
    write(path, text)
    assert wait_for(lambda: live_sha(modelguard) == sha or None, LIVE_WITHIN_S + 3, interval=0.05), (
        f"not live after {LIVE_WITHIN_S + 3} s:\n{modelguard.log_text()}"
    )
    return time.monotonic() - started


def tiers(envoy: EnvoyProcess, count: int) -> list[str | None]:
    return [send_sample(envoy.url + "/v2/models/recommender/infer").tier for _ in range(count)]


def test_reloads_keep_state_apply_thresholds_and_refuse_bad_files(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    primary, light = upstream_factory("primary"), upstream_factory("light")
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("MIN_CALLS", "100"))
    modelguard = modelguard_factory(path)
    envoy = envoy_factory(model_cluster_ports(modelguard.grpc_port, [primary.port], [light.port]))
    assert tiers(envoy, 3) == ["primary"] * 3

    primary.set_fault(True)  # 503s: 20 failures in the window, but min_calls 100 keeps it closed
    assert tiers(envoy, 20) == ["primary"] * 20
    threshold_s = swap_until_live(modelguard, path, POLICY.replace("MIN_CALLS", "10"), rename_over)
    assert tiers(envoy, 1) == ["light"], "the new min_calls did not take effect on the next decision"
    assert modelguard.tier_state("recommender", "primary") == "open"

    def hup(path: Path, text: str) -> None:
        path.write_text(text)
        os.kill(modelguard.pid, signal.SIGHUP)

    primary.set_fault(False)  # healthy again, but the open period (60 s) is far from over
    same_model = POLICY.replace("MIN_CALLS", "10") + "# reviewed: no change to the recommender\n"
    unchanged_s = swap_until_live(modelguard, path, same_model, hup)
    assert modelguard.tier_state("recommender", "primary") == "open"
    assert tiers(envoy, 5) == ["light"] * 5, "a reload that left the model alone closed its breaker"

    live = live_sha(modelguard)
    errors = reloads(modelguard, "error")
    path.write_text(POLICY.replace("MIN_CALLS", "ten"))  # in place: noticed by the watch
    assert wait_for(lambda: reloads(modelguard, "error") == errors + 1 or None, LIVE_WITHIN_S + 3, interval=0.05)
    assert live_sha(modelguard) == live
    assert tiers(envoy, 5) == ["light"] * 5
    log = modelguard.log_text()
    assert '"event": "policy_reload_failed"' in log and "models[0].breaker.min_calls: must be" in log
    assert reloads(modelguard, "success") == 2.0
    print(f"swap to live: rename-over (file watch) {threshold_s:.2f} s, SIGHUP {unchanged_s:.2f} s")
    assert threshold_s < LIVE_WITHIN_S
