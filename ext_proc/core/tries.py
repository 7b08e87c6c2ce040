"""Failed tries from Envoy's access log: what the response phase cannot see.

modelguard's ext_proc stream sees one answer per call: the last try's. When Envoy retries a
failed try (on another host of the tier, or on the next tier: envoy/envoy.yaml), the failure is
hidden from the breaker, and retrying on the next tier would hide a whole-model fault from it
altogether. So Envoy's router logs every failed try (``upstream_log``, filtered to failures) to
modelguard over the gRPC access log service (server/tries.py), each with its upstream host and
cluster, and the breaker of the tier that took the try counts it (``CircuitBreaker.judge_try``).
When the call's ext_proc stream says its Envoy logs failed tries (the stream's
``x-modelguard-try-log`` metadata: a log stream from anywhere else must not silence the breakers of
Envoys that log nothing), ``answered_outcome`` decides what the admitters are told, so that no try
is counted twice (README, "Per-try outcomes").

A try belongs to the model whose tier modelguard routed the call to (the logged
``x-modelguard-route``, which clients cannot set: a client that could name the path or another
header could otherwise charge its failures to another model), and to the tier whose route names
the cluster that took it (the policy's ``route`` is the cluster's name in the reference config and
the subset in an Istio cluster's name, so a try retried onto the next tier counts there), else to
the tier modelguard set on the request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ext_proc.core.hosts import NO_HOST
from ext_proc.core.outcomes import FAILURE, LOGGED
from ext_proc.core.reasons import ARM_CANARY

if TYPE_CHECKING:
    from ext_proc.core.guard import ModelGuard
    from ext_proc.core.registry import TierState


_ISTIO_PARTS = 4
LOGGED_STATUS = 500
"""The log holds the tries that got a status from this up, or none (envoy/envoy.yaml's filter):
a final answer below it (a 404, a gRPC status in trailers) is judged from the response phase."""


@dataclass(frozen=True, slots=True)
class LoggedTry:
    """One failed try, as the access log tells it."""

    headers: Mapping[str, str]
    """The request's headers the log carries (``:method``, ``:path``, ``:authority`` and the
    logged ones): whether it is an inference call, and which model when several share a route."""
    route: str
    """The x-modelguard-route modelguard set on the request ('' if none): with the tier, the only
    headers of the entry a client cannot choose (modelguard removes the client's copies)."""
    tier: str
    """The x-modelguard-tier modelguard set on the request ('' if none)."""
    arm: str
    """The x-modelguard-arm modelguard set ('' if none): ``canary`` tries count for the canary route."""
    cluster: str
    """The upstream cluster that took the try."""
    host: str
    status: int
    """The try's HTTP status; a try that got none (a timeout, a reset) is told as 504."""
    latency: float
    """Seconds from the try's start to its end."""


def answered_outcome(
    state: TierState,
    siblings: Callable[[], list[TierState]],
    outcome: str,
    status: int,
    host: str,
    attempts: int,
    now: float,
    latency: float,
    log_open: bool,
) -> str:
    """What the admitters of a call of ``state``'s tier are told of its answer when Envoy logs the
    call's failed tries: ``LOGGED`` for an answer that is itself a failed try the log carries (while
    a log stream is open: else the log may be lost and the answer is the only word of the failure),
    and for an answer another tier gave after this tier's tries failed (Envoy's retry on the next
    tier: the answer's host is unknown to this tier), whose outcome then counts for the tier that
    knows the host (``siblings``: the model's states). The latter holds before Envoy opened its log
    stream too (it opens it on the first failed try, as the retried call is answered): such an answer
    is never this tier's success, and its host never one of this tier's. Else the answer's own
    outcome (a retry on another host of this tier answered: the tier served it)."""
    if outcome == FAILURE and status >= LOGGED_STATUS and host != NO_HOST:
        return LOGGED if log_open else outcome
    if attempts > 1 and not state.breaker.hosts.knows(host):
        for other in siblings():
            if other is not state and other.breaker.hosts.knows(host):
                other.breaker.judge_try(host, now, latency, outcome == FAILURE)
                break
        return LOGGED
    return outcome


def served_route(cluster: str) -> str:
    """The policy route a cluster serves: an Istio subset cluster (``outbound|PORT|SUBSET|HOST``,
    render/filters.py) serves its subset, named after the route; any other cluster its own name."""
    parts = cluster.split("|")
    return parts[2] if len(parts) == _ISTIO_PARTS and parts[0] == "outbound" and parts[2] else cluster


def tried_state(model: ModelGuard, tried: LoggedTry) -> TierState | None:
    """The state of the tier (or canary route) that took the try, or None (not one of the model's)."""
    route = served_route(tried.cluster)
    canary = model.tiers[0].canary
    if canary is not None and (
        canary.state.route == route or (tried.arm == ARM_CANARY and route not in _routes(model))
    ):
        return canary.state
    for tier in model.tiers:
        if tier.state is not None and tier.route == route:
            return tier.state
    for tier in model.tiers:
        if tier.state is not None and tier.name == tried.tier:
            return tier.state
    return None


def _routes(model: ModelGuard) -> set[str | None]:
    return {tier.route for tier in model.tiers}
