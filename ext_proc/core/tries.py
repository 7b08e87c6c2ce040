"""Failed tries from Envoy's access log: what the response phase cannot see.

modelguard's ext_proc stream sees one answer per call: the last try's. When Envoy retries a
failed try (on another host of the tier, or on the next tier: envoy/envoy.yaml), the failure is
hidden from the breaker, and retrying on the next tier would hide a whole-model fault from it
altogether. So Envoy's router logs every failed try (``upstream_log``, filtered to failures) to
modelguard over the gRPC access log service (server/tries.py), each with its upstream host and
cluster, and the breaker of the tier that took the try counts it (``CircuitBreaker.judge_try``).
While a log stream is open (``StateRegistry.tries_logged``), an answer that came from a failed
try (a status of ``LOGGED_STATUS`` or more, from a host), or after one (``attempts`` > 1), is
told to the admitters as ``LOGGED``: a probe or a
canary judges it a failure, a closed breaker leaves it to the log, so no try is counted twice
(README, "Per-try outcomes").

A try names its tier by the cluster that took it (the policy's ``route`` is the cluster's name in
the reference config, so a try retried onto the next tier counts there), else by the tier
header modelguard set on the request (Istio's cluster names are not the policy's routes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ext_proc.core.reasons import ARM_CANARY

if TYPE_CHECKING:
    from ext_proc.core.guard import ModelGuard
    from ext_proc.core.registry import TierState


LOGGED_STATUS = 500
"""The log holds the tries that got a status from this up, or none (envoy/envoy.yaml's filter):
a final answer below it (a 404, a gRPC status in trailers) is judged from the response phase."""


@dataclass(frozen=True, slots=True)
class LoggedTry:
    """One failed try, as the access log tells it."""

    headers: Mapping[str, str]
    """The request's headers the log carries (``:method``, ``:path``, ``:authority`` and the
    logged ones): the model is matched from them as on the way in."""
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


def tried_state(model: ModelGuard, tried: LoggedTry) -> TierState | None:
    """The state of the tier (or canary route) that took the try, or None (not one of the model's)."""
    canary = model.tiers[0].canary
    if canary is not None and (
        canary.state.route == tried.cluster or (tried.arm == ARM_CANARY and tried.cluster not in _routes(model))
    ):
        return canary.state
    for tier in model.tiers:
        if tier.state is not None and tier.route == tried.cluster:
            return tier.state
    for tier in model.tiers:
        if tier.state is not None and tier.name == tried.tier:
            return tier.state
    return None


def _routes(model: ModelGuard) -> set[str | None]:
    return {tier.route for tier in model.tiers}
