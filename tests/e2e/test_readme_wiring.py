"""The README's minimal Envoy wiring, as printed, in real Envoy: it validates, modelguard tags
through it, and a client cannot pick its own tier with it while modelguard is down."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ext_proc.processes import ModelguardProcess, validate_envoy_config
from tests.e2e.e2e_harness import (
    EXAMPLE_POLICY,
    MODEL_PATH,
    REFERENCE_ENVOY_CONFIG,
    EnvoyFactory,
    Upstream,
    free_port,
    infer,
    model_cluster_ports,
)

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
FORGED = {"x-modelguard-route": "recommender-mobilenet", "x-modelguard-tier": "light"}


def readme_wiring() -> dict[str, Any]:
    """The first YAML block after "Minimal Envoy wiring" in the README."""
    text = README.read_text()
    found = re.search(r"Minimal Envoy wiring.*?```yaml\n(.*?)```", text, re.DOTALL)
    assert found, "README has no 'Minimal Envoy wiring' YAML block"
    block: dict[str, Any] = yaml.safe_load(found.group(1))
    return block


def bootstrap_with_readme_wiring(dest: Path) -> Path:
    """The reference bootstrap with its connection manager replaced by the README's block."""
    config: dict[str, Any] = yaml.safe_load(REFERENCE_ENVOY_CONFIG.read_text())
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    hcm["typed_config"] = {"@type": HCM_TYPE, "stat_prefix": "ingress_http", **copy.deepcopy(readme_wiring())}
    dest.write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def test_readme_wiring_strips_client_headers_before_anything_else() -> None:
    (extension,) = readme_wiring()["early_header_mutation_extensions"]
    assert extension["typed_config"]["mutations"] == [{"remove_on_match": {"key_matcher": {"prefix": "x-modelguard-"}}}]


def test_readme_wiring_validates(envoy_bin: Path, tmp_path: Path) -> None:
    config = bootstrap_with_readme_wiring(tmp_path / "readme-envoy.yaml")
    result = validate_envoy_config(config, envoy=envoy_bin)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_wiring_in_real_envoy(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    primary, light = upstream_factory("primary"), upstream_factory("light")
    source = bootstrap_with_readme_wiring(tmp_path / "readme-envoy.yaml")

    # modelguard down: every request fails open to the catch-all, whatever the client sent.
    down = envoy_factory(model_cluster_ports(free_port(), [primary.port], [light.port]), source=source)
    for _ in range(3):
        answer = infer(down.url + MODEL_PATH, headers=FORGED)
        assert answer.status == 200 and answer.json()["server"] == "primary", answer
    assert light.request_count == 0
    assert not [h for h in primary.last_headers if h.startswith("x-modelguard-")]

    # modelguard up: its decision routes the request and its tag reaches the client.
    modelguard = modelguard_factory(EXAMPLE_POLICY)
    up = envoy_factory(model_cluster_ports(modelguard.grpc_port, [primary.port], [light.port]), source=source)
    answer = infer(up.url + MODEL_PATH, headers=FORGED)
    assert answer.status == 200 and answer.json()["server"] == "primary"
    assert answer.headers.get("x-modelguard-tier") == "primary"
    assert primary.last_headers.get("x-modelguard-route") == "recommender-resnet50"
