"""Istio-shaped Envoy bootstraps for the tests: what istiod sends a sidecar or a gateway for the
rendered VirtualServices and DestinationRules, then the rendered EnvoyFilter's patches applied the
way istiod applies them.

The shape follows Istio's conventions: an outbound HTTP listener whose connection manager routes
through a route configuration with one virtual host per service named ``HOST:PORT`` (a gateway:
per Gateway host, ``HOST:PORT`` too), clusters named ``outbound|PORT|SUBSET|HOST``, the
VirtualService's routes with Istio's retry host predicate. Patches: ``MERGE`` is a protobuf merge
(maps merged, lists appended, scalars replaced), ``INSERT_BEFORE`` goes before the named filter,
``VIRTUAL_HOST`` matches by name, ``HTTP_ROUTE`` by virtual host and route name (Istio names a
route after the VirtualService's HTTP route, one Envoy route per match condition). A patch that
matches nothing fails the test: it would do nothing in a mesh either."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MODELGUARD_CLUSTER", "Mesh", "apply_patches", "mesh_bootstrap", "subset_cluster"]

SIDECAR, GATEWAY = "SIDECAR_OUTBOUND", "GATEWAY"
MODELGUARD_CLUSTER = "outbound|50051||modelguard.modelguard.svc.cluster.local"
HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
PREVIOUS_HOSTS = {
    "name": "envoy.retry_host_predicates.previous_hosts",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
    },
}
H2 = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}


@dataclass(frozen=True)
class Mesh:
    """Which proxy to build: a protected client's sidecar, or the ingress gateway."""

    context: str
    port: int  # the service port (sidecar) or the Gateway server's port
    gateway: str | None = None  # NAMESPACE/NAME, for GATEWAY

    def binds(self, service: Mapping[str, Any]) -> bool:
        gateways = service["spec"].get("gateways", ["mesh"])
        return (self.gateway in gateways) if self.context == GATEWAY else ("mesh" in gateways)


def subset_cluster(port: int, subset: str, host: str) -> str:
    return f"outbound|{port}|{subset}|{host}"


def mesh_bootstrap(objects: Sequence[Mapping[str, Any]], mesh: Mesh, extra_hosts: Sequence[str] = ()) -> dict[str, Any]:
    """The bootstrap for `mesh` from rendered objects; `extra_hosts` are services with no
    VirtualService (plain routing to `outbound|PORT||HOST`), which modelguard must leave alone."""
    rules = {o["spec"]["host"]: o for o in objects if o["kind"] == "DestinationRule"}
    services = [o for o in objects if o["kind"] == "VirtualService" and mesh.binds(o)]
    by_host: dict[str, list[dict[str, Any]]] = {}
    for service in services:  # istiod joins the routes of one host's VirtualServices, oldest first
        for host in service["spec"]["hosts"]:
            by_host.setdefault(host, []).extend(_routes(service))
    vhosts = [_vhost(host, mesh.port, routes) for host, routes in by_host.items()]
    vhosts += [_vhost(host, mesh.port, [_plain_route(host, mesh.port)]) for host in extra_hosts]
    clusters = [_modelguard_cluster()]
    for service in services:
        for route in service["spec"]["http"]:
            for target in route["route"]:
                destination = target["destination"]
                subset = destination.get("subset", "")
                name = subset_cluster(destination["port"]["number"], subset, destination["host"])
                if name not in {c["name"] for c in clusters}:
                    clusters.append(_cluster(name, rules.get(destination["host"]) if subset else None, subset))
    clusters += [_cluster(subset_cluster(mesh.port, "", host), None, "") for host in extra_hosts]
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": f"outbound_0.0.0.0_{mesh.port}",
        "normalize_path": True,  # Istio's default path normalization, BASE: no slash merging
        "route_config": {"name": str(mesh.port), "virtual_hosts": vhosts},
        "http_filters": [copy.deepcopy(ROUTER)],
    }
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}},
        "static_resources": {
            "listeners": [
                {
                    "name": f"0.0.0.0_{mesh.port}",
                    "address": {"socket_address": {"address": "0.0.0.0", "port_value": mesh.port}},
                    "filter_chains": [{"filters": [{"name": HCM, "typed_config": hcm}]}],
                }
            ],
            "clusters": clusters,
        },
    }
    filters = [o for o in objects if o["kind"] == "EnvoyFilter"]
    patches = [p for f in filters for p in f["spec"]["configPatches"] if p["match"]["context"] == mesh.context]
    assert patches, f"no EnvoyFilter patch for {mesh.context}"
    apply_patches(bootstrap, patches)
    return bootstrap


