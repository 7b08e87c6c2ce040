"""/metrics and /v1/state bodies, rendered in slices that give the event loop back.

The admin site shares its event loop with the ext_proc streams, and a decision that waits more
than Envoy's ``message_timeout`` (0.2 s) fails open. prometheus_client renders a whole registry
in one call: at 1,000 models x 3 tiers (~52,000 series) that held the loop for 0.3-0.6 s, and a
scrape made every decision behind it fail open. Here the same text is written piece by piece
(one tier's series at a time) and the renderer yields (``asyncio.sleep(0)``) whenever a slice
has run for ``SLICE_SECONDS``, so decisions never wait for more than about one slice.

The guard families are written by hand, byte for byte as prometheus_client writes what
metrics.GuardCollector yields (label names sorted, values through ``floatToGoString``); tests
parse both and compare them. The process, platform and gc families are small and still come
from prometheus_client, in one slice of their own.

Each value is read once, when its tier's piece is written; a scrape is not a snapshot of one
instant (it never was one to Prometheus either: counters only go up).
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate
from typing import cast

from prometheus_client import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _untyped_float_to_go

from ext_proc.core.breaker import BreakerState
from ext_proc.core.guard import Guard, ModelGuard
from ext_proc.core.stats import Histogram
from ext_proc.server.servicer import ProtocolErrors

floatToGoString = cast(Callable[[float], str], _untyped_float_to_go)

SLICE_SECONDS = 0.002
"""How long one slice may run before the renderer yields to the loop."""

_REQUESTS = "modelguard_requests_total"
_STATE = "modelguard_breaker_state"
_TRANSITIONS = "modelguard_breaker_transitions_total"
_OUTCOMES = "modelguard_outcomes_total"
_INFLIGHT = "modelguard_inflight"
_LATENCY = "modelguard_upstream_latency_seconds"
_DURATION = "modelguard_decision_duration_seconds"
_ERRORS = "modelguard_protocol_errors_total"


def _header(name: str, kind: str, help_text: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


_HEADERS = {
    _REQUESTS: _header(_REQUESTS, "counter", "Requests decided, by model, tier and reason."),
    _STATE: _header(_STATE, "gauge", "1 for the breaker's current state."),
    _TRANSITIONS: _header(_TRANSITIONS, "counter", "Breaker state changes."),
    _OUTCOMES: _header(
        _OUTCOMES, "counter", "Judged responses: success, failure, overload (429), dropped (stream ended first)."
    ),
    _INFLIGHT: _header(_INFLIGHT, "gauge", "Requests admitted to a tier and not yet answered."),
    _LATENCY: _header(_LATENCY, "histogram", "Time from request headers to response headers, as modelguard saw it."),
    _DURATION: _header(_DURATION, "histogram", "Time inside modelguard to decide a request's tier."),
    _ERRORS: _header(_ERRORS, "counter", "ext_proc messages that broke the protocol, by kind."),
}
_STATE_VALUES = {current: [(state.value, "1.0" if state is current else "0.0") for state in BreakerState]
                 for current in BreakerState}  # fmt: skip


def escape(value: str) -> str:
    """A label value as the text format requires: backslash, newline and double quote escaped."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def number(value: float) -> str:
    """``floatToGoString``, with a fast path for the small integers most samples are."""
    if type(value) is int and -1_000_000 < value < 1_000_000:
        return f"{value}.0"  # what repr(float(value)) gives, which floatToGoString returns for these
    return floatToGoString(value)


class _Labels:
    """Escaped label values, built once per guard (a swapped-in guard gets its own): the same
    few thousand names are written on every scrape."""

    __slots__ = ("_escaped",)

    def __init__(self) -> None:
        self._escaped: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        found = self._escaped.get(value)
        if found is None:
            found = self._escaped[value] = escape(value)
        return found


_LABELS: weakref.WeakKeyDictionary[Guard, _Labels] = weakref.WeakKeyDictionary()
_LE: dict[tuple[float, ...], tuple[str, ...]] = {}


def _labels_for(guard: Guard) -> _Labels:
    labels = _LABELS.get(guard)
    if labels is None:
        labels = _LABELS[guard] = _Labels()
    return labels


