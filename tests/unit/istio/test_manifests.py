"""`kubectl kustomize` of istio/ and of every overlay: each object validates against its schema, and
modelguard's own objects hold what an SRE expects of them (replicas, probes, limits, non-root,
read-only root, the state directory on a volume, a port only the right proxies reach)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ext_proc.cli import _parser
from ext_proc.policy import load_policy
from tests.unit.istio.schemas import kustomize, schema_problems

ISTIO = Path(__file__).resolve().parents[3] / "istio"
# Every kustomization that builds on its own (a Component builds only inside an overlay).
FOLDERS = sorted(p.parent for p in ISTIO.rglob("kustomization.yaml") if "kind: Component" not in p.read_text())
EXT_PROC_PORT = 50051


def built(folder: Path) -> list[dict[str, Any]]:
    return kustomize(folder)


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def test_every_kustomization_is_checked() -> None:
    names = {str(folder.relative_to(ISTIO)) for folder in FOLDERS}
    assert {
        ".",
        "base",
        "routing",
        "overlays/gateway",
        "overlays/one-namespace",
        "overlays/prometheus-operator",
    } <= names


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: str(p.relative_to(ISTIO)))
def test_every_object_validates_against_its_schema(folder: Path) -> None:
    objects = built(folder)
    assert objects
    problems = [problem for item in objects for problem in schema_problems(item)]
    assert problems == []


def test_the_schema_check_catches_mistakes() -> None:
    objects = built(ISTIO)
    rule = copy.deepcopy(one(objects, "DestinationRule"))
    rule["spec"]["trafficPolicy"]["outlierDetection"]["consecutive5xxError"] = 5
    assert schema_problems(rule) == [
        "DestinationRule: unknown field .spec.trafficPolicy.outlierDetection.consecutive5xxError"
    ]
    envoy_filter = copy.deepcopy(one(objects, "EnvoyFilter"))
    envoy_filter["spec"]["configPatches"][0]["applyTo"] = "HTTP_FILTERS"
    assert schema_problems(envoy_filter)
    deployment = copy.deepcopy(one(objects, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert schema_problems(deployment)
    deployment = copy.deepcopy(one(objects, "Deployment"))
    deployment["spec"]["replicas"] = "two"
    assert schema_problems(deployment)


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = one(objects, "Deployment", "modelguard")["spec"]["template"]["spec"]["containers"]
    return dict(found)


def serve_args(objects: list[dict[str, Any]]) -> Any:
    return _parser().parse_args(container(objects)["args"])


def mounted_at(objects: list[dict[str, Any]], path: str) -> dict[str, Any]:
    """The volume mounted at the folder holding `path`."""
    pod = one(objects, "Deployment", "modelguard")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in container(objects)["volumeMounts"]}
    folder = next(m for m in sorted(mounts, key=len, reverse=True) if path == m or path.startswith(m + "/"))
    return dict(next(v for v in pod["volumes"] if v["name"] == mounts[folder]))


def test_the_deployment_runs_modelguard_safely() -> None:
    objects = built(ISTIO)
    deployment = one(objects, "Deployment", "modelguard")
    pod = deployment["spec"]["template"]["spec"]
    main = container(objects)
    assert "replicas" not in deployment["spec"], "the autoscaler owns the count: an apply must not reset it"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for bound in ("requests", "limits"):
        assert set(main["resources"][bound]) == {"cpu", "memory"}
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}

    args = serve_args(objects)  # the serve command's own parser accepts the flags
    assert args.command == "serve"
    assert args.grpc_address == f"0.0.0.0:{ports['grpc']}"
    assert args.admin_address == f"0.0.0.0:{ports['admin']}"
    assert args.admin_grpc_address.startswith("127.0.0.1:"), "the operator API stays on loopback"
    assert "emptyDir" in mounted_at(objects, args.state_dir), "the state directory is a volume, not the read-only root"
    policy_volume = mounted_at(objects, args.policy)
    assert policy_volume["configMap"]["name"] == "modelguard-policy"


def test_the_policy_config_map_is_the_example_policy_and_valid(tmp_path: Path) -> None:
    objects = built(ISTIO)
    config_map = one(objects, "ConfigMap", "modelguard-policy")
    example = (ISTIO.parent / "examples" / "policy.yaml").read_text()
    assert config_map["data"]["policy.yaml"] == example
    (tmp_path / "policy.yaml").write_text(config_map["data"]["policy.yaml"])
    assert load_policy(tmp_path / "policy.yaml").models


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_service_pdb_and_autoscaler_point_at_the_deployment() -> None:
    objects = built(ISTIO)
    deployment = one(objects, "Deployment", "modelguard")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one(objects, "Service", "modelguard")
    assert selects(service["spec"]["selector"], labels)
    names = {p["name"] for p in container(objects)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= names
    ext_proc = next(p for p in service["spec"]["ports"] if p["port"] == EXT_PROC_PORT)
    assert ext_proc["appProtocol"] == "grpc", "Istio must speak HTTP/2 to the ext_proc port"
    assert selects(one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    autoscaler = one(objects, "HorizontalPodAutoscaler")
    assert autoscaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "modelguard"}
    assert autoscaler["spec"]["minReplicas"] >= 2, "never one pod: a restart would leave the mesh unprotected"
    (metric,) = autoscaler["spec"]["metrics"]
    assert metric["containerResource"]["container"] == container(objects)["name"], "modelguard's CPU, not the sidecar's"


@pytest.mark.parametrize(
    "folder", [ISTIO, ISTIO / "overlays" / "gateway", ISTIO / "overlays" / "one-namespace"], ids=str
)
def test_the_filters_call_the_service_that_exists(folder: Path) -> None:
    objects = built(folder)
    service = one(objects, "Service", "modelguard")
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    filters = [o for o in objects if o["kind"] == "EnvoyFilter"]
    assert filters
    for envoy_filter in filters:
        patches = [p for p in envoy_filter["spec"]["configPatches"] if p["applyTo"] == "HTTP_FILTER"]
        (ext_proc,) = [p["patch"]["value"] for p in patches if p["patch"]["operation"] == "INSERT_BEFORE"]
        cluster = ext_proc["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
        assert cluster == f"outbound|{EXT_PROC_PORT}||{host}"
        assert ext_proc["typed_config"]["failure_mode_allow"] is True
        (router,) = [p["patch"]["value"] for p in patches if p["patch"]["operation"] == "MERGE"]
        (try_log,) = router["typed_config"]["upstream_log"]
        assert try_log["typed_config"]["common_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == cluster


def test_only_listed_identities_reach_the_ext_proc_port() -> None:
    objects = built(ISTIO)
    labels = one(objects, "Deployment", "modelguard")["spec"]["template"]["metadata"]["labels"]
    policy = one(objects, "AuthorizationPolicy", "modelguard")
    assert policy["spec"]["action"] == "ALLOW" and selects(policy["spec"]["selector"]["matchLabels"], labels)
    for rule in policy["spec"]["rules"]:
        ports = {port for to in rule["to"] for port in to["operation"]["ports"]}
        if str(EXT_PROC_PORT) in ports:
            assert ports == {str(EXT_PROC_PORT)}
            sources = [source["source"] for source in rule["from"]]
            assert sources and all(set(s) <= {"principals", "namespaces"} for s in sources)
            assert any("istio-ingressgateway" in p for s in sources for p in s.get("principals", []))
        else:
            assert [to["operation"].get("methods") for to in rule["to"]] == [["GET"]], "the rest is read-only"
    peer = one(objects, "PeerAuthentication", "modelguard")
    assert peer["spec"]["mtls"]["mode"] == "STRICT", "an identity for every caller of the ext_proc port"


@pytest.mark.parametrize("folder", [ISTIO, ISTIO / "overlays" / "gateway"], ids=str)
def test_every_route_of_a_virtual_service_has_its_subset(folder: Path) -> None:
    objects = built(folder)
    subsets = {
        (rule["spec"]["host"], subset["name"])
        for rule in objects
        if rule["kind"] == "DestinationRule"
        for subset in rule["spec"]["subsets"]
    }
    services = [o for o in objects if o["kind"] == "VirtualService"]
    assert services
    for service in services:
        for http in service["spec"]["http"]:
            for target in http["route"]:
                destination = target["destination"]
                assert (destination["host"], destination["subset"]) in subsets


def test_the_monitoring_component_scrapes_once_and_ships_the_dashboard() -> None:
    objects = built(ISTIO / "overlays" / "prometheus-operator")
    service = one(objects, "Service", "modelguard")
    monitor = one(objects, "ServiceMonitor", "modelguard")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http-admin"] and "http-admin" in ports
    annotations = one(objects, "Deployment", "modelguard")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "false", "scraped by the ServiceMonitor only, not twice"
    assert (
        built(ISTIO) != objects
        and one(built(ISTIO), "Deployment")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"]
        == "true"
    )
    dashboard = one(objects, "ConfigMap", "modelguard-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["modelguard.json"] == (ISTIO / "monitoring" / "dashboard.json").read_text()
    assert one(objects, "PrometheusRule", "modelguard")["spec"]["groups"]
