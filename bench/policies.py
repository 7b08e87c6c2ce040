"""Synthetic policies for the benchmarks: N models, each with a primary, a light and a respond tier,
some with a canary."""

from __future__ import annotations

from typing import Any

from ext_proc.policy import Policy, build_policy


def policy_document(
    models: int,
    primary_route: str | None = None,
    light_route: str | None = None,
    canaries: int = 0,
    canary_route: str | None = None,
    limits: bool = False,
) -> dict[str, Any]:
    """The YAML document; routes default to per-model names (model-3-primary), or all models share
    the given ones (so that one Envoy route table serves every model). ``canaries`` models, spread
    evenly (model-0, model-4, ... for 5 of 20), get a canary at 10% of keys. ``limits``: every routed
    tier has a concurrency limit (an adaptive one on the primary, a static one on the light tier)."""
    document: dict[str, list[dict[str, Any]]] = {
        "models": [
            {
                "name": f"model-{i}",
                "match": {"path_prefix": f"/v2/models/model-{i}"},
                "tiers": [
                    {"name": "primary", "route": primary_route or f"model-{i}-primary"},
                    {"name": "light", "route": light_route or f"model-{i}-light"},
                    {"name": "default", "respond": {"status": 200, "body": "{}"}},
                ],
            }
            for i in range(models)
        ]
    }
    if limits:
        for model in document["models"]:
            tiers = model["tiers"]
            tiers[0]["limit"] = {"adaptive": {"initial": 100, "max": 1000}}
            tiers[1]["limit"] = {"max_inflight": 1000}
    for i in range(0, models, models // canaries if canaries else models + 1)[:canaries]:
        route = canary_route or f"model-{i}-v2"
        document["models"][i]["canary"] = {"route": route, "weight": "10%"}
    return document


def policy_with(models: int, canaries: int = 0, limits: bool = False) -> Policy:
    return build_policy(policy_document(models, canaries=canaries, limits=limits))
