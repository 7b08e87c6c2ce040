"""A bad host is Envoy's job: one primary replica of three fails, nobody else notices.

envoy/envoy.yaml retries a 5xx once on another host (previous_hosts) and ejects a host after
five consecutive 5xx / gateway failures. With one bad replica of three, clients see no error,
the bad host is ejected, and modelguard's primary breaker stays closed: no model-wide
over-reaction to a single host.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ext_proc.processes import ModelguardProcess, wait_for
from tests.e2e.e2e_harness import (
    MODEL_PATH,
    PRIMARY_CLUSTER,
    EnvoyFactory,
    Traffic,
    Upstream,
    model_cluster_ports,
    running_traffic,
    send_sample,
    summarize,
)
from tests.e2e.test_degrade import MODEL, POLICY

pytestmark = pytest.mark.e2e

OUTLIER = f"cluster.{PRIMARY_CLUSTER}.outlier_detection."
OUTLIER_RE = OUTLIER.replace(".", r"\.")


def test_one_bad_replica_is_hidden_and_ejected(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = [upstream_factory("primary") for _ in range(2)]
    bad = upstream_factory("primary")
    light = upstream_factory("light")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    modelguard = modelguard_factory(policy)
    envoy = envoy_factory(
        model_cluster_ports(modelguard.grpc_port, [good[0].port, bad.port, good[1].port], [light.port])
    )
    url = envoy.url + MODEL_PATH
    warm = wait_for(lambda: (s := send_sample(url)).tier == "primary" and s, 10.0, 0.1)
    assert warm, f"no request came back tagged by modelguard: {send_sample(url)}"

    bad.set_fault(True)
    traffic = Traffic(url, interval=0.02, max_duration=20.0)
    with running_traffic(traffic):
        t0 = time.monotonic()
        ejected = wait_for(
            lambda: envoy.stats(OUTLIER_RE).get(OUTLIER + "ejections_active") == 1,
            5.0,
            0.05,
        )
        t_ejected = time.monotonic()
        # Keep going a while: the ejected host gets nothing, nobody sees an error.
        assert wait_for(lambda: len(traffic.since(t_ejected)) >= 50 or None, 5.0)
        bad_served_after_ejection = bad.request_count
        assert wait_for(lambda: len(traffic.since(time.monotonic() - 0.5)) >= 20 or None, 5.0)
    samples = traffic.since(t0)

    assert ejected, f"bad host not ejected: {envoy.stats(OUTLIER_RE)}"
    assert all(s.served_by_primary for s in samples), summarize(samples)
    retried = [s for s in samples if s.attempts == 2]
    assert retried, "no response showed x-envoy-attempt-count: 2"
    assert all(s.attempts in (1, 2) for s in samples)
    # Consecutive 5xx reach the threshold (5) on the bad host, then it gets no more traffic.
    assert 5 <= bad.count(503) <= 8, bad.count(503)
    assert bad.request_count == bad_served_after_ejection
    assert light.request_count == 0
    assert modelguard.tier_state(MODEL, "primary") == "closed"
    tiers = modelguard.state()["models"][MODEL]["tiers"]["primary"]
    # Envoy names the host that answered (response_attributes in envoy/envoy.yaml): modelguard sees
    # the healthy replicas one by one, so a run of one host's failures could not open the breaker.
    hosts = tiers["hosts"]
    assert {f"127.0.0.1:{g.port}" for g in good} <= set(hosts) <= {f"127.0.0.1:{u.port}" for u in (*good, bad)}, hosts

    stats = envoy.stats(r"cluster\.recommender-resnet50\.(outlier_detection|upstream_rq_retry)")
    with capsys.disabled():
        print(
            f"\n[e2e bad host] {len(samples)} requests: {summarize(samples)}; "
            f"{len(retried)} retried on another host; bad host answered {bad.count(503)} x 503, "
            f"ejected after {t_ejected - t0:.2f}s; envoy: "
            + ", ".join(f"{k.removeprefix(f'cluster.{PRIMARY_CLUSTER}.')}={v}" for k, v in sorted(stats.items()) if v)
            + f"; modelguard primary: {tiers.get('state')}"
        )
