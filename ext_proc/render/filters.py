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
from ext_proc.render.plan import ModelRoutes
from ext_proc.render.reference import HCM_FILTER, ROUTER_FILTER, ReferenceParts

if TYPE_CHECKING:
    from ext_proc.render.istio import IstioOptions

__all__ = ["gateway_filter", "sidecar_filter"]

PROTECTED_LABEL = "modelguard.io/protected"  # on client pods whose sidecars consult modelguard

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
    patches += [_vhost_patch(context, vhost, scope, reference) for vhost, scope in vhosts]
    return patches


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


def _route_patch(vhost: str, route: str, scope: str) -> dict[str, Any]:
    """On one route of a gateway's virtual host: ext_proc on, scoped to the route's model. Envoy
    reads the filter's route config once, on the route first matched, so the header routes a
    request takes after modelguard's answer need none."""
    return {
        "applyTo": "HTTP_ROUTE",
        "match": {"context": "GATEWAY", "routeConfiguration": {"vhost": {"name": vhost, "route": {"name": route}}}},
        "patch": {"operation": "MERGE", "value": {"typed_per_filter_config": {EXT_PROC_FILTER: _ext_proc_on(scope)}}},
    }


def sidecar_filter(models: tuple[ModelRoutes, ...], options: IstioOptions, reference: ReferenceParts) -> dict[str, Any]:
    vhosts = [(f"{options.host(model.name)}:{options.port}", model.name) for model in models]
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata("modelguard-sidecar", options.filter_namespace),
        "spec": {
            "workloadSelector": {"labels": {PROTECTED_LABEL: "true"}},
            "configPatches": _filter_patches("SIDECAR_OUTBOUND", vhosts, options, reference),
        },
    }


def gateway_filter(models: tuple[ModelRoutes, ...], options: IstioOptions, reference: ReferenceParts) -> dict[str, Any]:
    """At a gateway every model, and maybe other teams' VirtualServices, share the host: ext_proc is
    on only on each model's fail-open route (the only one of modelguard's a request can take before
    modelguard answers), scoped to that model; other routes of the host never reach modelguard."""
    namespace = str(options.gateway).partition("/")[0]
    vhost = f"{options.gateway_host}:{options.gateway_port}"
    patches = _filter_patches("GATEWAY", [(vhost, None)], options, reference)
    patches += [_route_patch(vhost, model.fail_open_name, model.name) for model in models]
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata("modelguard-gateway", namespace),
        "spec": {
            "workloadSelector": {"labels": dict(options.gateway_selector)},
            "configPatches": patches,
        },
    }
