"""What the guard answers a request: one of finitely many decisions, built with the guard."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ext_proc.core import reasons
from ext_proc.core.registry import NO_STATE, TierState
from ext_proc.core.stats import Counter
from ext_proc.policy import FailureSettings, Respond
from ext_proc.protocol.answers import AUTO
from ext_proc.protocol.grpc_codes import RESOURCE_EXHAUSTED

if TYPE_CHECKING:
    from ext_proc.core.guard import ModelGuard, TierGuard

UNMATCHED = reasons.UNMATCHED
NO_TIER = reasons.NO_TIER
TOO_MANY = Respond(status=429, grpc_status=RESOURCE_EXHAUSTED)
"""The answer to a request shed over a limit (or refused by every tier for overload): "slow down",
not "broken", so that clients back off rather than fail over."""
HELD_BACK = frozenset({reasons.HALF_OPEN_PROBE, reasons.OVERLOAD})
"""Reasons whose requests Envoy must not retry (README, "Retry-storm control"), besides every
degraded one."""


class Decision:
    """One of the finitely many answers: a (model, tier, reason), counted as it is given.

    It keeps names and values, not the model's or the tier's objects: a guard is then a tree
    with no reference cycle, so a retired guard is freed by reference counting as soon as its
    last stream ends, frozen out of the collector (server/reload.py) or not."""

    __slots__ = (
        "arm",
        "counter",
        "deadline_ms",
        "degraded",
        "failure",
        "holds_retries",
        "model_name",
        "own_paths",
        "passes_through",
        "protocol",
        "reason",
        "respond",
        "retry_after",
        "route",
        "served_model",
        "shed",
        "state",
        "tier_name",
    )

    def __init__(
        self,
        model: ModelGuard | None,
        tier: TierGuard | None,
        reason: str,
        counter: Counter,
        respond: Respond | None = None,
        arm: str | None = None,
        canary: TierState | None = None,
        passing: bool = False,
        shed: bool = False,
    ) -> None:
        self.model_name = UNMATCHED if model is None else model.name
        self.tier_name = tier.name if tier is not None else UNMATCHED if model is None else NO_TIER
        self.shed = shed
        """Refused with 429 over a limit: ``tier`` is the tier whose limit refused it."""
        self.route = None if tier is None or shed else tier.route if canary is None else canary.route
        """Where Envoy sends it; None when modelguard answers or the request passes through."""
        self.reason = reason
        self.respond = TOO_MANY if shed else respond
        self.counter = counter
        self.arm = arm
        """``canary`` or ``stable`` at the first tier of a model with a canary; None elsewhere."""
        self.state: TierState = canary or (NO_STATE if tier is None or tier.state is None else tier.state)
        """Where the response is recorded (the canary route's own state for the canary's calls); the
        null state for a decision that records nothing."""
        self.failure = FailureSettings() if model is None else model.failure
        self.own_paths: frozenset[str] = frozenset() if model is None else model.own_paths
        self.protocol = AUTO if model is None else model.policy.protocol
        """The HTTP protocol of an answer given directly (protocol/answers.py)."""
        self.retry_after = 1 if model is None else max(1, math.ceil(model.policy.breaker.open_duration))
        """Seconds a client told to come back waits: the first open period, when a probe may pass
        (over a limit: the policy's ``overload.retry_after``)."""
        if model is not None and (shed or reason == reasons.OVERLOAD):
            self.retry_after = model.policy.overload.retry_after
        self.passes_through = model is None or passing
        """Unmatched, or not a call the model's breakers judge: the request goes on untouched (but
        for the removal of spoofed headers)."""
        self.degraded = not self.passes_through and (tier is None or tier.index > 0)
        """Not served by the first tier of the ladder."""
        holding = model is not None and model.policy.overload.hold_retries
        self.holds_retries = holding and self.route is not None and (reason in HELD_BACK or self.degraded)
        """Envoy is told not to retry it (``x-envoy-max-retries: 0``): its tier is half-open, over its
        limit, or serving degraded traffic, and retries would only add load where it hurts."""
        by_body = model is not None and model.policy.match.body_model is not None
        self.served_model = tier.tier.model if by_body and tier is not None and canary is None else None
        """The name the tier's servers know a model named in the body by: the body's ``model`` is
        rewritten to it (server/wire.py ``with_body``)."""
        deadline = None if tier is None or not self.holds_retries else tier.tier.deadline
        self.deadline_ms = None if deadline is None else max(1, round(deadline * 1000))
        """``x-envoy-upstream-rq-timeout-ms`` with held retries, from the tier's ``deadline``."""

    @property
    def count(self) -> int:
        return self.counter.value
