"""The hand-written families are what prometheus_client writes from the same figures (oracle.py),
in any slicing; and the state's JSON."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ext_proc.admin.state import render_state
from ext_proc.core.canary.run import Action, CanaryOrder
from ext_proc.core.clock import ManualClock
from ext_proc.core.forcing import ForceMode, ForceOrder
from ext_proc.core.guard import Guard
from ext_proc.core.registry import StateRegistry
from ext_proc.observe import exposition
from ext_proc.observe.core_metrics import CoreMetrics
from ext_proc.policy import build_policy
from ext_proc.server.metrics import ServerStats
from tests.unit.observe.oracle import oracle_text

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


def busy_guard() -> tuple[Guard, ServerStats, ManualClock]:
    """A guard with something in every family: counts, an open breaker, transitions, latencies
    (one past 1e6 requests, where floatToGoString switches to exponents), odd protocol error kinds,
    reloads and a policy hash."""
    document = policy_document(MODELS)
    for model in document["models"]:
        model["breaker"] = {"consecutive_failures": 2, "jitter": 0}
    document["models"][0]["canary"] = {"route": "primary-v2", "weight": "50%"}
    document["models"][1]["canary"] = {"route": "primary-v2", "weight": "12.5%"}
    document["models"][0]["tiers"] = [
        {**document["models"][0]["tiers"][0], "limit": {"adaptive": {"initial": 30}}},
        {**document["models"][0]["tiers"][1], "limit": {"max_inflight": 7}},
        document["models"][0]["tiers"][2],
    ]
    clock = ManualClock()
    guard = Guard(build_policy(document), StateRegistry(clock, random.Random(3)))
    for index in range(40):
        ticket = guard.decide(
            {":method": "POST", ":path": f"/v2/models/model-{index % 3}/infer", "x-request-id": f"r{index}"}
        )
        clock.advance(0.003 * index)
        host = ("10.0.0.1:8000", "[::1]:8000", "", 'odd"host\\')[index % 4]  # "": no host (Envoy sent none)
        guard.record(ticket, 500 if index % 3 == 0 else 200, None, host=host)
    guard.decide({":method": "POST", ":path": "/v2/models/model-4/infer"})  # left in flight
    guard.decide({":method": "POST", ":path": "/v2/models/model-0/infer"})  # in flight, in the limit's count
    for _ in range(5):  # model-2's primary says "too many requests": pushed back
        guard.record(guard.decide({":method": "POST", ":path": "/v2/models/model-2/infer"}), 429, None, retry_after=9)
    guard.decide({":method": "POST", ":path": "/elsewhere"})
    guard.registry.get("model-1", "primary").outcomes["success"] += 1_234_567
    guard.registry.force("model-2", "primary", ForceOrder(ForceMode.FORCED_OPEN, "drill", "sre", 0.0))
    guard.registry.canaries.give("model-1", CanaryOrder(Action.ABORT, "primary-v2", "drill", "sre", 0.0), "sre")
    guard.registry.force("model-3", "primary", ForceOrder(ForceMode.FORCED_CLOSED, "drill", "sre", 0.0))
    guard.registry.force("model-3", "primary", ForceOrder(ForceMode.AUTO, "", "sre", 0.0))
    guard.registry.force("model-3", "primary", ForceOrder(ForceMode.FORCED_CLOSED, "drill", "sre", 0.0))
    stats = ServerStats()
    stats.decision_duration.observe(0.00003)
    for kind in ("unknown_message", 'quote"d', "back\\slash", "new\nline"):
        stats.errors.count(kind)
    stats.reloads["success"] += 2
    stats.policy_sha256 = "ab" * 32
    return guard, stats, clock


def metrics_for(guard: Guard, stats: ServerStats) -> exposition.Metrics:
    metrics = exposition.Metrics()
    metrics.register(CoreMetrics(lambda: guard))
    metrics.register(stats)
    return metrics


def pieces(guard: Guard, stats: ServerStats) -> list[str]:
    return [*CoreMetrics(lambda: guard).pieces(), *stats.pieces()]


def new_text(guard: Guard, stats: ServerStats, budget: float = exposition.SLICE_SECONDS) -> str:
    return b"".join(asyncio.run(exposition.sliced(pieces(guard, stats), budget))).decode()


def families(text: str) -> dict[str, tuple[str, str, list[tuple[str, tuple[tuple[str, str], ...], float]]]]:
    return {
        family.name: (
            family.type,
            family.documentation,
            [(s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples],
        )
        for family in text_string_to_metric_families(text)
    }


def test_families_match_prometheus_client_byte_for_byte() -> None:
    guard, stats, _ = busy_guard()
    assert guard.registry.get("model-0", "primary").transitions and guard.unmatched.count == 1
    old, new = oracle_text(guard, stats), new_text(guard, stats)
    assert new == old
    parsed = families(new)
    assert parsed == families(old)
    assert parsed["modelguard_protocol_errors"][2] == [
        ("modelguard_protocol_errors_total", (("kind", kind),), 1.0)
        for kind in sorted(("unknown_message", 'quote"d', "back\\slash", "new\nline"))
    ]
    assert parsed["modelguard_policy_info"][2] == [("modelguard_policy_info", (("sha256", "ab" * 32),), 1.0)]
    hosts = {dict(labels)["host"] for _, labels, _ in parsed["modelguard_host_calls"][2]}
    assert hosts == {"10.0.0.1:8000", "[::1]:8000", "none", 'odd"host\\'}


def test_every_slice_boundary_gives_the_same_text() -> None:
    guard, stats, _ = busy_guard()
    chunks = asyncio.run(exposition.sliced(pieces(guard, stats), 0.0))
    assert len(chunks) == len(pieces(guard, stats)) + 1  # a zero budget yields after every piece
    assert b"".join(chunks).decode() == oracle_text(guard, stats)


def test_full_body_has_every_family_then_the_runtime_ones() -> None:
    guard, stats, _ = busy_guard()
    metrics = metrics_for(guard, stats)
    body = families(b"".join(asyncio.run(metrics.render())).decode())
    runtime = families(generate_latest(metrics.runtime).decode())
    ours = families(oracle_text(guard, stats))
    assert list(body) == [*ours, *runtime]
    for name, family in ours.items():
        assert body[name] == family, name
    for name, (kind, documentation, samples) in runtime.items():  # process figures move between two reads
        assert body[name][:2] == (kind, documentation), name
        assert [s[:2] for s in body[name][2]] == [s[:2] for s in samples], name


def test_a_new_guard_gets_its_own_labels() -> None:
    guard, stats, _ = busy_guard()
    live = [guard]
    source = CoreMetrics(lambda: live[0])
    "".join(source.pieces())
    live[0] = Guard(build_policy(policy_document(2)), StateRegistry())
    assert "".join(source.pieces()) + "".join(stats.pieces()) == oracle_text(live[0], stats)


def test_state_is_the_snapshots_json() -> None:
    guard, _, clock = busy_guard()
    clock.advance(0.5)  # open_remaining_s depends on the clock: read both at the same instant
    body = b"".join(asyncio.run(render_state(guard, 0.0))).decode()
    assert body == json.dumps(guard.snapshot())
    assert json.loads(body)["models"]["model-0"]["tiers"]["primary"]["state"] == "open"


@pytest.mark.parametrize(
    "value", [0, 1, -3, 999_999, 1_000_000, 1_234_567, 10**15, 10**17, 0.0, 0.5, 1e-05, 2.5e-05, 12345678.9, 1e300]
)
def test_number_is_float_to_go_string(value: float) -> None:
    assert exposition.number(value) == exposition.floatToGoString(value)  # prometheus_client's, typed


def test_escape_as_the_text_format_requires() -> None:
    assert exposition.escape('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
