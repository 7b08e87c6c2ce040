"""Real Envoy talking mutual TLS to a real modelguard, with the cluster block users copy
(envoy/modelguard-mtls-cluster.yaml): decisions with the client certificate, none without."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ext_proc.processes import EnvoyProcess, ModelguardProcess, wait_for
from tests.e2e.e2e_harness import (
    EXAMPLE_POLICY,
    MODEL_PATH,
    MODELGUARD_CLUSTER,
    EnvoyFactory,
    Upstream,
    infer,
    model_cluster_ports,
    mtls_transport_socket,
    send_sample,
)
from tests.tls_certs import Pki, make_pki

pytestmark = pytest.mark.e2e

EXT_PROC_STATS = "http.ingress_http.ext_proc.modelguard."
SSL_STATS = f"cluster.{MODELGUARD_CLUSTER}.ssl."


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def start_stack(
    pki: Pki,
    envoy_factory: EnvoyFactory,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[..., ModelguardProcess],
    *,
    client_certificate: bool,
) -> tuple[EnvoyProcess, ModelguardProcess, Upstream]:
    """modelguard requiring client certificates from pki's CA; Envoy with or without one."""
    primary = upstream_factory("primary")
    light = upstream_factory("light")
    tls_flags = ["--grpc-tls-cert", str(pki.server.cert), "--grpc-tls-key", str(pki.server.key)]
    modelguard = modelguard_factory(EXAMPLE_POLICY, extra_args=[*tls_flags, "--grpc-tls-client-ca", str(pki.ca_file)])
    socket = mtls_transport_socket(pki.ca_file, pki.client if client_certificate else None)
    envoy = envoy_factory(
        model_cluster_ports(modelguard.grpc_port, [primary.port], [light.port]),
        transport_sockets={MODELGUARD_CLUSTER: socket},
    )
    return envoy, modelguard, primary


def primary_outcomes(modelguard: ModelguardProcess) -> dict[str, int]:
    outcomes: dict[str, int] = modelguard.state()["models"]["recommender"]["tiers"]["primary"]["outcomes"]
    return outcomes


def test_envoy_with_a_client_certificate_gets_decisions_and_reports_outcomes(
    pki: Pki,
    envoy_factory: EnvoyFactory,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[..., ModelguardProcess],
) -> None:
    envoy, modelguard, primary = start_stack(
        pki, envoy_factory, upstream_factory, modelguard_factory, client_certificate=True
    )
    url = envoy.url + MODEL_PATH
    tagged = wait_for(lambda: (s := send_sample(url)).tier == "primary" and s, 10.0, 0.1)
    assert tagged, f"no request came back tagged by modelguard: {send_sample(url)}\n{envoy.log_text()}"
    for _ in range(5):
        sample = send_sample(url)
        assert sample.served_by_primary, sample
    # The outcomes came back over the same mutual-TLS streams.
    assert wait_for(lambda: primary_outcomes(modelguard).get("success", 0) >= 6 or None, 5.0), primary_outcomes(
        modelguard
    )
    stats = envoy.stats(SSL_STATS.replace(".", r"\.") + "|" + EXT_PROC_STATS.replace(".", r"\."))
    assert stats[SSL_STATS + "handshake"] >= 1, stats
    assert stats.get(EXT_PROC_STATS + "failure_mode_allowed", 0) == 0, stats
    assert primary.count(200) >= 6


def test_envoy_without_a_client_certificate_gets_no_decision(
    pki: Pki,
    envoy_factory: EnvoyFactory,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[..., ModelguardProcess],
) -> None:
    envoy, modelguard, primary = start_stack(
        pki, envoy_factory, upstream_factory, modelguard_factory, client_certificate=False
    )
    count = 10
    for _ in range(count):
        res = infer(envoy.url + MODEL_PATH)
        # Fail-open: the default route, untagged, because modelguard never saw the request.
        assert res.status == 200 and res.json()["server"] == "primary", res
        assert "x-modelguard-tier" not in res.headers
    assert primary.count(200) == count
    stats = envoy.stats(EXT_PROC_STATS.replace(".", r"\.") + "|" + rf"cluster\.{MODELGUARD_CLUSTER}\.")
    assert stats[EXT_PROC_STATS + "failure_mode_allowed"] >= count, stats
    assert stats[EXT_PROC_STATS + "streams_failed"] >= count, stats
    assert stats.get(EXT_PROC_STATS + "stream_msgs_received", 0) == 0, stats
    # modelguard closed every connection in the handshake, the health checks' too.
    assert stats.get(SSL_STATS + "handshake", 0) == 0, stats
    assert stats[f"cluster.{MODELGUARD_CLUSTER}.upstream_cx_connect_fail"] >= 1, stats
    # Nothing Envoy sent counted: no decision, no outcome.
    outcomes = primary_outcomes(modelguard)
    assert outcomes and set(outcomes.values()) == {0}, outcomes
    assert modelguard.running()
