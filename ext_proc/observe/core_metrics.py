"""The decision core's families: requests, breaker states and transitions, outcomes, in-flight
requests and upstream latency, read from the live guard and its state registry at scrape time.

The hot path only bumps plain integers (core/stats.py); this source turns them into text when
/metrics is read. Label values come from the policy, or are the fixed words ``unmatched`` and
``none``, so cardinality is bounded by the policy's size; a model or tier a reload removed is
gone from the registry, and so from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ext_proc.core.breaker import BreakerState
from ext_proc.core.guard import Guard
from ext_proc.observe.exposition import PREFIX, Labels, header, histogram, number

REQUESTS = PREFIX + "requests_total"
STATE = PREFIX + "breaker_state"
TRANSITIONS = PREFIX + "breaker_transitions_total"
OUTCOMES = PREFIX + "outcomes_total"
INFLIGHT = PREFIX + "inflight"
LATENCY = PREFIX + "upstream_latency_seconds"

HEADERS = {
    REQUESTS: header(REQUESTS, "counter", "Requests decided, by model, tier and reason."),
    STATE: header(STATE, "gauge", "1 for the breaker's current state."),
    TRANSITIONS: header(TRANSITIONS, "counter", "Breaker state changes."),
    OUTCOMES: header(
        OUTCOMES, "counter", "Judged responses: success, failure, overload (429), dropped (stream ended first)."
    ),
    INFLIGHT: header(INFLIGHT, "gauge", "Requests admitted to a tier and not yet answered."),
    LATENCY: header(LATENCY, "histogram", "Time from request headers to response headers, as modelguard saw it."),
}
_STATE_VALUES = {current: [(state.value, "1.0" if state is current else "0.0") for state in BreakerState]
                 for current in BreakerState}  # fmt: skip


class CoreMetrics:
    """The core's MetricSource; ``guard`` gives the live guard (it changes with each reload)."""

    def __init__(self, guard: Callable[[], Guard]) -> None:
        self._guard = guard
        self._labels = Labels()
        self._labelled: Guard | None = None

    def pieces(self) -> Iterator[str]:
        guard = self._guard()
        if guard is not self._labelled:  # a new policy: names may be gone, do not keep them
            self._labels.clear()
            self._labelled = guard
        label = self._labels
        yield HEADERS[REQUESTS]
        for decision in guard.decisions():
            model, reason, name = label(decision.model_name), label(decision.reason), label(decision.tier_name)
            yield f'{REQUESTS}{{model="{model}",reason="{reason}",tier="{name}"}} {number(decision.count)}\n'

        states = [tier.state for tier in guard.tiers() if tier.state is not None]
        yield HEADERS[STATE]
        for state in states:
            model, name = label(state.model_name), label(state.name)
            yield "".join(
                f'{STATE}{{model="{model}",state="{value}",tier="{name}"}} {flag}\n'
                for value, flag in _STATE_VALUES[state.breaker.state]
            )

        yield HEADERS[TRANSITIONS]
        moves = sorted(
            (state.model_name, state.name, from_state, to_state, count)
            for state in states
            for (from_state, to_state), count in state.transitions.items()
        )
        for model, name, from_state, to_state, count in moves:
            yield (
                f'{TRANSITIONS}{{from_state="{label(from_state)}",model="{label(model)}",tier="{label(name)}",'
                f'to_state="{label(to_state)}"}} {number(count)}\n'
            )

        yield HEADERS[OUTCOMES]
        for state in states:
            model, name = label(state.model_name), label(state.name)
            yield "".join(
                f'{OUTCOMES}{{model="{model}",outcome="{label(outcome)}",tier="{name}"}} {number(count)}\n'
                for outcome, count in state.outcomes.items()
            )
        yield HEADERS[INFLIGHT]
        for state in states:
            model, name = label(state.model_name), label(state.name)
            yield f'{INFLIGHT}{{model="{model}",tier="{name}"}} {number(state.inflight)}\n'
        yield HEADERS[LATENCY]
        for state in states:
            yield histogram(LATENCY, f'model="{label(state.model_name)}",tier="{label(state.name)}"', state.latency)
