"""Istio manifests from the policy: per model a DestinationRule (a subset per route, outlier
detection and connection pool with the reference config's intent) and VirtualServices routing on
``x-modelguard-route``; EnvoyFilters that put modelguard's ext_proc filter in the protected
clients' sidecars and, optionally, in an ingress gateway.

The Envoy pieces come from the reference config (`reference.ReferenceParts`); Istio names its
outbound virtual hosts ``HOST:PORT`` and its clusters ``outbound|PORT|SUBSET|HOST``."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ext_proc.policy.model import Match, Policy
from ext_proc.render.plan import (
    CANARY_REPLICAS,
    REPLICAS,
    ModelRoutes,
    RenderError,
    Role,
    RouteUse,
    max_ejection_percent,
    plan,
)
from ext_proc.render.reference import HCM_FILTER, ROUTER_FILTER, ReferenceParts, reference_parts

__all__ = ["ROUTE_LABEL", "IstioOptions", "istio_objects"]

ROUTE_LABEL = "modelguard.io/route"  # on model-server pods: the policy route they serve
_PROTECTED_LABEL = "modelguard.io/protected"  # on client pods whose sidecars consult modelguard
_PART_OF = {"app.kubernetes.io/part-of": "modelguard"}
_ROUTE_HEADER = "x-modelguard-route"
# Turns the ext_proc filter, off by default, on for a virtual host: Envoy wants a per-route config
# inside, and an empty override changes nothing of the filter's own settings.
_ENABLE_EXT_PROC = {
    "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
    "config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
        "overrides": {},
    },
}


@dataclass(frozen=True, slots=True)
class IstioOptions:
    """Where things are in the cluster; every default is what `istio/` ships with."""

    namespace: str = "models"  # the model services' namespace (Service name = model name)
    port: int = 8080  # the model services' port
    replicas: int = REPLICAS  # hosts per tier route: how many outlier detection may eject
    canary_replicas: int = CANARY_REPLICAS
    modelguard_host: str = "modelguard.modelguard.svc.cluster.local"
    modelguard_port: int = 50051
    filter_namespace: str = "istio-system"  # the root namespace: the sidecar filter applies mesh-wide
    gateway: str | None = None  # NAMESPACE/NAME of an Istio Gateway: also route and protect there
    gateway_host: str = "inference.example.com"
    gateway_port: int = 80
    gateway_selector: tuple[tuple[str, str], ...] = (("istio", "ingressgateway"),)

    def host(self, model: str) -> str:
        return f"{model}.{self.namespace}.svc.cluster.local"


def istio_objects(policy: Policy, options: IstioOptions, parts: ReferenceParts | None = None) -> list[dict[str, Any]]:
    reference = parts if parts is not None else reference_parts()
    models = plan(policy, kubernetes_names=True)
    objects: list[dict[str, Any]] = []
    for model in models:
        objects.append(_destination_rule(model, options, reference))
        objects.append(_virtual_service(model, options, reference, gateway=False))
        if options.gateway is not None:
            objects.append(_virtual_service(model, options, reference, gateway=True))
    objects.append(_sidecar_filter(models, options, reference))
    if options.gateway is not None:
        objects.append(_gateway_filter(options, reference))
    _refuse_clashes(objects)
    return objects


def _refuse_clashes(objects: list[dict[str, Any]]) -> None:
    """Two objects of one name would overwrite each other on apply (a model "a-gateway" beside a
    model "a" at a gateway, say)."""
    seen: set[tuple[str, str, str]] = set()
    clashes: list[str] = []
    for item in objects:
        key = (item["kind"], item["metadata"]["namespace"], item["metadata"]["name"])
        if key in seen:
            clashes.append(f"models: two {key[0]}s would be named {key[2]!r} in namespace {key[1]!r}: rename a model")
        seen.add(key)
    if clashes:
        raise RenderError(clashes)


def _metadata(name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(_PART_OF)}


# --- DestinationRule ---------------------------------------------------------------------------


def _destination_rule(model: ModelRoutes, options: IstioOptions, reference: ReferenceParts) -> dict[str, Any]:
    replica = reference.replica_cluster()
    subsets: list[dict[str, Any]] = []
    for use in model.routes:
        subset: dict[str, Any] = {"name": use.route, "labels": {ROUTE_LABEL: use.route}}
        if use.role is Role.CANARY:
            subset["trafficPolicy"] = {"outlierDetection": _outlier(replica, options.canary_replicas)}
        subsets.append(subset)
    retry_budget = replica["circuit_breakers"]["thresholds"][0]["retry_budget"]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": _metadata(model.name, options.namespace),
        "spec": {
            "host": options.host(model.name),
            "trafficPolicy": {
                "connectionPool": {
                    "tcp": {"connectTimeout": replica["connect_timeout"]},
                    # Istio before 1.26 has no retry budget: a cap on concurrent retries per proxy.
                    "http": {"maxRetries": retry_budget["min_retry_concurrency"]},
                },
                "outlierDetection": _outlier(replica, options.replicas),
            },
            "subsets": subsets,
        },
    }


def _outlier(cluster: dict[str, Any], replicas: int) -> dict[str, Any]:
    """Envoy's detectors as Istio spells them. Istio turns Envoy's panic routing off by default
    (minHealthPercent 0), so ejecting every host would answer 503 with no healthy upstream."""
    detector = cluster["outlier_detection"]
    return {
        "consecutive5xxErrors": detector["consecutive_5xx"],
        "consecutiveGatewayErrors": detector["consecutive_gateway_failure"],
        "interval": detector["interval"],
        "baseEjectionTime": detector["base_ejection_time"],
        "maxEjectionPercent": max_ejection_percent(replicas),
    }


# --- VirtualService ----------------------------------------------------------------------------


def _virtual_service(
    model: ModelRoutes, options: IstioOptions, reference: ReferenceParts, *, gateway: bool
) -> dict[str, Any]:
    """Header routes first, then the fail-open default. At a gateway several models share a host,
    so each route also carries the model's own match."""
    scope = _model_match(model.match) if gateway else {}
    http = [
        {
            "name": use.route,
            "match": [{**scope, "headers": {**scope.get("headers", {}), _ROUTE_HEADER: {"exact": use.route}}}],
            **_destination(use, model, options, reference),
        }
        for use in model.routes
    ]
    default: dict[str, Any] = {"name": "fail-open", **_destination(model.fail_open, model, options, reference)}
    if scope:
        default["match"] = [scope]
    http.append(default)
    name, hosts, gateways = model.name, [options.host(model.name)], ["mesh"]
    if gateway:
        name, hosts, gateways = f"{model.name}-gateway", [options.gateway_host], [str(options.gateway)]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": _metadata(name, options.namespace),
        "spec": {"hosts": hosts, "gateways": gateways, "http": http},
    }


