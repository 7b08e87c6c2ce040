"""The canary in the admission chain: which arm serves a request, and the tokens that carry its
outcome into the canary's evidence."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ext_proc.core import reasons
from ext_proc.core.admission import Ticket, Token
from ext_proc.core.canary.run import CANARY
from ext_proc.core.decision import Decision
from ext_proc.core.registry import StateRegistry, TierState
from ext_proc.policy import Canary

if TYPE_CHECKING:
    from ext_proc.core.guard import ModelGuard, TierGuard


class CanaryGuard:
    """The canary at a model's first tier: its run (core/canary/), the canary route's own state
    (breaker, figures) and its one decision. A key in the canary's share is served by the canary
    route when the first tier admits it plainly (not as a probe: a probe tests the stable route)
    and the canary route's gate admits it too; otherwise by the stable route, as ``stable``."""

    __slots__ = ("run", "served", "state")

    def __init__(self, model: ModelGuard, tier: TierGuard, settings: Canary, registry: StateRegistry) -> None:
        self.run = registry.canaries.run(model.name, settings, registry.build)
        self.state = registry.tier(model.name, tier.name + reasons.CANARY_SUFFIX, settings.route, model.policy.breaker)
        counter = registry.counter(model.name, tier.name, reasons.CANARY)
        self.served = Decision(model, tier, reasons.CANARY, counter, None, reasons.ARM_CANARY, self.state)

    def decide(
        self,
        headers: Mapping[str, str],
        tier: TierGuard,
        stable: TierState,
        token: Token,
        now: float,
        limit: Token | None = None,
    ) -> Ticket:
        """``limit``: the first tier's limiter's token, which the canary's calls hold too (the
        limit counts every call the tier's traffic makes, on either arm)."""
        run = self.run
        arm = run.arm(headers, now)
        reason = token.reason if limit is None else token.reason or limit.reason
        if arm is CANARY and reason is None:
            state = self.state
            held = state.gate.admit(now)
            if held is not None:
                token.release(now)
                decision = self.served
                decision.counter.value += 1
                state.flight.admit(now)
                tokens = (held, run.canary_token)
                return Ticket(decision, tokens if limit is None else (*tokens, limit), now, headers)
        decision = tier.served if reason is None else tier.by_reason[reason]
        decision.counter.value += 1
        stable.flight.admit(now)
        kept = (token,) if arm is None else (token, run.stable_token)
        return Ticket(decision, kept if limit is None else (*kept, limit), now, headers)

    def snapshot(self) -> dict[str, object]:
        state = self.state
        figures = self.run.snapshot()
        figures["breaker"] = {"tier": state.name, "state": state.state_name, "inflight": state.inflight}
        return figures
