"""The ``canary:`` section: the README's example is a valid policy read as documented, and mistakes
are named by their path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ext_proc.policy import BUCKETS, PolicyError, build_policy

README = Path(__file__).resolve().parents[3] / "README.md"


def readme_canary_document() -> dict[str, Any]:
    text = README.read_text()
    found = re.search(r"## Canary gating.*?```yaml\n(.*?)```", text, re.DOTALL)
    assert found, "README lost its canary example"
    document: dict[str, Any] = yaml.safe_load(found.group(1))
    return document


def test_the_readme_example_reads_as_documented() -> None:
    canary = build_policy(readme_canary_document()).models[0].canary
    assert canary is not None
    assert (canary.route, canary.weight, canary.sticky_header) == (
        "recommender-resnet50-v2",
        5 * BUCKETS // 100,
        "x-user-id",
    )
    assert canary.exclude is not None and canary.exclude.values == frozenset({"critical"})
    assert canary.ramp is not None and (canary.ramp.step, canary.ramp.every, canary.ramp.max) == (500, 60.0, 5000)
    assert canary.guardrails.confidence == 0.99 and canary.guardrails.max_harm == 20


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"weight": 5}, "models[0].canary.weight: must be a percentage from 0.01% to 100% such as 5%, got 5"),
        ({"weight": "150%"}, "models[0].canary.weight: must be a percentage"),
        ({"route": "recommender-resnet50"}, "models[0].canary.route: must differ from the routes of the tiers"),
        ({"route": None}, "models[0].canary.route: must be 1-128 characters"),
        ({"sticky_header": "x-modelguard-arm"}, "models[0].canary.sticky_header: must not be"),
        (
            {"exclude": {"header": "x-request-criticality", "values": []}},
            "models[0].canary.exclude.values: must be a list",
        ),
        ({"guardrails": {"confidence": 1}}, "models[0].canary.guardrails.confidence: must be a number from 0.5"),
        ({"guardrails": {"min_call": 3}}, "models[0].canary.guardrails.min_call: unknown key"),
        (
            {"ramp": {"step": "5%", "every": "1m", "max": "1%"}},
            "models[0].canary.ramp: max must be at least the starting weight (5%)",
        ),
        ({"ramp": {"every": 60}}, "models[0].canary.ramp.every:"),
    ],
)
def test_mistakes_are_named_by_their_path(change: dict[str, Any], error: str) -> None:
    document = readme_canary_document()
    document["models"][0]["canary"].update(change)
    with pytest.raises(PolicyError) as refused:
        build_policy(document)
    assert any(line.startswith(error) for line in refused.value.errors), refused.value.errors


def test_a_canary_needs_a_routed_first_tier() -> None:
    document = readme_canary_document()
    document["models"][0]["tiers"] = [{"name": "default", "respond": {"status": 503}}]
    with pytest.raises(PolicyError, match="a canary needs a first tier with a route"):
        build_policy(document)
