"""The reference Envoy config (envoy/envoy.yaml, carried in the wheel) as the one source of the
ext_proc filter's settings, the header hygiene, the response tags, retries and outlier
detection: rendered manifests copy these pieces rather than restating them."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ext_proc.processes.envoy_config import EXT_PROC_FILTER, without_try_log
from ext_proc.processes.locations import reference_envoy_config

__all__ = ["HCM_FILTER", "MODELGUARD_CLUSTER", "ROUTER_FILTER", "ReferenceParts", "reference_parts"]

HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"
MODELGUARD_CLUSTER = "modelguard"
_PRIMARY, _LIGHT, _CANARY = "recommender-resnet50", "recommender-mobilenet", "recommender-resnet50-v2"


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
        """The filter without its word that failed tries are logged: rendered manifests do not log them."""
        found: dict[str, Any] = copy.deepcopy(next(f for f in self.hcm["http_filters"] if f["name"] == EXT_PROC_FILTER))
        without_try_log(found)
        return found

    def early_header_mutation(self) -> list[dict[str, Any]]:
        return copy.deepcopy(list(self.hcm["early_header_mutation_extensions"]))

    def response_tags(self) -> list[dict[str, Any]]:
        return copy.deepcopy(list(self._vhost["response_headers_to_add"]))

    def route(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(next(r for r in self._vhost["routes"] if r.get("name") == name))

    def replica_route(self) -> dict[str, Any]:
        """A tier's route whose retries stay on the tier's replicas: the light tier's (the primary's
        last retry goes to the light tier, which rendered routes do not carry yet)."""
        return self.route(_LIGHT)["route"]  # type: ignore[no-any-return]

    def canary_route(self) -> dict[str, Any]:
        return self.route(_CANARY)["route"]  # type: ignore[no-any-return]

    def cluster(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(next(c for c in self.bootstrap["static_resources"]["clusters"] if c["name"] == name))

    def replica_cluster(self) -> dict[str, Any]:
        return self.cluster(_PRIMARY)

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
