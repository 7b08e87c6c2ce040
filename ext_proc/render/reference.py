"""The reference Envoy config (envoy/envoy.yaml, carried in the wheel) as the one source of the
ext_proc filter's settings, the header hygiene, the response tags, retries and outlier
detection: rendered manifests copy these pieces rather than restating them."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ext_proc.processes.envoy_config import EXT_PROC_FILTER
from ext_proc.processes.locations import reference_envoy_config
from ext_proc.render.plan import Role, RouteUse

__all__ = ["HCM_FILTER", "MODELGUARD_CLUSTER", "ROUTER_FILTER", "ReferenceParts", "reference_parts"]

HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"
MODELGUARD_CLUSTER = "modelguard"
_PRIMARY, _LIGHT, _CANARY = "recommender-resnet50", "recommender-mobilenet", "recommender-resnet50-v2"
_NEXT_TIER = "recommender-resnet50-then-mobilenet"


@dataclass(frozen=True, slots=True)
class ReferenceParts:
    """Pieces of the reference bootstrap; every getter hands out a copy to change freely."""

    bootstrap: dict[str, Any]

    @property
    def hcm(self) -> dict[str, Any]:
        chain = self.bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]
        found: dict[str, Any] = next(f for f in chain["filters"] if f["name"] == HCM_FILTER)["typed_config"]
        return found

    def ext_proc_filter(self) -> dict[str, Any]:
        """The filter, with its word that this Envoy logs its failed tries (`try_log`)."""
        return self._http_filter(EXT_PROC_FILTER)

    def try_log(self) -> list[dict[str, Any]]:
        """The router's upstream logs: failed tries of modelguard's calls, to the ext_proc cluster."""
        return list(self._http_filter(ROUTER_FILTER)["typed_config"]["upstream_log"])

    def _http_filter(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(next(f for f in self.hcm["http_filters"] if f["name"] == name))

    def early_header_mutation(self) -> list[dict[str, Any]]:
        return copy.deepcopy(list(self.hcm["early_header_mutation_extensions"]))

    def response_tags(self) -> list[dict[str, Any]]:
        return copy.deepcopy(list(self._vhost["response_headers_to_add"]))

    def route(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(next(r for r in self._vhost["routes"] if r.get("name") == name))

    def replica_route(self) -> dict[str, Any]:
        """A tier's route whose retries stay on the tier's replicas: the light tier's."""
        return self.route(_LIGHT)["route"]  # type: ignore[no-any-return]

    def next_tier_route(self) -> dict[str, Any]:
        """A tier's route whose last retry goes to the next tier: the primary's."""
        return self.route(_PRIMARY)["route"]  # type: ignore[no-any-return]

    def canary_route(self) -> dict[str, Any]:
        return self.route(_CANARY)["route"]  # type: ignore[no-any-return]

    def route_of(self, use: RouteUse) -> dict[str, Any]:
        """The route action (timeout, retries) for a policy route: the canary's, a tier's that retries
        on the next tier, or a tier's that retries on its own replicas."""
        if use.role is Role.CANARY:
            return self.canary_route()
        return self.replica_route() if use.next_route is None else self.next_tier_route()

    def cluster(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(next(c for c in self.bootstrap["static_resources"]["clusters"] if c["name"] == name))

    def replica_cluster(self) -> dict[str, Any]:
        return self.cluster(_PRIMARY)

    def next_tier_cluster(self) -> dict[str, Any]:
        """The aggregate cluster of a tier and the next one (its ``clusters`` to fill in)."""
        return self.cluster(_NEXT_TIER)

    def canary_cluster(self) -> dict[str, Any]:
        return self.cluster(_CANARY)

    def modelguard_cluster(self) -> dict[str, Any]:
        return self.cluster(MODELGUARD_CLUSTER)

    @property
    def _vhost(self) -> dict[str, Any]:
        found: dict[str, Any] = self.hcm["route_config"]["virtual_hosts"][0]
        return found


def reference_parts(path: Path | None = None) -> ReferenceParts:
    source = path if path is not None else reference_envoy_config()
    return ReferenceParts(yaml.safe_load(source.read_text()))
