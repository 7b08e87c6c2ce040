"""Real Envoy on the reference config exports, on /stats/prometheus, every envoy_* series the Grafana
dashboard and the PrometheusRule of istio/monitoring/ read: listed at zero from the start (so rate()
has a first point), the HTTP connection manager's stat prefix in a label (so the queries sum over it),
and the fail-open counters moving when modelguard goes away."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ext_proc.processes import EnvoyProcess, ModelguardProcess, http_request
from tests.e2e.e2e_harness import EXAMPLE_POLICY, MODEL_PATH, EnvoyFactory, Upstream, infer, model_cluster_ports
from tests.unit.istio.monitoring_queries import ENVOY_PREFIX, Sample, samples, used_metric_names

pytestmark = pytest.mark.e2e

HCM_PREFIX = "ingress_http"  # the HTTP connection manager's stat_prefix in envoy/envoy.yaml
HCM_LABEL = "envoy_http_conn_manager_prefix"
EXT_PROC = "envoy_http_ext_proc_modelguard_"


def prometheus_stats(envoy: EnvoyProcess) -> list[Sample]:
    res = http_request(envoy.admin_url + "/stats/prometheus", timeout=5.0)
    assert res.status == 200, res
    return samples(res.body.decode())


def total(found: list[Sample], name: str) -> float:
    picked = [sample.value for sample in found if sample.name == name]
    assert picked, f"Envoy exports no {name}"
    return sum(picked)


def test_every_envoy_series_the_dashboard_and_alerts_read_is_exported(
    envoy_factory: EnvoyFactory,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
) -> None:
    wanted = {name for name in used_metric_names() if name.startswith(ENVOY_PREFIX)}
    assert {EXT_PROC + "failure_mode_allowed", EXT_PROC + "streams_failed", EXT_PROC + "streams_started"} <= wanted
    primary = upstream_factory("primary")
    light = upstream_factory("light")
    modelguard = modelguard_factory(EXAMPLE_POLICY)
    envoy = envoy_factory(model_cluster_ports(modelguard.grpc_port, [primary.port], [light.port]))

    # Before any request: every counter is there, at zero.
    start = prometheus_stats(envoy)
    assert wanted - {sample.name for sample in start} == set()
    assert {name: total(start, name) for name in wanted} == dict.fromkeys(wanted, 0.0)

    # Through modelguard: its answer tags the response, and nothing fails open.
    res = infer(envoy.url + MODEL_PATH)
    assert res.status == 200 and res.headers.get("x-modelguard-tier") == "primary", res
    guarded = prometheus_stats(envoy)
    assert total(guarded, EXT_PROC + "streams_started") == 1
    assert total(guarded, EXT_PROC + "failure_mode_allowed") == 0
    assert total(guarded, EXT_PROC + "streams_failed") == 0

    # modelguard gone: requests still succeed, untagged, and the fail-open counters say so.
    modelguard.stop()
    for _ in range(3):
        res = infer(envoy.url + MODEL_PATH)
        assert res.status == 200 and "x-modelguard-tier" not in res.headers, res
    after = prometheus_stats(envoy)
    assert wanted - {sample.name for sample in after} == set()
    assert total(after, EXT_PROC + "failure_mode_allowed") == 3
    assert total(after, EXT_PROC + "streams_failed") == 3
    assert total(after, EXT_PROC + "streams_started") == 4
    assert total(after, EXT_PROC + "message_timeouts") == 0

    # The connection manager's stat prefix is a label, never part of a name the queries use.
    for sample in after:
        if sample.name in wanted:
            assert HCM_PREFIX not in sample.name
            assert sample.labels == {HCM_LABEL: HCM_PREFIX}, sample
