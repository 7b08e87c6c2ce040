"""modelguard down: Envoy still serves model traffic through the default (primary) route."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ext_proc.processes import EnvoyProcess, ModelguardProcess, http_request, wait_for
from tests.e2e.e2e_harness import (
    EXAMPLE_POLICY,
    MODEL_PATH,
    EnvoyFactory,
    Traffic,
    Upstream,
    free_port,
    infer,
    model_cluster_ports,
    running_traffic,
    send_sample,
    summarize,
)

pytestmark = pytest.mark.e2e

EXT_PROC_STATS = "http.ingress_http.ext_proc.modelguard."


@pytest.fixture
def envoy_without_modelguard(
    envoy_factory: EnvoyFactory, upstream_factory: Callable[[str], Upstream]
) -> tuple[EnvoyProcess, Upstream, Upstream]:
    primary = upstream_factory("primary")
    light = upstream_factory("light")
    # Nothing listens on the modelguard port: every ext_proc stream fails to connect.
    envoy = envoy_factory(model_cluster_ports(free_port(), [primary.port], [light.port]))
    return envoy, primary, light


def test_requests_succeed_when_modelguard_is_down(
    envoy_without_modelguard: tuple[EnvoyProcess, Upstream, Upstream],
) -> None:
    envoy, primary, light = envoy_without_modelguard
    count = 20
    for i in range(count):
        if i % 2:
            res = http_request(
                envoy.url + MODEL_PATH,
                method="POST",
                headers={"Content-Type": "application/json"},
                body=b'{"inputs": []}',
            )
        else:
            res = infer(envoy.url + MODEL_PATH)
        assert res.status == 200, res
        assert res.json()["server"] == "primary"
        # Nothing tagged the response: modelguard never saw it.
        assert "x-modelguard-tier" not in res.headers
        assert "x-modelguard-degraded" not in res.headers

    assert primary.count(200) == count
    assert light.request_count == 0
    stats = envoy.stats(EXT_PROC_STATS.replace(".", r"\."))
    assert stats[EXT_PROC_STATS + "failure_mode_allowed"] >= count, stats
    assert stats[EXT_PROC_STATS + "stream_msgs_received"] == 0, stats


def test_unmatched_paths_also_fail_open(
    envoy_without_modelguard: tuple[EnvoyProcess, Upstream, Upstream],
) -> None:
    envoy, primary, _ = envoy_without_modelguard
    res = http_request(envoy.url + "/some/other/path")
    assert res.status == 200
    assert res.json() == {"server": "primary", "path": "/some/other/path"}
    assert primary.request_count == 1


def test_client_cannot_pick_a_tier_while_modelguard_is_down(
    envoy_without_modelguard: tuple[EnvoyProcess, Upstream, Upstream],
) -> None:
    envoy, primary, light = envoy_without_modelguard
    forged = {
        "x-modelguard-route": "recommender-mobilenet",
        "x-modelguard-tier": "light",
        "x-modelguard-reason": "forged",
    }
    for _ in range(5):
        res = infer(envoy.url + MODEL_PATH, headers=forged)
        assert res.status == 200
        assert res.json()["server"] == "primary"
    assert light.request_count == 0
    # The early header mutation removed every x-modelguard-* header before routing.
    assert not [h for h in primary.last_headers if h.startswith("x-modelguard-")]


def test_traffic_keeps_flowing_when_modelguard_stops(
    envoy_factory: EnvoyFactory,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
) -> None:
    """modelguard (running examples/policy.yaml) gets SIGTERM mid-traffic: no request fails."""
    primary = upstream_factory("primary")
    light = upstream_factory("light")
    modelguard = modelguard_factory(EXAMPLE_POLICY)
    envoy = envoy_factory(model_cluster_ports(modelguard.grpc_port, [primary.port], [light.port]))
    url = envoy.url + MODEL_PATH
    warm = wait_for(lambda: (s := send_sample(url)).tier == "primary" and s, 10.0, 0.1)
    assert warm, f"no request came back tagged by modelguard: {send_sample(url)}"

    traffic = Traffic(url, interval=0.02, max_duration=30.0)
    with running_traffic(traffic):
        t_start = time.monotonic()
        assert wait_for(lambda: len(traffic.since(t_start)) >= 20 or None, 5.0)
        t_stop = time.monotonic()
        rc = modelguard.stop()
        t_gone = time.monotonic()
        assert wait_for(lambda: len(traffic.since(t_gone)) >= 30 or None, 5.0)

    guarded = traffic.since(t_start, until=t_stop)
    assert all(s.served_by_primary for s in guarded), summarize(guarded)
    after = traffic.since(t_stop)
    assert all(s.status == 200 and s.server == "primary" for s in after), summarize(after)
    assert all(s.tier is None for s in traffic.since(t_gone)[-10:]), summarize(after)
    assert light.request_count == 0
    assert rc == 0, f"modelguard exit status after SIGTERM: {rc}\n{modelguard.log_text()}"
    stats = envoy.stats(EXT_PROC_STATS.replace(".", r"\."))
    assert stats[EXT_PROC_STATS + "failure_mode_allowed"] > 0, stats


def test_config_without_ext_proc_serves_the_default_route(
    envoy_factory: EnvoyFactory, upstream_factory: Callable[[str], Upstream]
) -> None:
    """render_envoy_config(without_ext_proc=True), as `modelguard demo` runs its comparison:
    no ext_proc filter at all, the same routes, retries and clusters."""
    primaries = [upstream_factory("primary") for _ in range(3)]
    light = upstream_factory("light")
    envoy = envoy_factory(
        model_cluster_ports(free_port(), [p.port for p in primaries], [light.port]),
        without_ext_proc=True,
    )
    for _ in range(9):
        res = infer(envoy.url + MODEL_PATH)
        assert res.status == 200, res
        assert res.json()["server"] == "primary"
        assert "x-modelguard-tier" not in res.headers
        assert res.headers.get("x-envoy-attempt-count") == "1"
    assert [p.request_count for p in primaries] == [3, 3, 3]  # round robin over the three hosts
    assert light.request_count == 0
    assert not envoy.stats(r"ext_proc"), "no ext_proc filter should be configured"
    assert not envoy.stats(r"^cluster\.modelguard\."), "the modelguard cluster should be gone"


def test_killed_modelguard_fails_open_and_protection_resumes_on_restart(
    envoy_factory: EnvoyFactory,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[..., ModelguardProcess],
    tmp_path: Path,
) -> None:
    """SIGKILL (no graceful drain) under load: requests keep succeeding on the default route;
    a restarted modelguard on the same port tags traffic again and trips on a failing primary."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "models:\n"
        "  - name: recommender\n"
        "    match: {path_prefix: /v2/models/recommender}\n"
        "    tiers: [{name: primary, route: recommender-resnet50}, {name: light, route: recommender-mobilenet}]\n"
        "    breaker: {window: 2s, min_calls: 5, consecutive_failures: 3, open_duration: 5s}\n"
    )
    primary = upstream_factory("primary")
    light = upstream_factory("light")
    first = modelguard_factory(policy)
    envoy = envoy_factory(model_cluster_ports(first.grpc_port, [primary.port], [light.port]))
    url = envoy.url + MODEL_PATH
    assert wait_for(lambda: send_sample(url).tier == "primary" or None, 10.0, 0.1)

    traffic = Traffic(url, interval=0.02, max_duration=40.0)
    with running_traffic(traffic):
        t_kill = time.monotonic()
        first.proc.kill()
        first.proc.wait(timeout=5)
        assert wait_for(lambda: len(traffic.since(t_kill + 1.0)) >= 50 or None, 10.0)
        unprotected = traffic.since(t_kill)
        second = modelguard_factory(policy, grpc_port=first.grpc_port)
        t_back = time.monotonic()
        # Envoy reconnects on the next stream; traffic is tagged by modelguard again.
        assert wait_for(
            lambda: (s := traffic.first_since(time.monotonic() - 0.2, lambda s: s.tier == "primary")) and s, 15.0, 0.1
        ), summarize(traffic.since(t_back))
        primary.set_fault(True)
        t_fault = time.monotonic()
        degraded = wait_for(lambda: traffic.first_since(t_fault, lambda s: s.served_degraded_by_light), 10.0, 0.1)

    assert all(s.status == 200 and s.server == "primary" for s in unprotected), summarize(unprotected)
    assert any(s.tier is None for s in unprotected), "no request went through while modelguard was dead"
    assert degraded is not None, summarize(traffic.since(t_fault))
    assert second.tier_state("recommender", "primary") == "open"
