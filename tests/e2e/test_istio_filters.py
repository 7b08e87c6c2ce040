"""The rendered EnvoyFilters in real Envoy, applied to an Istio-shaped sidecar and gateway config
the way istiod applies them (tests/e2e/istio_mesh.py): they validate, and they carry traffic
through modelguard: tags on the response, client headers stripped, other services untouched,
the breaker's step down the ladder, and fail-open when modelguard is gone."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ext_proc import cli
from ext_proc.processes import ModelguardProcess, validate_envoy_config, wait_for
from tests.e2e.e2e_harness import EXAMPLE_POLICY, MODEL_PATH, EnvoyFactory, Upstream, infer
from tests.e2e.istio_mesh import GATEWAY, MODELGUARD_CLUSTER, SIDECAR, Mesh, mesh_bootstrap, subset_cluster

pytestmark = pytest.mark.e2e

HOST = "recommender.models.svc.cluster.local"
OTHER = "other.models.svc.cluster.local"
GATEWAY_HOST = "inference.example.com"
GATEWAY_NAME = "istio-system/inference-gateway"
FORGED = {"x-modelguard-route": "recommender-mobilenet", "x-modelguard-tier": "light"}


def rendered_from(policy: Path, *flags: str) -> list[dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["render", "istio", "--policy", str(policy), *flags]) == 0
    return [d for d in yaml.safe_load_all(out.getvalue()) if d]


OBJECTS = rendered_from(EXAMPLE_POLICY, "--gateway", GATEWAY_NAME)
SIDECAR_MESH = Mesh(SIDECAR, 8080)
GATEWAY_MESH = Mesh(GATEWAY, 80, GATEWAY_NAME)


def write(bootstrap: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
    return path


@pytest.mark.parametrize("mesh", [SIDECAR_MESH, GATEWAY_MESH], ids=["sidecar", "gateway"])
def test_every_envoy_filter_fragment_validates_where_istio_puts_it(mesh: Mesh, envoy_bin: Path, tmp_path: Path) -> None:
    bootstrap = mesh_bootstrap(OBJECTS, mesh, extra_hosts=[OTHER] if mesh.context == SIDECAR else [])
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    result = validate_envoy_config(write(bootstrap, tmp_path / "mesh.yaml"), envoy=envoy_bin)
    assert result.returncode == 0, result.stdout + result.stderr


def ask(envoy_url: str, host: str, path: str = MODEL_PATH, headers: dict[str, str] | None = None) -> Any:
    return infer(envoy_url + path, headers={"host": host, **(headers or {})})


def test_sidecar_filters_carry_traffic_through_modelguard(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    primary, light, other = upstream_factory("primary"), upstream_factory("light"), upstream_factory("other")
    modelguard = modelguard_factory(EXAMPLE_POLICY)
    ports = {
        MODELGUARD_CLUSTER: [modelguard.grpc_port],
        subset_cluster(8080, "recommender-resnet50", HOST): [primary.port],
        subset_cluster(8080, "recommender-mobilenet", HOST): [light.port],
        subset_cluster(8080, "", OTHER): [other.port],
    }
    source = write(mesh_bootstrap(OBJECTS, SIDECAR_MESH, extra_hosts=[OTHER]), tmp_path / "sidecar.yaml")
    envoy = envoy_factory(ports, source=source)

    # A model service: modelguard decides, its tags reach the client, forged headers are gone.
    answer = ask(envoy.url, HOST, headers=FORGED)
    assert answer.status == 200 and answer.json()["server"] == "primary", answer
    assert answer.headers.get("x-modelguard-tier") == "primary"
    assert primary.last_headers.get("x-modelguard-route") == "recommender-resnet50"
    assert light.request_count == 0

    # Any other service of the same client: no ext_proc stream at all (the filter is off there);
    # client x-modelguard-* headers are stripped there too (harmless, and one rule everywhere).
    before = envoy.stats("ext_proc").get("http.outbound_0.0.0.0_8080.ext_proc.modelguard.streams_started", 0)
    answer = ask(envoy.url, OTHER, headers=FORGED)
    assert answer.status == 200 and answer.json()["server"] == "other"
    assert "x-modelguard-tier" not in answer.headers
    assert not [h for h in other.last_headers if h.startswith("x-modelguard-")], "stripped on every service"
    after = envoy.stats("ext_proc").get("http.outbound_0.0.0.0_8080.ext_proc.modelguard.streams_started", 0)
    assert after == before > 0

    # The model fails: the breaker opens and the VirtualService's light subset serves.
    primary.set_fault(True)
    for _ in range(12):
        ask(envoy.url, HOST)
    assert wait_for(lambda: modelguard.tier_state("recommender", "primary") == "open", 5.0), "primary breaker open"
    answer = ask(envoy.url, HOST)
    assert answer.status == 200 and answer.json()["server"] == "light", answer
    assert answer.headers.get("x-modelguard-tier") == "light"
    assert answer.headers.get("x-modelguard-degraded") == "true"

    # modelguard gone: fail-open to the primary subset, untagged, forged headers still stripped.
    primary.set_fault(False)
    modelguard.stop()
    answer = ask(envoy.url, HOST, headers=FORGED)
    assert answer.status == 200 and answer.json()["server"] == "primary", answer
    assert "x-modelguard-tier" not in answer.headers
    assert not [h for h in primary.last_headers if h.startswith("x-modelguard-")]


def test_gateway_filters_carry_traffic_through_modelguard(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    primary, light = upstream_factory("primary"), upstream_factory("light")
    modelguard = modelguard_factory(EXAMPLE_POLICY)
    ports = {
        MODELGUARD_CLUSTER: [modelguard.grpc_port],
        subset_cluster(8080, "recommender-resnet50", HOST): [primary.port],
        subset_cluster(8080, "recommender-mobilenet", HOST): [light.port],
    }
    envoy = envoy_factory(ports, source=write(mesh_bootstrap(OBJECTS, GATEWAY_MESH), tmp_path / "gateway.yaml"))
    answer = ask(envoy.url, GATEWAY_HOST, headers=FORGED)
    assert answer.status == 200 and answer.json()["server"] == "primary", answer
    assert answer.headers.get("x-modelguard-tier") == "primary"
    # A path of no model has no route at this gateway's host: nothing reaches a model server.
    assert ask(envoy.url, GATEWAY_HOST, path="/v2/models/other/infer").status == 404
    assert light.request_count == 0

    modelguard.stop()
    answer = ask(envoy.url, GATEWAY_HOST, headers=FORGED)
    assert answer.status == 200 and answer.json()["server"] == "primary"
    assert "x-modelguard-tier" not in answer.headers


TWO_MODELS = """
models:
  - name: rec
    match: {path_prefix: /v2/models/rec}
    tiers:
      - {name: primary, route: rec-v1}
      - {name: light, route: rec-small}
    breaker: {consecutive_failures: 3}
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: recommender-large}
      - {name: light, route: recommender-small}
    breaker: {consecutive_failures: 3}
  - name: generic
    match: {path_prefix: /v2}
    tiers:
      - {name: primary, route: generic-v1}