def _le_fragments(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """``le="0.005",`` ... ``le="+Inf",``: the bucket bounds as _add_histogram in metrics.py names them."""
    found = _LE.get(bounds)
    if found is None:
        found = _LE[bounds] = (*(f'le="{bound!r}",' for bound in bounds), 'le="+Inf",')
    return found


def _histogram(name: str, labels: str, histogram: Histogram) -> str:
    """One histogram series: buckets, count, sum. ``labels`` is ``model="m",tier="t"`` or empty."""
    cumulative = list(accumulate(histogram.counts))
    if labels:
        lines = [f"{name}_bucket{{{le}{labels}}} {number(count)}\n"
                 for le, count in zip(_le_fragments(histogram.bounds), cumulative, strict=True)]  # fmt: skip
        labels = "{" + labels + "}"
    else:
        lines = [f"{name}_bucket{{{le[:-1]}}} {number(count)}\n"
                 for le, count in zip(_le_fragments(histogram.bounds), cumulative, strict=True)]  # fmt: skip
    lines.append(f"{name}_count{labels} {number(cumulative[-1])}\n")
    lines.append(f"{name}_sum{labels} {floatToGoString(histogram.total)}\n")
    return "".join(lines)


def guard_text(guard: Guard, errors: ProtocolErrors) -> Iterator[str]:
    """The guard's families, one small piece at a time (a decision, a tier), in GuardCollector's order."""
    label = _labels_for(guard)
    yield _HEADERS[_REQUESTS]
    for decision in guard.decisions():
        model, reason, name = label(decision.model_name), label(decision.reason), label(decision.tier_name)
        yield f'{_REQUESTS}{{model="{model}",reason="{reason}",tier="{name}"}} {number(decision.count)}\n'

    tiers = [tier for tier in guard.tiers() if tier.breaker is not None]
    yield _HEADERS[_STATE]
    for tier in tiers:
        assert tier.breaker is not None
        model, name = label(tier.model_name), label(tier.name)
        yield "".join(
            f'{_STATE}{{model="{model}",state="{state}",tier="{name}"}} {value}\n'
            for state, value in _STATE_VALUES[tier.breaker.state]
        )

    yield _HEADERS[_TRANSITIONS]
    for (model, name, from_state, to_state), count in sorted(guard.transitions.items()):
        yield (
            f'{_TRANSITIONS}{{from_state="{label(from_state)}",model="{label(model)}",tier="{label(name)}",'
            f'to_state="{label(to_state)}"}} {number(count)}\n'
        )

    yield _HEADERS[_OUTCOMES]
    for tier in tiers:
        model, name = label(tier.model_name), label(tier.name)
        yield "".join(
            f'{_OUTCOMES}{{model="{model}",outcome="{label(outcome)}",tier="{name}"}} {number(count)}\n'
            for outcome, count in tier.outcomes.items()
        )
    yield _HEADERS[_INFLIGHT]
    for tier in tiers:
        yield f'{_INFLIGHT}{{model="{label(tier.model_name)}",tier="{label(tier.name)}"}} {number(tier.inflight)}\n'
    yield _HEADERS[_LATENCY]
    for tier in tiers:
        yield _histogram(_LATENCY, f'model="{label(tier.model_name)}",tier="{label(tier.name)}"', tier.latency)

    yield _HEADERS[_DURATION] + _histogram(_DURATION, "", guard.decision_duration)
    yield _HEADERS[_ERRORS]
    for kind, count in sorted(errors.counts.items()):
        yield f'{_ERRORS}{{kind="{escape(kind)}"}} {number(count)}\n'


async def sliced(pieces: Iterable[str], budget: float = SLICE_SECONDS) -> list[bytes]:
    """Draw ``pieces`` (the rendering happens as they are drawn), yielding to the loop every
    ``budget`` seconds; returns the body as encoded chunks, one per slice (never joined: at
    3,000 models the text is ~13 MB, and one join or encode of it is itself a stall)."""
    chunks: list[bytes] = []
    pending: list[str] = []
    deadline = time.perf_counter() + budget
    for piece in pieces:
        pending.append(piece)
        if time.perf_counter() >= deadline:
            chunks.append("".join(pending).encode())
            pending.clear()
            await asyncio.sleep(0)
            deadline = time.perf_counter() + budget
    chunks.append("".join(pending).encode())
    return chunks


def _metrics_pieces(guard: Guard, errors: ProtocolErrors, runtime: Collector) -> Iterator[str]:
    yield from guard_text(guard, errors)
    yield generate_latest(runtime).decode()


async def render_metrics(
    guard: Guard, errors: ProtocolErrors, runtime: Collector, budget: float = SLICE_SECONDS
) -> list[bytes]:
    """The /metrics body: the guard's families, then those of ``runtime`` (process, platform, gc)."""
    return await sliced(_metrics_pieces(guard, errors, runtime), budget)


def _model_json(model: ModelGuard) -> str:
    return f"{json.dumps(model.name)}: {json.dumps(model.snapshot())}"


def state_text(guard: Guard) -> Iterator[str]:
    """``json.dumps(guard.snapshot())``, one model at a time (model names are unique in a policy)."""
    yield '{"models": {'
    for index, model in enumerate(guard.models):
        yield _model_json(model) if index == 0 else ", " + _model_json(model)
    yield f'}}, "unmatched_requests": {json.dumps(guard.unmatched.count)}}}'


async def render_state(guard: Guard, budget: float = SLICE_SECONDS) -> list[bytes]:
    """The /v1/state body, as the JSON of ``Guard.snapshot()``."""
    return await sliced(state_text(guard), budget)
