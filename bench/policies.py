"""Synthetic policies for the benchmarks: N models, each with a primary, a light and a respond tier."""

from __future__ import annotations

from typing import Any

from ext_proc.policy import Policy, build_policy


def policy_document(models: int, primary_route: str | None = None, light_route: str | None = None) -> dict[str, Any]:
    """The YAML document; routes default to per-model names (model-3-primary), or all models share
    the given ones (so that one Envoy route table serves every model)."""
    return {
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


def policy_with(models: int) -> Policy:
    return build_policy(policy_document(models))
