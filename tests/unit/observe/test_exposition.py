"""The sliced renderer writes what prometheus_client wrote from GuardCollector, and the state's JSON."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from ext_proc.core.clock import ManualClock
from ext_proc.core.guard import Guard
from ext_proc.observe import exposition
from ext_proc.observe.metrics import GuardCollector, registry_for
from ext_proc.policy import build_policy
from ext_proc.server.servicer import ProtocolErrors

MODELS = 5


def policy_document(models: int) -> dict[str, Any]:
    """bench/policies.py's shape (tests/unit cannot import bench): a primary, a light, a respond tier."""
    tiers = [
        {"name": "primary", "route": "primary"},
        {"name": "light", "route": "light"},
        {"name": "default", "respond": {"status": 200, "body": "{}"}},
    ]
    return {
        "models": [
            {"name": f"model-{i}", "match": {"path_prefix": f"/v2/models/model-{i}"}, "tiers": tiers}
            for i in range(models)
        ]
    }


def busy_guard() -> tuple[Guard, ProtocolErrors, ManualClock]:
    """A guard with something in every family: counts, an open breaker, transitions, latencies
    (one past 1e6 requests, where floatToGoString switches to exponents), odd protocol error kinds."""
    document = policy_document(MODELS)
    for model in document["models"]:
        model["breaker"] = {"consecutive_failures": 2, "jitter": 0}
    clock = ManualClock()
    guard = Guard(build_policy(document), clock=clock, rng=random.Random(3))
    for index in range(40):
        ticket = guard.decide({":path": f"/v2/models/model-{index % 3}/infer"})
        clock.advance(0.003 * index)
        guard.record(ticket, 500 if index % 3 == 0 else 200, None)
    guard.decide({":path": "/v2/models/model-4/infer"})  # left in flight
    guard.decide({":path": "/elsewhere"})
    guard.models[1].tiers[0].outcomes["success"] += 1_234_567
    guard.decision_duration.observe(0.00003)
    errors = ProtocolErrors()
    for kind in ("unknown_message", 'quote"d', "back\\slash", "new\nline"):
        errors.count(kind)
    return guard, errors, clock


def old_text(guard: Guard, errors: ProtocolErrors) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GuardCollector(lambda: guard, errors))
    return generate_latest(registry).decode()


def new_text(guard: Guard, errors: ProtocolErrors, budget: float = exposition.SLICE_SECONDS) -> str:
    return b"".join(asyncio.run(exposition.sliced(exposition.guard_text(guard, errors), budget))).decode()


def families(text: str) -> dict[str, tuple[str, str, list[tuple[str, tuple[tuple[str, str], ...], float]]]]:
    return {
        family.name: (
            family.type,
            family.documentation,
            [(s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples],
        )
        for family in text_string_to_metric_families(text)
    }


def test_guard_families_match_prometheus_client_byte_for_byte() -> None:
    guard, errors, _ = busy_guard()
    assert guard.transitions and guard.unmatched.count == 1
    old, new = old_text(guard, errors), new_text(guard, errors)
    assert new == old
    parsed = families(new)
    assert parsed == families(old)
    assert parsed["modelguard_protocol_errors"][2] == [
        ("modelguard_protocol_errors_total", (("kind", kind),), 1.0)
        for kind in sorted(("unknown_message", 'quote"d', "back\\slash", "new\nline"))
    ]


def test_every_slice_boundary_gives_the_same_text() -> None:
    guard, errors, _ = busy_guard()
    chunks = asyncio.run(exposition.sliced(exposition.guard_text(guard, errors), 0.0))
    pieces = list(exposition.guard_text(guard, errors))
    assert len(chunks) == len(pieces) + 1  # a zero budget yields after every piece
    assert b"".join(chunks).decode() == old_text(guard, errors)


def test_full_body_parses_family_by_family_like_generate_latest() -> None:
    guard, errors, _ = busy_guard()
    registry = registry_for(lambda: guard, errors)
    old = families(generate_latest(registry).decode())
    new = families(b"".join(asyncio.run(exposition.render_metrics(guard, errors, registry.runtime))).decode())
    assert list(new) == list(old)
    for name, (kind, documentation, samples) in old.items():
        assert new[name][:2] == (kind, documentation), name
        if name.startswith("modelguard_"):
            assert new[name][2] == samples, name
        else:  # process and gc figures move between two reads; the series stay the same
            assert [s[:2] for s in new[name][2]] == [s[:2] for s in samples], name


def test_a_swapped_guard_gets_its_own_labels() -> None:
    guard, errors, _ = busy_guard()
    other = Guard(build_policy(policy_document(2)))
    new_text(guard, errors)
    assert new_text(other, errors) == old_text(other, errors)


def test_state_is_the_snapshots_json() -> None:
    guard, _, clock = busy_guard()
    clock.advance(0.5)  # open_remaining_s depends on the clock: read both at the same instant
    body = b"".join(asyncio.run(exposition.render_state(guard, 0.0))).decode()
    assert body == json.dumps(guard.snapshot())
    assert json.loads(body)["models"]["model-0"]["tiers"]["primary"]["state"] == "open"


@pytest.mark.parametrize(
    "value", [0, 1, -3, 999_999, 1_000_000, 1_234_567, 10**15, 10**17, 0.0, 0.5, 1e-05, 2.5e-05, 12345678.9, 1e300]
)
def test_number_is_float_to_go_string(value: float) -> None:
    assert exposition.number(value) == exposition.floatToGoString(value)  # prometheus_client's, typed


def test_escape_as_the_text_format_requires() -> None:
    assert exposition.escape('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