"""
REC_HOST = "rec.models.svc.cluster.local"
RECOMMENDER_HOST = "recommender.models.svc.cluster.local"
GENERIC_HOST = "generic.models.svc.cluster.local"


def two_models(
    tmp_path: Path, upstream_factory: Callable[[str], Upstream], modelguard_factory: Callable[[Path], ModelguardProcess]
) -> tuple[Path, ModelguardProcess, dict[str, Upstream], dict[str, list[int]]]:
    policy = tmp_path / "two-models.yaml"
    policy.write_text(TWO_MODELS)
    hosts = {
        "rec-v1": REC_HOST,
        "rec-small": REC_HOST,
        "recommender-large": RECOMMENDER_HOST,
        "recommender-small": RECOMMENDER_HOST,
        "generic-v1": GENERIC_HOST,
    }
    servers = {route: upstream_factory(route) for route in hosts}
    modelguard = modelguard_factory(policy)
    ports = {MODELGUARD_CLUSTER: [modelguard.grpc_port]}
    for route, server in servers.items():
        ports[subset_cluster(8080, route, hosts[route])] = [server.port]
    return policy, modelguard, servers, ports


def test_a_models_service_is_judged_for_that_model_only(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    """Another model's path sent to a failing model's Service is not the other model's failure
    (the sidecar filter scopes each virtual host's streams to its model)."""
    policy, modelguard, servers, ports = two_models(tmp_path, upstream_factory, modelguard_factory)
    objects = rendered_from(policy)
    envoy = envoy_factory(ports, source=write(mesh_bootstrap(objects, SIDECAR_MESH), tmp_path / "sidecar.yaml"))
    servers["rec-v1"].set_fault(True)
    for _ in range(8):  # the recommender's path, sent to the failing rec's Service: untagged, and
        # the fail-open route's last retry goes to rec's next tier
        answer = ask(envoy.url, REC_HOST, path="/v2/models/recommender/infer")
        assert answer.json()["server"] == "rec-small" and "x-modelguard-tier" not in answer.headers, answer
    assert modelguard.tier_state("recommender", "primary") == "closed", "charged to a model that did not fail"
    answer = ask(envoy.url, RECOMMENDER_HOST, path="/v2/models/recommender/infer")
    assert answer.json()["server"] == "recommender-large" and answer.headers.get("x-modelguard-tier") == "primary"
    for _ in range(4):  # rec's own calls on its Service: rec's breaker, as always
        ask(envoy.url, REC_HOST, path="/v2/models/rec/infer")
    assert wait_for(lambda: modelguard.tier_state("rec", "primary") == "open", 5.0), "rec's breaker opens"
    assert ask(envoy.url, REC_HOST, path="/v2/models/rec/infer").json()["server"] == "rec-small"


def test_a_gateway_sends_each_model_to_its_own_service_up_or_down(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    """/v2/models/rec is a string prefix of /v2/models/recommender: neither the tagged routes nor the
    fail-open ones may send one model's requests to the other."""
    policy, modelguard, servers, ports = two_models(tmp_path, upstream_factory, modelguard_factory)
    objects = rendered_from(policy, "--gateway", GATEWAY_NAME)
    envoy = envoy_factory(ports, source=write(mesh_bootstrap(objects, GATEWAY_MESH), tmp_path / "gateway.yaml"))
    # A spelling Envoy routes to another model than modelguard's normalization would pick (rec): the
    # route's scope makes modelguard judge it for the model whose Service serves it.
    answer = ask(envoy.url, GATEWAY_HOST, path="/v2//models/rec/infer")
    assert answer.json()["server"] == "generic-v1" and answer.headers.get("x-modelguard-tier") == "primary"
    assert servers["generic-v1"].last_headers.get("x-modelguard-route") == "generic-v1"
    for up in (True, False):
        if not up:
            modelguard.stop()
        for path, server in [
            ("/v2/models/recommender/infer", "recommender-large"),
            ("/v2/models/rec/infer", "rec-v1"),
            ("/v2/models/rec:predict", "rec-v1"),
        ]:
            answer = ask(envoy.url, GATEWAY_HOST, path=path)
            assert answer.status == 200 and answer.json()["server"] == server, (up, path, answer)
            assert ("x-modelguard-tier" in answer.headers) is up
        answer = ask(envoy.url, GATEWAY_HOST, path="/v2/models/recx/infer")
        assert answer.json()["server"] == "generic-v1", "neither rec's nor the recommender's"


def test_another_teams_routes_at_the_gateway_host_never_reach_modelguard(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    """A catch-all of another team on the gateway's host (Istio merges it into the same virtual host,
    after modelguard's routes): a path only modelguard's normalization reads as rec's must not charge
    that team's 503s to rec's breaker."""
    policy, modelguard, servers, ports = two_models(tmp_path, upstream_factory, modelguard_factory)
    foreign = upstream_factory("foreign")
    foreign.set_fault(True)
    team_host = "shop.team.svc.cluster.local"
    other_team = {
        "kind": "VirtualService",
        "metadata": {"name": "shop", "namespace": "team"},
        "spec": {
            "hosts": [GATEWAY_HOST],
            "gateways": [GATEWAY_NAME],
            "http": [{"name": "shop", "route": [{"destination": {"host": team_host, "port": {"number": 8080}}}]}],
        },
    }
    objects = [*rendered_from(policy, "--gateway", GATEWAY_NAME), other_team]
    ports[subset_cluster(8080, "", team_host)] = [foreign.port]
    envoy = envoy_factory(ports, source=write(mesh_bootstrap(objects, GATEWAY_MESH), tmp_path / "gateway.yaml"))
    for _ in range(6):
        answer = ask(envoy.url, GATEWAY_HOST, path="//v2/models/rec/infer")
        assert answer.status == 503 and answer.json()["server"] == "foreign", answer
        assert "x-modelguard-tier" not in answer.headers, "the other team's route reached modelguard"
    assert modelguard.tier_state("rec", "primary") == "closed"
    answer = ask(envoy.url, GATEWAY_HOST, path="/v2/models/rec/infer")
    assert answer.json()["server"] == "rec-v1" and answer.headers.get("x-modelguard-tier") == "primary"
    assert servers["rec-v1"].request_count == 1


def test_a_sidecar_retries_a_failing_primary_on_the_light_subset_and_logs_its_failed_tries(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    """Every primary call fails: Envoy retries each on the primary, then on the light subset (the
    added aggregate cluster), so clients see light's answers from the first call; the failed tries
    reach modelguard through the router's log and open the primary. The ext_proc streams declare
    the log (the filter's initial metadata, beside the route's model scope), so light's answers
    after failed primary tries are light's, never a success of the primary."""
    primary, light = upstream_factory("primary"), upstream_factory("light")
    primary.set_fault(True)
    modelguard = modelguard_factory(EXAMPLE_POLICY)
    ports = {
        MODELGUARD_CLUSTER: [modelguard.grpc_port],
        subset_cluster(8080, "recommender-resnet50", HOST): [primary.port],
        subset_cluster(8080, "recommender-mobilenet", HOST): [light.port],
    }
    envoy = envoy_factory(ports, source=write(mesh_bootstrap(OBJECTS, SIDECAR_MESH), tmp_path / "sidecar.yaml"))
    answers = [ask(envoy.url, HOST)]
    assert (primary.request_count, light.request_count) == (2, 1), "primary, primary again, then light"
    for _ in range(8):
        answers.append(ask(envoy.url, HOST))
        if modelguard.tier_state("recommender", "primary") == "open":
            break
        time.sleep(0.03)  # the log's batches are sent every 20 ms
    assert all(a.status == 200 and a.json()["server"] == "light" for a in answers), answers
    assert answers[0].headers.get("x-modelguard-tier") == "primary", "the first call was the primary's"
    assert wait_for(lambda: modelguard.tier_state("recommender", "primary") == "open", 3.0), modelguard.state()
    answer = ask(envoy.url, HOST)
    assert answer.json()["server"] == "light" and answer.headers.get("x-modelguard-degraded") == "true"
    assert light.request_count == len(answers) + 1
    tiers = modelguard.state()["models"]["recommender"]["tiers"]
    assert set(tiers["primary"]["hosts"]) == {f"127.0.0.1:{primary.port}"}, tiers["primary"]
    assert tiers["light"]["failures"] == 0 and tiers["light"]["calls"] >= 1, tiers["light"]
