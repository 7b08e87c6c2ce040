"""The shipped Envoy configs validate with the real Envoy and match the example policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.e2e_harness import (
    ENVOY_DIR,
    EXAMPLE_POLICY,
    REFERENCE_ENVOY_CONFIG,
    free_ports,
    render_envoy_config,
    validate_envoy_config,
)

pytestmark = pytest.mark.e2e

ENVOY_CONFIGS = sorted(ENVOY_DIR.glob("*.yaml"))

EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"


def _assert_valid(config: Path) -> None:
    result = validate_envoy_config(config)
    assert result.returncode == 0, (
        f"envoy --mode validate -c {config} failed (rc {result.returncode})\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    typed: dict[str, Any] = hcm["typed_config"]
    return typed


def test_reference_config_exists() -> None:
    assert REFERENCE_ENVOY_CONFIG in ENVOY_CONFIGS


@pytest.mark.parametrize("config", ENVOY_CONFIGS, ids=[p.name for p in ENVOY_CONFIGS])
def test_envoy_yaml_validates(envoy_bin: Path, config: Path) -> None:
    _assert_valid(config)


def test_rendered_test_config_validates(envoy_bin: Path, tmp_path: Path) -> None:
    listener, admin, mg, primary, light = free_ports(5)
    rendered = render_envoy_config(
        REFERENCE_ENVOY_CONFIG,
        tmp_path / "envoy.yaml",
        listener_port=listener,
        admin_port=admin,
        cluster_ports={
            "modelguard": mg,
            "recommender-resnet50": primary,
            "recommender-mobilenet": light,
        },
    )
    _assert_valid(rendered)
    text = rendered.read_text()
    assert "0.0.0.0" not in text
    for port in (listener, admin, mg, primary, light):
        assert f"port_value: {port}" in text


def test_reference_config_wires_ext_proc_before_router() -> None:
    hcm = _hcm(yaml.safe_load(REFERENCE_ENVOY_CONFIG.read_text()))
    names = [f["name"] for f in hcm["http_filters"]]
    assert names[-1] == "envoy.filters.http.router"
    assert "envoy.filters.http.ext_proc" in names

    ext_proc = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")
    cfg = ext_proc["typed_config"]
    assert cfg["@type"] == EXT_PROC_TYPE
    assert cfg["grpc_service"]["envoy_grpc"]["cluster_name"] == "modelguard"
    assert cfg["failure_mode_allow"] is True
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
    assert cfg["mutation_rules"]["allow_envoy"] is True


def test_reference_config_routes_every_policy_tier() -> None:
    config = yaml.safe_load(REFERENCE_ENVOY_CONFIG.read_text())
    policy = yaml.safe_load(EXAMPLE_POLICY.read_text())
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    (vhost,) = _hcm(config)["route_config"]["virtual_hosts"]
    routes = vhost["routes"]

    by_header: dict[str, str] = {}
    for route in routes:
        for matcher in route["match"].get("headers", []):
            if matcher["name"] == "x-modelguard-route":
                by_header[matcher["string_match"]["exact"]] = route["route"]["cluster"]

    for model in policy["models"]:
        routed = [t["route"] for t in model["tiers"] if "route" in t]
        for route_value in routed:
            assert route_value in by_header, f"no route for x-modelguard-route={route_value}"
            assert by_header[route_value] in clusters
        # Fail-open: the last route is a header-less catch-all to the first (best) tier.
        last = routes[-1]
        assert "headers" not in last["match"] and last["match"].get("prefix") == "/"
        assert last["route"]["cluster"] == by_header[routed[0]]

    modelguard = clusters["modelguard"]
    http_opts = modelguard["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2_protocol_options" in http_opts["explicit_http_config"]
    assert any("grpc_health_check" in hc for hc in modelguard["health_checks"])


def test_reference_config_strips_client_modelguard_headers() -> None:
    hcm = _hcm(yaml.safe_load(REFERENCE_ENVOY_CONFIG.read_text()))
    (early,) = hcm["early_header_mutation_extensions"]
    removals = [m["remove_on_match"]["key_matcher"] for m in early["typed_config"]["mutations"]]
    assert {"prefix": "x-modelguard-"} in removals
