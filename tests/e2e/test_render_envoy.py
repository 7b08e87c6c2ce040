"""`modelguard render envoy` in real Envoy: the bootstrap it prints validates as printed (a canary
route and a tier's path rewrite included), and, moved onto local ports, routes through modelguard
like the reference, rewriting the path for a tier that serves the model under another name."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ext_proc import cli
from ext_proc.processes import HttpResult, ModelguardProcess, validate_envoy_config, wait_for
from ext_proc.render.plan import MAX_REWRITTEN_PREFIX
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


def _example_stack(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> tuple[Upstream, Upstream, ModelguardProcess, str]:
    """Envoy on the config rendered from the example policy, its primary and light upstreams and
    modelguard: the upstreams, modelguard and the Envoy URL."""
    primary, light = upstream_factory("primary"), upstream_factory("light")
    modelguard = modelguard_factory(EXAMPLE_POLICY)
    ports = {
        "modelguard": [modelguard.grpc_port],
        "recommender-resnet50": [primary.port],
        "recommender-mobilenet": [light.port],
    }
    envoy = envoy_factory(ports, source=render(EXAMPLE_POLICY, tmp_path / "envoy.yaml"))
    return primary, light, modelguard, envoy.url


def test_the_rendered_bootstrap_routes_through_modelguard(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    _, light, modelguard, url = _example_stack(tmp_path, upstream_factory, modelguard_factory, envoy_factory)
    answer = infer(url + MODEL_PATH, headers={"x-modelguard-route": "recommender-mobilenet"})
    assert answer.status == 200 and answer.json()["server"] == "primary"
    assert answer.headers.get("x-modelguard-tier") == "primary"
    assert infer(url + "/v2/models/other/infer").status == 404, "no model, no route"
    modelguard.stop()
    answer = infer(url + MODEL_PATH, headers={"x-modelguard-route": "recommender-mobilenet"})
    assert answer.status == 200 and answer.json()["server"] == "primary" and "x-modelguard-tier" not in answer.headers
    assert light.request_count == 0


def test_the_rendered_bootstrap_retries_a_failing_primary_on_the_light_tier_and_logs_the_tries(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    """The whole primary fails: each call's two primary tries fail and the light tier answers it (the
    rendered aggregate cluster), while the logged tries open the primary's breaker."""
    primary, _, modelguard, url = _example_stack(tmp_path, upstream_factory, modelguard_factory, envoy_factory)
    primary.set_fault(True)
    for _ in range(8):
        answer = infer(url + MODEL_PATH)
        assert answer.status == 200 and answer.json()["server"] == "light", answer
        if modelguard.tier_state("recommender", "primary") == "open":
            break
        time.sleep(0.03)  # the log's batches are sent every 20 ms
    assert wait_for(lambda: modelguard.tier_state("recommender", "primary") == "open", 3.0), modelguard.state()
    assert primary.request_count % 2 == 0 < primary.request_count, "two tries on the primary per call"
    answer = infer(url + MODEL_PATH)
    assert answer.json()["server"] == "light" and answer.headers.get("x-modelguard-degraded") == "true"


# A light tier whose servers know the model by another name (README, "Policy file": a tier's model:).
RENAMED_LIGHT = """\
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: recommender-resnet50}
      - {name: light, route: recommender-light, model: recommender-light}
      - {name: default, respond: {status: 503}}
    breaker: {consecutive_failures: 3, min_calls: 5, open_duration: 60s, min_failing_hosts: 1}
"""
LIGHT_PATH = "/v2/models/recommender-light/infer"


def test_a_rendered_rewrite_validates_up_to_the_longest_prefix(envoy_bin: Path, tmp_path: Path) -> None:
    longest = "/v2/models/" + "r" * (MAX_REWRITTEN_PREFIX - len("/v2/models/"))
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        RENAMED_LIGHT.replace("/v2/models/recommender", longest).replace(
            "route: recommender-resnet50}", "route: recommender-resnet50, model: big}"
        )
    )
    result = validate_envoy_config(render(policy, tmp_path / "envoy.yaml"), envoy=envoy_bin)
    assert result.returncode == 0, result.stdout + result.stderr


def _renamed_light_stack(
    policy_text: str,
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> tuple[str, Upstream, Upstream]:
    """Envoy on the rendered config, a failing primary and a light server that serves only
    LIGHT_PATH: the Envoy URL, the primary and the light upstream (stopped by the caller)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text)
    primary, light = upstream_factory("primary"), Upstream("light", serves=LIGHT_PATH).start()
    primary.set_fault(True)
    modelguard = modelguard_factory(policy)
    ports = {
        "modelguard": [modelguard.grpc_port],
        "recommender-resnet50": [primary.port],
        "recommender-light": [light.port],
    }
    envoy = envoy_factory(ports, source=render(policy, tmp_path / "envoy.yaml"))
    return envoy.url, primary, light


def test_a_light_tier_serving_another_name_gets_the_rewritten_path(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    url, primary, light = _renamed_light_stack(
        RENAMED_LIGHT, tmp_path, upstream_factory, modelguard_factory, envoy_factory
    )
    try:
        original = "/v2/models/recommender/versions/2/infer?trace=1"

        def served_by_light() -> HttpResult | None:
            answer = infer(url + original)
            return answer if answer.headers.get("x-modelguard-tier") == "light" else None

        answer = wait_for(served_by_light, timeout=10, interval=0.02)
        assert answer is not None, f"the primary's breaker never opened ({primary.count(503)} failures)"
        assert answer.status == 200 and answer.json() == {"server": "light", "path": LIGHT_PATH + "?trace=1"}
        assert light.last_headers.get("x-envoy-original-path") == original
        assert infer(url + "/v2/models/recommender/infer").json()["path"] == LIGHT_PATH
        assert light.count(404) == 0
    finally:
        light.stop()


def test_without_the_rewrite_the_light_tiers_404s_open_its_breaker(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    """404 counts as a failure whatever failure.statuses says (the default, 5xx, here): a tier that
    does not serve the model is taken off the ladder instead of answering every call with 404."""
    url, _, light = _renamed_light_stack(
        RENAMED_LIGHT.replace(", model: recommender-light", ""),
        tmp_path,
        upstream_factory,
        modelguard_factory,
        envoy_factory,
    )
    try:

        def refused_by_default() -> HttpResult | None:
            answer = infer(url + MODEL_PATH)
            return answer if answer.headers.get("x-modelguard-tier") == "default" else None

        answer = wait_for(refused_by_default, timeout=10, interval=0.02)
        assert answer is not None and answer.status == 503, f"light answered 404 {light.count(404)} times"
        assert light.count(404) >= 3
        before = light.request_count
        assert all(infer(url + MODEL_PATH).headers.get("x-modelguard-tier") == "default" for _ in range(5))
        assert light.request_count == before, "the light tier's breaker is open"
    finally:
        light.stop()
