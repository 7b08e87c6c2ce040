"""An Envoy bootstrap from the policy: the reference config (envoy/envoy.yaml) with its route
table and model clusters rebuilt from the policy's routes: a header route per `route:` value,
then each model's fail-open default on the model's own match, and one cluster per route."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ext_proc.policy.model import Policy
from ext_proc.render.matches import envoy_matches
from ext_proc.render.plan import (
    CANARY_REPLICAS,
    REPLICAS,
    ModelRoutes,
    RenderError,
    Role,
    RouteUse,
    distinct,
    max_ejection_percent,
    plan,
)
from ext_proc.render.reference import MODELGUARD_CLUSTER, ReferenceParts, reference_parts

__all__ = ["EnvoyOptions", "envoy_bootstrap"]

_ROUTE_HEADER = "x-modelguard-route"


@dataclass(frozen=True, slots=True)
class EnvoyOptions:
    upstream: str = "{route}:8080"  # HOST:PORT of a route's model servers; {route} is replaced
    replicas: int = REPLICAS  # hosts per tier route: how many outlier detection may eject
    canary_replicas: int = CANARY_REPLICAS
    modelguard: str = "127.0.0.1:50051"  # modelguard's --grpc-address as Envoy reaches it


def envoy_bootstrap(policy: Policy, options: EnvoyOptions, parts: ReferenceParts | None = None) -> dict[str, Any]:
    reference = parts if parts is not None else reference_parts()
    models = plan(policy)
    clashes = [use.where for model in models for use in model.routes if use.route == MODELGUARD_CLUSTER]
    if clashes:
        raise RenderError(
            [f"{where}: {MODELGUARD_CLUSTER!r} is the ext_proc cluster's name: rename the route" for where in clashes]
        )
    shared = _shared_rewritten_routes(models)
    if shared:
        raise RenderError(shared)
    bootstrap = reference.bootstrap
    uses = list(distinct(use for model in models for use in model.routes))
    vhost = reference.hcm["route_config"]["virtual_hosts"][0]
    vhost["routes"] = [_header_route(use, reference) for use in uses] + [
        route for model in models for route in _default_routes(model, reference)
    ]
    modelguard = reference.modelguard_cluster()
    modelguard.update(_endpoints(MODELGUARD_CLUSTER, options.modelguard, "--modelguard"))
    clusters = [_cluster(use, options, reference) for use in uses]
    clusters += [_next_tier_cluster(use, reference) for use in uses if use.next_route is not None]
    bootstrap["static_resources"]["clusters"] = [modelguard, *clusters]
    return bootstrap


def _shared_rewritten_routes(models: tuple[ModelRoutes, ...]) -> list[str]:
    """A route whose path is rewritten for a tier's model: is one header route to Envoy: another
    model's requests on it would be rewritten too, or left for a server that knows only that name."""
    first: dict[str, tuple[str, RouteUse]] = {}
    problems: list[str] = []
    for model in models:
        for use in model.routes:
            owner, earlier = first.setdefault(use.route, (model.name, use))
            if owner != model.name and (use.rewrite or earlier.rewrite):
                problems.append(
                    f"{use.where}: {use.route!r} is also {earlier.where}, and a tier's model: rewrites the path on"
                    " it: give each model its own route there"
                )
    return problems


def _route_action(use: RouteUse, reference: ReferenceParts) -> dict[str, Any]:
    action = reference.route_of(use)
    action["cluster"] = use.cluster
    if use.rewrite is not None:
        action["regex_rewrite"] = {
            "pattern": {"regex": use.rewrite.pattern},
            "substitution": use.rewrite.substitution,
        }
    return action


def _header_route(use: RouteUse, reference: ReferenceParts) -> dict[str, Any]:
    return {
        "name": use.route,
        "match": {"prefix": "/", "headers": [{"name": _ROUTE_HEADER, "string_match": {"exact": use.route}}]},
        "route": _route_action(use, reference),
    }


def _default_routes(model: ModelRoutes, reference: ReferenceParts) -> list[dict[str, Any]]:
    """No x-modelguard-route (modelguard down, slow, or it skipped the request): the first tier,
    on the model's own match only."""
    matches = envoy_matches(model.match)
    return [
        {"name": model.fail_open_name, "match": match, "route": _route_action(model.fail_open, reference)}
        for match in matches
    ]


def _cluster(use: RouteUse, options: EnvoyOptions, reference: ReferenceParts) -> dict[str, Any]:
    canary = use.role is Role.CANARY
    cluster = reference.canary_cluster() if canary else reference.replica_cluster()
    cluster["name"] = use.route
    replicas = options.canary_replicas if canary else options.replicas
    cluster["outlier_detection"]["max_ejection_percent"] = max_ejection_percent(replicas)
    policy = cluster.get("load_assignment", {}).get("policy")
    cluster.update(_endpoints(use.route, options.upstream.replace("{route}", use.route), "--upstream"))
    if policy is not None:  # how much of the first tries the next tier takes while hosts are out
        cluster["load_assignment"]["policy"] = policy
    return cluster


def _next_tier_cluster(use: RouteUse, reference: ReferenceParts) -> dict[str, Any]:
    cluster = reference.next_tier_cluster()
    cluster["name"] = use.cluster
    cluster["cluster_type"]["typed_config"]["clusters"] = [use.route, use.next_route]
    return cluster


def _endpoints(name: str, address: str, option: str) -> dict[str, Any]:
    host, _, port_text = address.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RenderError([f"{option}: {address!r} is not HOST:PORT"])
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        kind = "STATIC"
    except ValueError:
        kind = "STRICT_DNS"  # a (headless) Service name: every pod is a host for outlier detection
    endpoint = {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port_text)}}}}
    return {"type": kind, "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]}}
