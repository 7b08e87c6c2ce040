"""The EnvoyFilters that put modelguard into Istio's proxies, a protected client's sidecar
(outbound) and an ingress gateway, built from the reference Envoy config's pieces. The filter is off
by default and turned on, with the stream scoped to one model (gRPC metadata MODEL_SCOPE), only where
the model is known: a model Service's virtual host in a sidecar, a model's fail-open route at a
gateway. Istio names virtual hosts ``HOST:PORT``, routes after the VirtualService's HTTP routes, and
the modelguard Service's cluster ``outbound|PORT||HOST``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ext_proc.processes.envoy_config import EXT_PROC_FILTER
from ext_proc.protocol.headers import MODEL_SCOPE
from ext_proc.render.kube import metadata
from ext_proc.render.plan import ModelRoutes, RouteUse
from ext_proc.render.reference import HCM_FILTER, ROUTER_FILTER, ReferenceParts

if TYPE_CHECKING:
    from ext_proc.render.istio import IstioOptions

__all__ = ["fail_open_route_name", "gateway_filter", "header_route_name", "sidecar_filter"]

PROTECTED_LABEL = "modelguard.io/protected"  # on client pods whose sidecars consult modelguard
_ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_MESH_FAIL_OPEN = "fail-open"


def header_route_name(model: ModelRoutes, use: RouteUse, at_gateway: bool) -> str:
    """The VirtualService HTTP route (and so Envoy route) name for a route: at a gateway every model
    shares one VirtualService, so the model's name leads."""
    return f"{model.name}-{use.route}" if at_gateway else use.route


def fail_open_route_name(model: ModelRoutes, at_gateway: bool) -> str:
    return model.fail_open_name if at_gateway else _MESH_FAIL_OPEN


_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"


def _ext_proc_on(scope: str) -> dict[str, Any]:
    """Turns the ext_proc filter on, its streams naming the model: modelguard then judges the request
    for that model or not at all, so another model's path sent to this Service is never charged to
    the other model."""
    overrides = {"grpc_initial_metadata": [{"key": MODEL_SCOPE, "value": scope}]}
    return {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "config": {"@type": _PER_ROUTE, "overrides": overrides},
    }


def _filter_patches(
    context: str, vhosts: Sequence[tuple[str, str | None]], options: IstioOptions, reference: ReferenceParts
) -> list[dict[str, Any]]:
    """What sidecars and gateways share: strip client x-modelguard-* headers before routing (every
    HTTP connection manager), ext_proc before the router (off by default), and on the given virtual
    hosts the tags copied to responses, with ext_proc on where the host's model is given."""
    hcm = {"filterChain": {"filter": {"name": HCM_FILTER}}}
    ext_proc = reference.ext_proc_filter()
    ext_proc["name"] = EXT_PROC_FILTER  # what the per-route configs are keyed on
    ext_proc["disabled"] = True
    cluster = _modelguard_cluster(options)
    ext_proc["typed_config"]["grpc_service"]["envoy_grpc"] = {"cluster_name": cluster}
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
        _try_log_patch(context, cluster, reference),
    ]
    patches += [_vhost_patch(context, vhost, scope, reference) for vhost, scope in vhosts]
    return patches


def _modelguard_cluster(options: IstioOptions) -> str:
    return f"outbound|{options.modelguard_port}||{options.modelguard_host}"


def _try_log_patch(context: str, cluster: str, reference: ReferenceParts) -> dict[str, Any]:
    """The router logs modelguard's calls' failed tries to it (README, "Per-try outcomes"), as the
    ext_proc filter's initial metadata declares; the log's header filter leaves other services out."""
    logs = reference.try_log()
    for log in logs:
        log["typed_config"]["common_config"]["grpc_service"]["envoy_grpc"] = {"cluster_name": cluster}
    return {
        "applyTo": "HTTP_FILTER",
        "match": {
            "context": context,
            "listener": {"filterChain": {"filter": {"name": HCM_FILTER, "subFilter": {"name": ROUTER_FILTER}}}},
        },
        "patch": {"operation": "MERGE", "value": {"typed_config": {"@type": _ROUTER_TYPE, "upstream_log": logs}}},
    }


def _vhost_name(model: ModelRoutes, options: IstioOptions, at_gateway: bool) -> str:
    """Istio names a virtual host ``HOST:PORT``: the Gateway server's, or the model Service's."""
    return _gateway_vhost(options) if at_gateway else f"{options.host(model.name)}:{options.port}"


def _gateway_vhost(options: IstioOptions) -> str:
    return f"{options.gateway_host}:{options.gateway_port}"


