"""Retry-storm control with real Envoy on the reference config: while the primary is half-open its
probe carries ``x-envoy-max-retries: 0``, and Envoy's own retry counters stay still; before, with
the primary failing and closed, the same route retries (so the counters do count these retries).

Three primary hosts that all answer 503 (a bad model), one healthy light host.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ext_proc.processes import ModelguardProcess, wait_for
from tests.e2e.e2e_harness import MODEL_PATH, EnvoyFactory, Upstream, model_cluster_ports, send_sample

pytestmark = pytest.mark.e2e

POLICY = """\
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: recommender-resnet50}
      - {name: light,   route: recommender-mobilenet}
    breaker: {window: 10s, min_calls: 4, consecutive_failures: 3, open_duration: 1s, max_open_duration: 1s,
              half_open_probes: 1, jitter: 0}
"""
RETRIES = r"cluster\.[^.]+\.upstream_rq_retry$"


def test_a_half_open_probe_is_not_retried(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    primaries = [upstream_factory("primary") for _ in range(3)]
    light = upstream_factory("light")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    modelguard = modelguard_factory(policy)
    envoy = envoy_factory(model_cluster_ports(modelguard.grpc_port, [p.port for p in primaries], [light.port]))
    url = envoy.url + MODEL_PATH

    def retries() -> int:
        return sum(envoy.stats(RETRIES).values())

    assert wait_for(lambda: send_sample(url).tier == "primary" or None, 10.0, 0.1), "modelguard does not tag"
    for host in primaries:
        host.set_fault(True)
    before_fault = retries()
    opened = wait_for(
        lambda: (send_sample(url), modelguard.tier_state("recommender", "primary") == "open")[1] or None, 10.0, 0.05
    )
    assert opened, modelguard.state()
    retried_while_closed = retries() - before_fault
    assert retried_while_closed > 0, "a failing closed primary's calls were not retried: the stat counts nothing"

    degraded = send_sample(url)
    assert degraded.served_degraded_by_light, degraded
    time.sleep(1.2)  # the open period ends: the next call is the half-open probe
    before_probe, primary_calls = retries(), sum(host.request_count for host in primaries)
    probe = send_sample(url)
    probe_retries = retries() - before_probe
    probe_calls = sum(host.request_count for host in primaries) - primary_calls

    assert probe.tier == "primary" and probe.status == 503, probe  # the probe failed, and was not retried
    assert probe_retries == 0, f"Envoy retried the half-open probe {probe_retries} time(s)"
    assert probe_calls == 1
    assert probe.attempts == 1
    with capsys.disabled():
        print(
            f"\n[e2e retry suppression] closed and failing: {retried_while_closed} retries;"
            f" half-open probe: {probe_retries} retries, {probe_calls} primary call, attempts {probe.attempts}"
        )
