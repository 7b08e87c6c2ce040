"""The shipped Envoy configs validate with the real Envoy and say what envoy/README.md says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ext_proc.processes import free_ports, render_envoy_config, validate_envoy_config
from tests.e2e.e2e_harness import (
    CANARY_CLUSTER,
    ENVOY_DIR,
    ENVOY_FRAGMENTS,
    EXAMPLE_POLICY,
    LIGHT_CLUSTER,
    MODELGUARD_CLUSTER,
    MTLS_CA,
    MTLS_CLIENT_CERT,
    MTLS_CLIENT_KEY,
    MTLS_FRAGMENT,
    PRIMARY_CLUSTER,
    REFERENCE_ENVOY_CONFIG,
    mtls_transport_socket,
)
from tests.tls_certs import SERVER_DNS_NAMES, make_pki

pytestmark = pytest.mark.e2e

# Every bootstrap under envoy/; fragments (blocks to paste into one) are checked spliced in, below.
ENVOY_CONFIGS = sorted(p for p in ENVOY_DIR.glob("*.yaml") if p not in ENVOY_FRAGMENTS)

EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
MODEL_CLUSTERS = (PRIMARY_CLUSTER, LIGHT_CLUSTER, CANARY_CLUSTER)
CANARY_ROUTE = "recommender-resnet50-v2"


def _assert_valid(config: Path, envoy: Path) -> None:
    result = validate_envoy_config(config, envoy=envoy)
    assert result.returncode == 0, (
        f"envoy --mode validate -c {config} failed (rc {result.returncode})\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def _reference() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(REFERENCE_ENVOY_CONFIG.read_text())
    return config


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    typed: dict[str, Any] = hcm["typed_config"]
    return typed


def _vhost(config: dict[str, Any]) -> dict[str, Any]:
    (vhost,) = _hcm(config)["route_config"]["virtual_hosts"]
    found: dict[str, Any] = vhost
    return found


def _clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def _ports(cluster: dict[str, Any]) -> list[int]:
    return [
        lb["endpoint"]["address"]["socket_address"]["port_value"]
        for group in cluster["load_assignment"]["endpoints"]
        for lb in group["lb_endpoints"]
    ]


def _route_by_header(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """x-modelguard-route value -> the route entry that matches it."""
    by_header: dict[str, dict[str, Any]] = {}
    for route in _vhost(config)["routes"]:
        for matcher in route["match"].get("headers", []):
            if matcher["name"] == "x-modelguard-route":
                by_header[matcher["string_match"]["exact"]] = route
    return by_header


def test_reference_config_exists() -> None:
    assert REFERENCE_ENVOY_CONFIG in ENVOY_CONFIGS


@pytest.mark.parametrize("config", ENVOY_CONFIGS, ids=[p.name for p in ENVOY_CONFIGS])
def test_envoy_yaml_validates(envoy_bin: Path, config: Path) -> None:
    _assert_valid(config, envoy_bin)


def test_rendered_test_config_validates(envoy_bin: Path, tmp_path: Path) -> None:
    listener, admin, mg, p1, p2, p3, l1, l2, canary = free_ports(9)
    rendered = render_envoy_config(
        REFERENCE_ENVOY_CONFIG,
        tmp_path / "envoy.yaml",
        listener_port=listener,
        admin_port=admin,
        cluster_ports={
            MODELGUARD_CLUSTER: [mg],
            PRIMARY_CLUSTER: [p1, p2, p3],
            LIGHT_CLUSTER: [l1, l2],
            CANARY_CLUSTER: [canary],
        },
    )
    _assert_valid(rendered, envoy_bin)
    text = rendered.read_text()
    assert "0.0.0.0" not in text
    for port in (listener, admin, mg, p1, p2, p3, l1, l2, canary):
        assert f"port_value: {port}" in text


def test_mtls_fragment_is_a_transport_socket_that_checks_modelguard() -> None:
    fragment = yaml.safe_load(MTLS_FRAGMENT.read_text())
    assert list(fragment) == ["transport_socket"]
    socket = fragment["transport_socket"]
    typed = socket["typed_config"]
    assert typed["@type"] == "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    common = typed["common_tls_context"]
    assert common["alpn_protocols"] == ["h2"]  # gRPC servers refuse TLS without it
    assert common["tls_certificates"] == [
        {"certificate_chain": {"filename": MTLS_CLIENT_CERT}, "private_key": {"filename": MTLS_CLIENT_KEY}}
    ]
    validation = common["validation_context"]
    assert validation["trusted_ca"] == {"filename": MTLS_CA}
    # Envoy checks whose certificate it got, not only that the CA signed it.
    assert validation["match_typed_subject_alt_names"] == [{"san_type": "DNS", "matcher": {"exact": typed["sni"]}}]
    assert typed["sni"] in SERVER_DNS_NAMES  # what the test certificates name (tests/tls_certs.py)


def test_mtls_fragment_spliced_into_the_reference_validates(envoy_bin: Path, tmp_path: Path) -> None:
    # Envoy's validate mode opens the certificate files: real ones stand in for the placeholders.
    pki = make_pki(tmp_path / "pki")
    listener, admin, mg, p1, l1, canary = free_ports(6)
    rendered = render_envoy_config(
        REFERENCE_ENVOY_CONFIG,
        tmp_path / "envoy-mtls.yaml",
        listener_port=listener,
        admin_port=admin,
        cluster_ports={MODELGUARD_CLUSTER: [mg], PRIMARY_CLUSTER: [p1], LIGHT_CLUSTER: [l1], CANARY_CLUSTER: [canary]},
        transport_sockets={MODELGUARD_CLUSTER: mtls_transport_socket(pki.ca_file, pki.client)},
    )
    _assert_valid(rendered, envoy_bin)
    modelguard = _clusters(yaml.safe_load(rendered.read_text()))[MODELGUARD_CLUSTER]
    assert modelguard["transport_socket"]["name"] == "envoy.transport_sockets.tls"
    # The spliced file is what Envoy checked: a missing client key is an error, not ignored.
    pki.client.key.unlink()
    assert validate_envoy_config(rendered, envoy=envoy_bin).returncode != 0


def test_reference_ports() -> None:
    config = _reference()
    assert config["admin"]["address"]["socket_address"]["port_value"] == 9901
    (listener,) = config["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["port_value"] == 10000
    clusters = _clusters(config)
    assert _ports(clusters[MODELGUARD_CLUSTER]) == [50051]
    assert _ports(clusters[PRIMARY_CLUSTER]) == [8001, 8002, 8003]
    assert _ports(clusters[LIGHT_CLUSTER]) == [8011, 8012]
    assert _ports(clusters[CANARY_CLUSTER]) == [8021]


def test_reference_config_wires_ext_proc_before_router() -> None:
    hcm = _hcm(_reference())
    names = [f["name"] for f in hcm["http_filters"]]
    assert names[-1] == "envoy.filters.http.router"
    assert names.index("envoy.filters.http.ext_proc") < names.index("envoy.filters.http.router")

    ext_proc = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")
    cfg = ext_proc["typed_config"]
    assert cfg["@type"] == EXT_PROC_TYPE
    assert cfg["grpc_service"]["envoy_grpc"]["cluster_name"] == MODELGUARD_CLUSTER
    assert cfg["failure_mode_allow"] is True
    assert cfg["message_timeout"] == "0.2s"
    assert cfg["processing_mode"] == {
        "request_header_mode": "SEND",
        "response_header_mode": "SEND",
        "request_body_mode": "NONE",
        "response_body_mode": "NONE",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }
    # Re-routing on x-modelguard-route needs the route cache cleared on modelguard's word.
    assert cfg.get("route_cache_action", "DEFAULT") in ("DEFAULT", "CLEAR")
    assert not cfg.get("disable_clear_route_cache", False)
    # x-envoy-* mutations (retry / timeout headers) are allowed, routing headers are not.
    rules = cfg["mutation_rules"]
    assert rules["allow_envoy"] is True
    assert rules["disallow_system"] is True
    assert rules.get("allow_all_routing", False) is False
    assert not rules.get("disallow_all", False)


def test_reference_config_routes_every_policy_tier() -> None:
    config = _reference()
    policy = yaml.safe_load(EXAMPLE_POLICY.read_text())
    clusters = _clusters(config)
    routes = _vhost(config)["routes"]
    # A route to an aggregate cluster (the primary, then the light tier for the last retry) serves
    # the aggregate's first cluster: that is the tier's own.
    firsts = {
        name: c["cluster_type"]["typed_config"]["clusters"][0]
        for name, c in clusters.items()
        if c.get("cluster_type", {}).get("name") == "envoy.clusters.aggregate"
    }
    by_header = {
        value: firsts.get(route["route"]["cluster"], route["route"]["cluster"])
        for value, route in _route_by_header(config).items()
    }

    for model in policy["models"]:
        routed = [t["route"] for t in model["tiers"] if "route" in t]
        for route_value in routed:
            assert route_value in by_header, f"no route for x-modelguard-route={route_value}"
            assert by_header[route_value] in clusters
        # Fail-open: the last route is a header-less catch-all to the first (best) tier.
        last = routes[-1]
        assert "headers" not in last["match"] and last["match"].get("prefix") == "/"
        assert firsts.get(last["route"]["cluster"], last["route"]["cluster"]) == by_header[routed[0]]
    # Every header route comes before any header-less route (or it could never match).
    header_less = [i for i, r in enumerate(routes) if "headers" not in r["match"]]
    assert header_less == [len(routes) - 1]

    assert by_header == {
        "recommender-resnet50": PRIMARY_CLUSTER,
        "recommender-mobilenet": LIGHT_CLUSTER,
        CANARY_ROUTE: CANARY_CLUSTER,
    }

    modelguard = clusters[MODELGUARD_CLUSTER]
    http_opts = modelguard["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in http_opts["explicit_http_config"]
    assert any("grpc_health_check" in hc for hc in modelguard["health_checks"])


def test_reference_config_strips_client_modelguard_headers() -> None:
    hcm = _hcm(_reference())
    (early,) = hcm["early_header_mutation_extensions"]
    removals = [m["remove_on_match"]["key_matcher"] for m in early["typed_config"]["mutations"]]
    assert {"prefix": "x-modelguard-"} in removals


def test_reference_config_copies_modelguard_tags_onto_the_response() -> None:
    # modelguard ends its stream on the response instead of answering it, so the tags it set on
    # the request reach the client only through the virtual host (checked live in tests/e2e).
    added = {
        entry["header"]["key"]: (entry["header"]["value"], entry["append_action"])
        for entry in _vhost(_reference())["response_headers_to_add"]
    }
    assert added == {
        "x-modelguard-tier": ("%REQ(x-modelguard-tier)%", "OVERWRITE_IF_EXISTS_OR_ADD"),
        "x-modelguard-degraded": ("%REQ(x-modelguard-degraded)%", "OVERWRITE_IF_EXISTS_OR_ADD"),
        "x-modelguard-arm": ("%REQ(x-modelguard-arm)%", "OVERWRITE_IF_EXISTS_OR_ADD"),
    }


def test_reference_config_retries_on_another_host() -> None:
    config = _reference()
    assert _vhost(config)["include_attempt_count_in_response"] is True
    routes = _route_by_header(config)
    default = _vhost(config)["routes"][-1]
    for route in (routes["recommender-resnet50"], routes["recommender-mobilenet"], default):
        policy = route["route"]["retry_policy"]
        assert set(policy["retry_on"].split(",")) == {"5xx", "reset", "connect-failure", "refused-stream"}
        assert policy["num_retries"] >= 1
        assert "per_try_timeout" in policy
        predicates = [p["name"] for p in policy["retry_host_predicate"]]
        assert predicates == ["envoy.retry_host_predicates.previous_hosts"]
    # The canary's own errors stay visible to modelguard: 5xx answers are not retried there.
    canary = routes[CANARY_ROUTE]["route"]["retry_policy"]
    assert "5xx" not in canary["retry_on"].split(",")
    assert "gateway-error" not in canary["retry_on"].split(",")


def _ejectable(hosts: int, max_ejection_percent: int) -> int:
    """How many hosts Envoy's outlier detection may eject at once (ejectHost in
    source/common/upstream/outlier_detection_impl.cc: (active + 1) / hosts * 100 <= max)."""
    ejected = 0
    while ejected < hosts and 100.0 * (ejected + 1) / hosts <= max_ejection_percent:
        ejected += 1
    return ejected


@pytest.mark.parametrize("name", MODEL_CLUSTERS)
def test_model_cluster_outlier_detection_and_retry_budget(name: str) -> None:
    cluster = _clusters(_reference())[name]
    od = cluster["outlier_detection"]
    assert od["enforcing_consecutive_5xx"] == 100
    assert od["enforcing_consecutive_gateway_failure"] == 100  # Envoy's default is 0
    assert 3 <= od["consecutive_5xx"] <= 10
    assert 3 <= od["consecutive_gateway_failure"] <= 10
    assert od["interval"] in ("1s", "2s")
    assert not od.get("always_eject_one_host", False)
    hosts = len(_ports(cluster))
    # At most one host ejected, and never the last one.
    assert _ejectable(hosts, od["max_ejection_percent"]) == (1 if hosts > 1 else 0)

    (thresholds,) = cluster["circuit_breakers"]["thresholds"]
    budget = thresholds["retry_budget"]
    assert 0 < budget["budget_percent"]["value"] <= 25
    assert budget["min_retry_concurrency"] >= 1


def test_ejectable_matches_envoy_rounding() -> None:
    assert _ejectable(3, 34) == 1
    assert _ejectable(3, 33) == 0  # 33.3% > 33: not even one
    assert _ejectable(3, 67) == 2
    assert _ejectable(2, 34) == 0
    assert _ejectable(2, 50) == 1
    assert _ejectable(1, 99) == 0
    assert _ejectable(1, 100) == 1
