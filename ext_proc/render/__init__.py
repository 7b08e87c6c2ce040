"""Manifests from the policy (`modelguard render envoy|istio`), built on the reference Envoy
config, so that routes, tiers and canary versions never drift from the policy."""

from ext_proc.render.documents import render_envoy, render_istio
from ext_proc.render.envoy import EnvoyOptions, envoy_bootstrap
from ext_proc.render.istio import ROUTE_LABEL, IstioOptions, istio_objects
from ext_proc.render.plan import RenderError

__all__ = [
    "ROUTE_LABEL",
    "EnvoyOptions",
    "IstioOptions",
    "RenderError",
    "envoy_bootstrap",
    "istio_objects",
    "render_envoy",
    "render_istio",
]
