"""`modelguard render envoy` in real Envoy: the bootstrap it prints validates as printed (a canary
route included), and, moved onto local ports, routes through modelguard like the reference."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from ext_proc import cli
from ext_proc.processes import ModelguardProcess, validate_envoy_config
from tests.e2e.e2e_harness import EXAMPLE_POLICY, MODEL_PATH, EnvoyFactory, Upstream, infer

pytestmark = pytest.mark.e2e

DEMO_POLICY = Path(cli.__file__).resolve().parent / "demo" / "policy.yaml"


def render(policy: Path, dest: Path) -> Path:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["render", "envoy", "--policy", str(policy)]) == 0
    dest.write_text(out.getvalue())
    return dest


@pytest.mark.parametrize("policy", [EXAMPLE_POLICY, DEMO_POLICY], ids=["example", "demo-with-canary"])
def test_the_rendered_bootstrap_validates_as_printed(policy: Path, envoy_bin: Path, tmp_path: Path) -> None:
    result = validate_envoy_config(render(policy, tmp_path / "envoy.yaml"), envoy=envoy_bin)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rendered_bootstrap_routes_through_modelguard(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    primary, light = upstream_factory("primary"), upstream_factory("light")
    modelguard = modelguard_factory(EXAMPLE_POLICY)
    ports = {
        "modelguard": [modelguard.grpc_port],
        "recommender-resnet50": [primary.port],
        "recommender-mobilenet": [light.port],
    }
    envoy = envoy_factory(ports, source=render(EXAMPLE_POLICY, tmp_path / "envoy.yaml"))
    answer = infer(envoy.url + MODEL_PATH, headers={"x-modelguard-route": "recommender-mobilenet"})
    assert answer.status == 200 and answer.json()["server"] == "primary"
    assert answer.headers.get("x-modelguard-tier") == "primary"
    assert infer(envoy.url + "/v2/models/other/infer").status == 404, "no model, no route"
    modelguard.stop()
    answer = infer(envoy.url + MODEL_PATH, headers={"x-modelguard-route": "recommender-mobilenet"})
    assert answer.status == 200 and answer.json()["server"] == "primary" and "x-modelguard-tier" not in answer.headers
    assert light.request_count == 0