def _vhost(host: str, port: int, routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": f"{host}:{port}", "domains": [host, f"{host}:{port}"], "routes": routes}


def _routes(service: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One Envoy route per match condition of each HTTP route (conditions are ORed), named after it."""
    return [_route(http, match) for http in service["spec"]["http"] for match in http.get("match", [{}])]


def _route(http: Mapping[str, Any], match: Mapping[str, Any]) -> dict[str, Any]:
    uri = match.get("uri", {"prefix": "/"})
    (kind,) = uri
    envoy_match: dict[str, Any] = {{"exact": "path", "prefix": "prefix"}[kind]: uri[kind]}
    headers = [
        {"name": name, "string_match": {"exact": rule["exact"]}} for name, rule in match.get("headers", {}).items()
    ]
    if "authority" in match:
        headers.append({"name": ":authority", "string_match": {"exact": match["authority"]["exact"]}})
    if headers:
        envoy_match["headers"] = headers
    (target,) = http["route"]
    destination = target["destination"]
    action: dict[str, Any] = {
        "cluster": subset_cluster(destination["port"]["number"], destination.get("subset", ""), destination["host"])
    }
    if "timeout" in http:
        action["timeout"] = http["timeout"]
    if "retries" in http:
        retries = http["retries"]
        action["retry_policy"] = {
            "retry_on": retries["retryOn"],
            "num_retries": retries["attempts"],
            "per_try_timeout": retries["perTryTimeout"],
            "retry_host_predicate": [copy.deepcopy(PREVIOUS_HOSTS)],
            "host_selection_retry_max_attempts": 5,
        }
    return {"name": http.get("name", "default"), "match": envoy_match, "route": action}


def _plain_route(host: str, port: int) -> dict[str, Any]:
    return {"name": "default", "match": {"prefix": "/"}, "route": {"cluster": subset_cluster(port, "", host)}}


def _cluster(name: str, rule: Mapping[str, Any] | None, subset: str) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [_endpoint(8080)]}]},
    }
    if rule is not None:
        policy = rule["spec"]["trafficPolicy"]
        for each in rule["spec"]["subsets"]:
            if each["name"] == subset:
                policy = {**policy, **each.get("trafficPolicy", {})}
        cluster["connect_timeout"] = policy["connectionPool"]["tcp"]["connectTimeout"]
        cluster["circuit_breakers"] = {"thresholds": [{"max_retries": policy["connectionPool"]["http"]["maxRetries"]}]}
        detector = policy["outlierDetection"]
        cluster["outlier_detection"] = {
            "consecutive_5xx": detector["consecutive5xxErrors"],
            "consecutive_gateway_failure": detector["consecutiveGatewayErrors"],
            "enforcing_consecutive_gateway_failure": 100,
            "interval": detector["interval"],
            "base_ejection_time": detector["baseEjectionTime"],
            "max_ejection_percent": detector["maxEjectionPercent"],
        }
    return cluster


def _modelguard_cluster() -> dict[str, Any]:
    return {
        "name": MODELGUARD_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": copy.deepcopy(H2),
        "load_assignment": {"cluster_name": MODELGUARD_CLUSTER, "endpoints": [{"lb_endpoints": [_endpoint(50051)]}]},
    }


def _endpoint(port: int) -> dict[str, Any]:
    return {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}


# --------------------------------------------------------------------------- patches


def apply_patches(bootstrap: dict[str, Any], patches: Sequence[Mapping[str, Any]]) -> None:
    for patch in patches:
        applied = _APPLY[patch["applyTo"]](bootstrap, patch["match"], patch["patch"])
        assert applied, f"EnvoyFilter patch matched nothing in the {patch['match']['context']} config: {patch}"


def _hcms(bootstrap: dict[str, Any], match: Mapping[str, Any]) -> list[dict[str, Any]]:
    wanted = match["listener"]["filterChain"]["filter"]["name"]
    found = []
    for listener in bootstrap["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            found += [f for f in chain["filters"] if f["name"] == wanted]
    return found


def _network_filter(bootstrap: dict[str, Any], match: Mapping[str, Any], patch: Mapping[str, Any]) -> int:
    assert patch["operation"] == "MERGE"
    hcms = _hcms(bootstrap, match)
    for hcm in hcms:
        assert patch["value"]["typed_config"]["@type"] == hcm["typed_config"]["@type"], "MERGE needs the same @type"
        proto_merge(hcm, patch["value"])
    return len(hcms)


def _http_filter(bootstrap: dict[str, Any], match: Mapping[str, Any], patch: Mapping[str, Any]) -> int:
    assert patch["operation"] in ("INSERT_BEFORE", "MERGE")
    named = match["listener"]["filterChain"]["filter"]["subFilter"]["name"]
    count = 0
    for hcm in _hcms(bootstrap, match):
        filters = hcm["typed_config"]["http_filters"]
        names = [f["name"] for f in filters]
        if named not in names:
            continue
        if patch["operation"] == "MERGE":
            found = filters[names.index(named)]
            assert patch["value"]["typed_config"]["@type"] == found["typed_config"]["@type"], (
                "MERGE needs the same @type"
            )
            proto_merge(found, patch["value"])
        else:
            filters.insert(names.index(named), copy.deepcopy(dict(patch["value"])))
        count += 1
    return count


def _added_cluster(bootstrap: dict[str, Any], match: Mapping[str, Any], patch: Mapping[str, Any]) -> int:
    assert patch["operation"] == "ADD" and set(match) == {"context"}, "clusters are only added"
    clusters = bootstrap["static_resources"]["clusters"]
    assert patch["value"]["name"] not in {c["name"] for c in clusters}, (
        "Istio would keep one of two same-named clusters"
    )
    clusters.append(copy.deepcopy(dict(patch["value"])))
    return 1


def _virtual_host(bootstrap: dict[str, Any], match: Mapping[str, Any], patch: Mapping[str, Any]) -> int:
    assert patch["operation"] == "MERGE"
    name = match["routeConfiguration"]["vhost"]["name"]
    count = 0
    for hcm in _hcms(bootstrap, {"listener": {"filterChain": {"filter": {"name": HCM}}}}):
        for vhost in hcm["typed_config"]["route_config"]["virtual_hosts"]:
            if vhost["name"] == name:
                proto_merge(vhost, patch["value"])
                count += 1
    return count


def _http_route(bootstrap: dict[str, Any], match: Mapping[str, Any], patch: Mapping[str, Any]) -> int:
    assert patch["operation"] == "MERGE"
    wanted = match["routeConfiguration"]["vhost"]
    count = 0
    for hcm in _hcms(bootstrap, {"listener": {"filterChain": {"filter": {"name": HCM}}}}):
        for vhost in hcm["typed_config"]["route_config"]["virtual_hosts"]:
            if vhost["name"] == wanted["name"]:
                for route in vhost["routes"]:
                    if route["name"] == wanted["route"]["name"]:
                        proto_merge(route, patch["value"])
                        count += 1
    return count


_APPLY = {
    "CLUSTER": _added_cluster,
    "NETWORK_FILTER": _network_filter,
    "HTTP_FILTER": _http_filter,
    "VIRTUAL_HOST": _virtual_host,
    "HTTP_ROUTE": _http_route,
}


def proto_merge(into: dict[str, Any], value: Mapping[str, Any]) -> None:
    """protobuf MergeFrom on the JSON form: messages merged field by field, repeated fields
    appended, scalars replaced."""
    for key, item in value.items():
        if isinstance(item, Mapping) and isinstance(into.get(key), dict):
            proto_merge(into[key], item)
        elif isinstance(item, list) and isinstance(into.get(key), list):
            into[key].extend(copy.deepcopy(item))
        else:
            into[key] = copy.deepcopy(item)