def _destination(use: RouteUse, model: ModelRoutes, options: IstioOptions, reference: ReferenceParts) -> dict[str, Any]:
    route = reference.canary_route() if use.role is Role.CANARY else reference.replica_route()
    retry = route["retry_policy"]
    return {
        "route": [
            {"destination": {"host": options.host(model.name), "port": {"number": options.port}, "subset": use.route}}
        ],
        "timeout": route["timeout"],
        "retries": {
            "attempts": retry["num_retries"],
            "perTryTimeout": retry["per_try_timeout"],
            "retryOn": retry["retry_on"],
        },
    }


def _model_match(match: Match) -> dict[str, Any]:
    if match.path_prefix is not None:
        return {"uri": {"prefix": match.path_prefix}}
    if match.authority is not None:
        return {"authority": {"exact": match.authority}}
    return {"headers": {str(match.header_name): {"exact": match.header_value}}}


# --- EnvoyFilter -------------------------------------------------------------------------------


def _filter_patches(
    context: str, vhosts: list[str], options: IstioOptions, reference: ReferenceParts
) -> list[dict[str, Any]]:
    """The same three patches for sidecars and gateways: strip client x-modelguard-* headers
    before routing (every HTTP connection manager), ext_proc before the router (off by
    default), and on the model hosts' virtual hosts: ext_proc on, the tags copied to responses."""
    hcm = {"filterChain": {"filter": {"name": HCM_FILTER}}}
    ext_proc = reference.ext_proc_filter()
    ext_proc["disabled"] = True
    cluster = f"outbound|{options.modelguard_port}||{options.modelguard_host}"
    ext_proc["typed_config"]["grpc_service"] = {"envoy_grpc": {"cluster_name": cluster}}
    hcm_type = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    patches: list[dict[str, Any]] = [
        {
            "applyTo": "NETWORK_FILTER",
            "match": {"context": context, "listener": hcm},
            "patch": {
                "operation": "MERGE",
                "value": {
                    "typed_config": {
                        "@type": hcm_type,
                        "early_header_mutation_extensions": reference.early_header_mutation(),
                    }
                },
            },
        },
        {
            "applyTo": "HTTP_FILTER",
            "match": {
                "context": context,
                "listener": {"filterChain": {"filter": {"name": HCM_FILTER, "subFilter": {"name": ROUTER_FILTER}}}},
            },
            "patch": {"operation": "INSERT_BEFORE", "value": ext_proc},
        },
    ]
    for vhost in vhosts:
        patches.append(
            {
                "applyTo": "VIRTUAL_HOST",
                "match": {"context": context, "routeConfiguration": {"vhost": {"name": vhost}}},
                "patch": {
                    "operation": "MERGE",
                    "value": {
                        "response_headers_to_add": reference.response_tags(),
                        "typed_per_filter_config": {ext_proc["name"]: copy.deepcopy(_ENABLE_EXT_PROC)},
                    },
                },
            }
        )
    return patches


def _sidecar_filter(
    models: tuple[ModelRoutes, ...], options: IstioOptions, reference: ReferenceParts
) -> dict[str, Any]:
    vhosts = [f"{options.host(model.name)}:{options.port}" for model in models]
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": _metadata("modelguard-sidecar", options.filter_namespace),
        "spec": {
            "workloadSelector": {"labels": {_PROTECTED_LABEL: "true"}},
            "configPatches": _filter_patches("SIDECAR_OUTBOUND", vhosts, options, reference),
        },
    }


def _gateway_filter(options: IstioOptions, reference: ReferenceParts) -> dict[str, Any]:
    namespace = str(options.gateway).partition("/")[0]
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": _metadata("modelguard-gateway", namespace),
        "spec": {
            "workloadSelector": {"labels": dict(options.gateway_selector)},
            "configPatches": _filter_patches(
                "GATEWAY", [f"{options.gateway_host}:{options.gateway_port}"], options, reference
            ),
        },
    }
