"""A 404 is the tier's failure only where it says the tier lacks the model (core/calls.py
``lacks_model``): on the model's own call path. Elsewhere a client picks what 404s (a version, a
path, an OpenAI body's model) and could open a breaker for everyone with calls it knows will 404."""

from __future__ import annotations

import random

import pytest

from ext_proc.core.breaker import BreakerState
from ext_proc.core.clock import ManualClock
from ext_proc.core.guard import Guard
from ext_proc.core.registry import StateRegistry
from ext_proc.policy import parse_policy

POLICY = """
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: rec-primary}
      - {name: light, route: rec-light}
    breaker: {consecutive_failures: 3, min_calls: 100, min_failing_hosts: 1}
  - name: chat
    match: {header: {name: x-model, value: chat}}
    tiers:
      - {name: primary, route: chat-primary}
      - {name: light, route: chat-light}
    breaker: {consecutive_failures: 3, min_calls: 100, min_failing_hosts: 1}
"""


def make() -> Guard:
    return Guard(parse_policy(POLICY), StateRegistry(ManualClock(), random.Random(1)))


def state_after_404s(guard: Guard, headers: dict[str, str], model: int = 0) -> tuple[BreakerState, int]:
    for _ in range(3):
        ticket = guard.decide(headers)
        assert ticket.decision.tier_name == "primary", "each call judged by the primary"
        guard.record(ticket, 404, None)
    state = guard.models[model].tiers[0].state
    assert state is not None
    return state.breaker.state, state.breaker.figures().failures


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/recommender/infer",
        "/v2/models/recommender/infer/",
        "/v2/models/recommender/infer?timeout=5",
        "/v2/models/recommender//infer",
        "/v2/models/r%65commender/infer",
        "/v2/models/recommender/generate",
    ],
)
def test_a_404_on_the_models_own_path_is_the_tiers_failure(path: str) -> None:
    guard = make()
    assert state_after_404s(guard, {":method": "POST", ":path": path}) == (BreakerState.OPEN, 3)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/recommender/versions/999/infer",  # a version the servers lack
        "/v2/models/recommender/versions%2F9/infer",  # the same, escaped
        "/v2/models/recommender/made-up/infer",  # judged (it ends with /infer), but not the model's path
        "/v2/models/recommender/v1/chat/completions",  # an API path of several segments after the name
    ],
)
def test_a_404_on_a_path_the_client_made_up_is_the_clients(path: str) -> None:
    guard = make()
    assert state_after_404s(guard, {":method": "POST", ":path": path}) == (BreakerState.CLOSED, 0)


def test_a_404_for_a_model_whose_path_does_not_name_it_is_the_clients() -> None:
    """An OpenAI-style call names its model in the body: a 404 there is a model name the client chose."""
    guard = make()
    headers = {":method": "POST", ":path": "/v1/chat/completions", "x-model": "chat"}
    assert state_after_404s(guard, headers, model=1) == (BreakerState.CLOSED, 0)


def test_a_503_counts_on_any_path() -> None:
    guard = make()
    headers = {":method": "POST", ":path": "/v2/models/recommender/versions/999/infer"}
    for _ in range(3):
        guard.record(guard.decide(headers), 503, None)
    state = guard.models[0].tiers[0].state
    assert state is not None and state.breaker.state is BreakerState.OPEN