def _next_tier_patches(
    context: str, models: tuple[ModelRoutes, ...], options: IstioOptions, reference: ReferenceParts
) -> list[dict[str, Any]]:
    """Where a tier's last retry goes to the next tier (README, "Per-try outcomes"): Istio has no
    aggregate cluster nor retry priority, so an added aggregate of the two subsets' clusters, and
    each route of the tier sent there with the reference route's retry priority."""
    at_gateway = context == "GATEWAY"
    patches: list[dict[str, Any]] = []
    retry_priority = reference.next_tier_route()["retry_policy"]["retry_priority"]
    for model in models:
        host = options.host(model.name)
        named = [(use, header_route_name(model, use, at_gateway)) for use in model.routes]
        named.append((model.fail_open, fail_open_route_name(model, at_gateway)))
        for use in model.routes:
            if use.next_route is not None:
                patches.append(_aggregate_cluster(context, use, host, options, reference))
        for use, name in named:
            if use.next_route is not None:
                cluster = _subset_cluster(options.port, use.cluster, host)
                value = {"route": {"cluster": cluster, "retry_policy": {"retry_priority": retry_priority}}}
                patches.append(_route_patch(context, _vhost_name(model, options, at_gateway), name, value))
    return patches


def _aggregate_cluster(
    context: str, use: RouteUse, host: str, options: IstioOptions, reference: ReferenceParts
) -> dict[str, Any]:
    cluster = reference.next_tier_cluster()
    cluster["name"] = _subset_cluster(options.port, use.cluster, host)
    tiers = [_subset_cluster(options.port, route, host) for route in (use.route, use.next_route)]
    cluster["cluster_type"]["typed_config"]["clusters"] = tiers
    return {"applyTo": "CLUSTER", "match": {"context": context}, "patch": {"operation": "ADD", "value": cluster}}


def _subset_cluster(port: int, subset: str | None, host: str) -> str:
    return f"outbound|{port}|{subset}|{host}"


def _vhost_patch(context: str, vhost: str, scope: str | None, reference: ReferenceParts) -> dict[str, Any]:
    """The tier tags copied to responses (an untagged request gets none) and, for a model's own
    Service (`scope`), ext_proc on for every route of the host."""
    value: dict[str, Any] = {"response_headers_to_add": reference.response_tags()}
    if scope is not None:
        value["typed_per_filter_config"] = {EXT_PROC_FILTER: _ext_proc_on(scope)}
    return {
        "applyTo": "VIRTUAL_HOST",
        "match": {"context": context, "routeConfiguration": {"vhost": {"name": vhost}}},
        "patch": {"operation": "MERGE", "value": value},
    }


def _route_patch(context: str, vhost: str, route: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "applyTo": "HTTP_ROUTE",
        "match": {"context": context, "routeConfiguration": {"vhost": {"name": vhost, "route": {"name": route}}}},
        "patch": {"operation": "MERGE", "value": value},
    }


def _scoped_route_patch(vhost: str, route: str, scope: str) -> dict[str, Any]:
    """On one route of a gateway's virtual host: ext_proc on, scoped to the route's model. Envoy
    reads the filter's route config once, on the route first matched, so the header routes a
    request takes after modelguard's answer need none."""
    return _route_patch("GATEWAY", vhost, route, {"typed_per_filter_config": {EXT_PROC_FILTER: _ext_proc_on(scope)}})


def sidecar_filter(models: tuple[ModelRoutes, ...], options: IstioOptions, reference: ReferenceParts) -> dict[str, Any]:
    vhosts = [(_vhost_name(model, options, False), model.name) for model in models]
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata("modelguard-sidecar", options.filter_namespace),
        "spec": {
            "workloadSelector": {"labels": {PROTECTED_LABEL: "true"}},
            "configPatches": _filter_patches("SIDECAR_OUTBOUND", vhosts, options, reference)
            + _next_tier_patches("SIDECAR_OUTBOUND", models, options, reference),
        },
    }


def gateway_filter(models: tuple[ModelRoutes, ...], options: IstioOptions, reference: ReferenceParts) -> dict[str, Any]:
    """At a gateway every model, and maybe other teams' VirtualServices, share the host: ext_proc is
    on only on each model's fail-open route (the only one of modelguard's a request can take before
    modelguard answers), scoped to that model; other routes of the host never reach modelguard."""
    namespace = str(options.gateway).partition("/")[0]
    vhost = _gateway_vhost(options)
    patches = _filter_patches("GATEWAY", [(vhost, None)], options, reference)
    patches += [_scoped_route_patch(vhost, fail_open_route_name(model, True), model.name) for model in models]
    patches += _next_tier_patches("GATEWAY", models, options, reference)
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata("modelguard-gateway", namespace),
        "spec": {
            "workloadSelector": {"labels": dict(options.gateway_selector)},
            "configPatches": patches,
        },
    }
