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
from ext_proc.core.canary.run import CanaryState
from ext_proc.core.forcing import ForceMode
from ext_proc.core.guard import Guard
from ext_proc.core.registry import TierState
from ext_proc.core.windows import WindowFigures
from ext_proc.observe.exposition import PREFIX, Labels, escape, header, histogram, number
from ext_proc.policy import BUCKETS

REQUESTS = PREFIX + "requests_total"
STATE = PREFIX + "breaker_state"
TRANSITIONS = PREFIX + "breaker_transitions_total"
FORCED_CHANGES = PREFIX + "forced_state_changes_total"
OUTCOMES = PREFIX + "outcomes_total"
INFLIGHT = PREFIX + "inflight"
LATENCY = PREFIX + "upstream_latency_seconds"
HOST_CALLS = PREFIX + "host_calls"
HOST_FAILURES = PREFIX + "host_failures"
CONCURRENCY_LIMIT = PREFIX + "concurrency_limit"
LIMIT_INFLIGHT = PREFIX + "limit_inflight"
PUSHED_BACK = PREFIX + "pushed_back"
CANARY_WEIGHT = PREFIX + "canary_weight"
CANARY_STATE = PREFIX + "canary_state"

HEADERS = {
    REQUESTS: header(REQUESTS, "counter", "Requests decided, by model, tier and reason."),
    STATE: header(STATE, "gauge", "1 for the tier's current state: a breaker state, or forced_open / forced_closed."),
    TRANSITIONS: header(TRANSITIONS, "counter", "Breaker state changes."),
    FORCED_CHANGES: header(
        FORCED_CHANGES, "counter", "Forced-state changes by the state they moved to (forced_open, forced_closed, auto)."
    ),
    OUTCOMES: header(
        OUTCOMES, "counter", "Judged responses: success, failure, overload (429), dropped (stream ended first)."
    ),
    INFLIGHT: header(INFLIGHT, "gauge", "Requests admitted to a tier and not yet answered."),
    LATENCY: header(LATENCY, "histogram", "Time from request headers to response headers, as modelguard saw it."),
    HOST_CALLS: header(HOST_CALLS, "gauge", "Calls in a breaker's window by the upstream host that answered them."),
    HOST_FAILURES: header(
        HOST_FAILURES, "gauge", "Failures in a breaker's window by the upstream host that answered them."
    ),
    CONCURRENCY_LIMIT: header(
        CONCURRENCY_LIMIT, "gauge", "A tier's concurrency limit now (static, or the adaptive limit's value)."
    ),
    LIMIT_INFLIGHT: header(
        LIMIT_INFLIGHT, "gauge", "Calls a tier's limit counts now: its own and its canary's, admitted and unsettled."
    ),
    PUSHED_BACK: header(
        PUSHED_BACK, "gauge", "1 while a tier's own 429 / RESOURCE_EXHAUSTED answers step its traffic down."
    ),
    CANARY_WEIGHT: header(CANARY_WEIGHT, "gauge", "Share of sticky keys a model's canary serves (0 to 1)."),
    CANARY_STATE: header(
        CANARY_STATE, "gauge", "1 for the canary's state: active, ramping, complete, promoted or aborted."
    ),
}
_CANARY_VALUES = {current: [(state.value, "1.0" if state is current else "0.0") for state in CanaryState]
                  for current in CanaryState}  # fmt: skip
STATE_NAMES = (*(state.value for state in BreakerState), ForceMode.FORCED_OPEN.value, ForceMode.FORCED_CLOSED.value)
"""Every value of the ``state`` label, as /v1/state and ``ctl state`` name them too."""
_STATE_VALUES = {current: [(name, "1.0" if name == current else "0.0") for name in STATE_NAMES]
                 for current in STATE_NAMES}  # fmt: skip


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

        states = guard.states()
        yield HEADERS[STATE]
        for state in states:
            model, name = label(state.model_name), label(state.name)
            yield "".join(
                f'{STATE}{{model="{model}",state="{value}",tier="{name}"}} {flag}\n'
                for value, flag in _STATE_VALUES[state.state_name]
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

        yield HEADERS[FORCED_CHANGES]
        changes = sorted(
            (state.model_name, state.name, to_state, count)
            for state in states
            for to_state, count in state.forced_changes.items()
        )
        for model, name, to_state, count in changes:
            yield (
                f'{FORCED_CHANGES}{{model="{label(model)}",state="{label(to_state)}",tier="{label(name)}"}} '
                f"{number(count)}\n"
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
        yield from _hosts(states, label)
        yield from _limits(states, label)
        yield from _canaries(guard, label)


def _limits(states: list[TierState], label: Labels) -> Iterator[str]:
    limited = [(state, state.limiter) for state in states if state.limiter is not None]
    yield HEADERS[CONCURRENCY_LIMIT]
    for state, limiter in limited:
        series = f'model="{label(state.model_name)}",tier="{label(state.name)}"'
        yield f"{CONCURRENCY_LIMIT}{{{series}}} {number(limiter.figure.value)}\n"
    yield HEADERS[LIMIT_INFLIGHT]
    for state, limiter in limited:
        series = f'model="{label(state.model_name)}",tier="{label(state.name)}"'
        yield f"{LIMIT_INFLIGHT}{{{series}}} {number(limiter.inflight)}\n"
    yield HEADERS[PUSHED_BACK]
    for state in states:
        pushed = state.pushed_until > state.breaker.clock()
        yield f'{PUSHED_BACK}{{model="{label(state.model_name)}",tier="{label(state.name)}"}} {number(pushed)}\n'


def _hosts(states: list[TierState], label: Labels) -> Iterator[str]:
    """Each tier's hosts with calls in its breaker's window (at most MAX_HOSTS a tier, core/hosts.py).
    Host names come from Envoy, not the policy: escaped each time, never kept among the labels."""
    rows: list[tuple[str, str, WindowFigures]] = []
    for state in states:
        breaker = state.breaker
        now = breaker.clock()
        tier = f'model="{label(state.model_name)}",tier="{label(state.name)}"'
        rows.extend((escape(host or "none"), tier, f) for host, f in breaker.hosts.figures(now) if f.calls)
    yield HEADERS[HOST_CALLS]
    yield "".join(f'{HOST_CALLS}{{host="{host}",{tier}}} {number(f.calls)}\n' for host, tier, f in rows)
    yield HEADERS[HOST_FAILURES]
    yield "".join(f'{HOST_FAILURES}{{host="{host}",{tier}}} {number(f.failures)}\n' for host, tier, f in rows)


def _canaries(guard: Guard, label: Labels) -> Iterator[str]:
    runs = [canary.run for canary in guard.canaries.values()]
    yield HEADERS[CANARY_WEIGHT]
    for run in runs:
        yield f'{CANARY_WEIGHT}{{model="{label(run.model)}"}} {number(run.weight / BUCKETS)}\n'
    yield HEADERS[CANARY_STATE]
    for run in runs:
        model = label(run.model)
        yield "".join(
            f'{CANARY_STATE}{{model="{model}",state="{value}"}} {flag}\n' for value, flag in _CANARY_VALUES[run.state]
        )
