"""Istio manifests from the policy: per model a DestinationRule (a subset per route, outlier
detection and connection pool with the reference config's intent) and VirtualServices routing on
``x-modelguard-route``; EnvoyFilters that put modelguard's ext_proc filter in the protected
clients' sidecars and, optionally, in an ingress gateway.

The Envoy pieces come from the reference config (`reference.ReferenceParts`); Istio names its
outbound virtual hosts ``HOST:PORT`` and its clusters ``outbound|PORT|SUBSET|HOST``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ext_proc.policy.model import Policy
from ext_proc.render.filters import fail_open_route_name, gateway_filter, header_route_name, sidecar_filter
from ext_proc.render.kube import metadata
from ext_proc.render.matches import istio_matches
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
from ext_proc.render.reference import ReferenceParts, reference_parts

__all__ = ["ROUTE_LABEL", "IstioOptions", "istio_objects"]

GATEWAY_SERVICE = "modelguard-gateway"  # the one VirtualService at the gateway
ROUTE_LABEL = "modelguard.io/route"  # on model-server pods: the policy route they serve
_ROUTE_HEADER = "x-modelguard-route"


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
    _refuse_unroutable(policy)
    models = plan(policy, kubernetes_names=True)
    objects: list[dict[str, Any]] = []
    for model in models:
        objects.append(_destination_rule(model, options, reference))
        objects.append(_mesh_service(model, options, reference))
    if options.gateway is not None:
        objects.append(_gateway_service(models, options, reference))
    objects.append(sidecar_filter(models, options, reference))
    if options.gateway is not None:
        objects.append(gateway_filter(models, options, reference))
    _refuse_clashes(objects)
    return objects


def _refuse_unroutable(policy: Policy) -> None:
    """Models Istio routing cannot serve as modelguard means them: refused, not silently unprotected."""
    errors: list[str] = []
    for index, model in enumerate(policy.models):
        if model.match.authority is not None:
            errors.append(
                f"models[{index}].match.authority: not rendered for Istio: a sidecar sees each Service's own "
                "name as the authority; match the model by path_prefix or header"
            )
        if all(tier.route is None for tier in model.tiers):
            errors.append(
                f"models[{index}].tiers: answered by modelguard alone (no tier routes): Istio routes to a "
                "Service, so give the model a routed tier (or serve it with `render envoy`)"
            )
    if errors:
        raise RenderError(errors)


def _refuse_clashes(objects: list[dict[str, Any]]) -> None:
    """Two objects of one name would overwrite each other on apply (a model named like the gateway's
    VirtualService, modelguard-gateway, say)."""
    seen: set[tuple[str, str, str]] = set()
    clashes: list[str] = []
    for item in objects:
        key = (item["kind"], item["metadata"]["namespace"], item["metadata"]["name"])
        if key in seen:
            clashes.append(f"models: two {key[0]}s would be named {key[2]!r} in namespace {key[1]!r}: rename a model")
        seen.add(key)
    if clashes:
        raise RenderError(clashes)


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
        "metadata": metadata(model.name, options.namespace),
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


def _mesh_service(model: ModelRoutes, options: IstioOptions, reference: ReferenceParts) -> dict[str, Any]:
    """The model's own Service: its header routes, then the fail-open default. Only the model's
    requests get here (the sidecar filter scopes modelguard to the Service's model)."""
    http = [_header_route(use, model, [], options, reference) for use in model.routes]
    http.append(
        {"name": fail_open_route_name(model, False), **_destination(model.fail_open, model, options, reference)}
    )
    return _service(model.name, [options.host(model.name)], ["mesh"], http, options)


def _gateway_service(
    models: tuple[ModelRoutes, ...], options: IstioOptions, reference: ReferenceParts
) -> dict[str, Any]:
    """Every model at the gateway's host in one VirtualService, in policy order, each route carrying
    the model's own match. Before modelguard answers, a request can only take a fail-open route
    (client x-modelguard-* headers are gone), and the gateway filter scopes that route's stream to its
    model: modelguard judges the request for the model whose Service Envoy picked, or not at all,
    and never a request another VirtualService of the host routes.
    (Istio merges several VirtualServices of one gateway host in creation order, which no one
    controls: hence one.)"""
    http: list[dict[str, Any]] = []
    for model in models:
        scope = istio_matches(model.match)
        http += [_header_route(use, model, scope, options, reference) for use in model.routes]
        fail_open = _destination(model.fail_open, model, options, reference)
        http.append({"name": fail_open_route_name(model, True), "match": scope, **fail_open})
    names = [route["name"] for route in http]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:  # the gateway filter finds the fail-open routes by name
        raise RenderError([f"models: the gateway's routes {repeated} would share a name: rename a model or route"])
    return _service(GATEWAY_SERVICE, [options.gateway_host], [str(options.gateway)], http, options)


def _header_route(
    use: RouteUse, model: ModelRoutes, scope: list[dict[str, Any]], options: IstioOptions, reference: ReferenceParts
) -> dict[str, Any]:
    """Routes on x-modelguard-route; at a gateway also on the model's own match (any one of its
    conditions, each with the header)."""
    wanted = {_ROUTE_HEADER: {"exact": use.route}}
    match = [{**c, "headers": {**c.get("headers", {}), **wanted}} for c in scope] if scope else [{"headers": wanted}]
    return {
        "name": header_route_name(model, use, bool(scope)),
        "match": match,
        **_destination(use, model, options, reference),
    }


def _service(
    name: str, hosts: list[str], gateways: list[str], http: list[dict[str, Any]], options: IstioOptions
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata(name, options.namespace),
        "spec": {"hosts": hosts, "gateways": gateways, "http": http},
    }


def _destination(use: RouteUse, model: ModelRoutes, options: IstioOptions, reference: ReferenceParts) -> dict[str, Any]:
    route = reference.route_of(use)
    retry = route["retry_policy"]
    destination: dict[str, Any] = {
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
    if use.rewrite is not None:  # Istio 1.18 and later
        rewrite = {"match": use.rewrite.pattern, "rewrite": use.rewrite.substitution}
        destination["rewrite"] = {"uriRegexRewrite": rewrite}
    return destination
