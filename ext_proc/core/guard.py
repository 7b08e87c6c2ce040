"""The decision core: one call per request on its way in, one on its way out.

``Guard.decide`` walks a model's degrade ladder and takes the first tier whose breaker admits
the request; ``Guard.record`` judges the response into that tier's breaker. Everything the
guard can answer is a ``Decision`` built when the policy is loaded, so the per-request path
allocates one small ``Ticket`` and nothing else, and the server can keep the wire form of each
answer ready-made.

Pure Python: no I/O, no gRPC, no locks (it runs on one event loop), time from an injected clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from ext_proc.core.breaker import PROBE, REFUSED, BreakerState, CircuitBreaker, Transition
from ext_proc.core.clock import Clock, monotonic
from ext_proc.core.matching import Matcher
from ext_proc.core.outcomes import DROPPED, FAILURE, OUTCOMES, OVERLOAD, classify
from ext_proc.core.stats import DECISION_BUCKETS, LATENCY_BUCKETS, Histogram
from ext_proc.policy import FailureSettings, ModelPolicy, Policy, Respond, Tier

UNMATCHED = "unmatched"
NO_TIER = "none"

REASON_OK = "ok"
REASON_BREAKER_OPEN = "breaker_open"
REASON_PROBE = "half_open_probe"

TransitionSink = Callable[["TierGuard", Transition], None]


class Decision:
    """One of the finitely many answers: a (model, tier, reason), counted as it is given."""

    __slots__ = ("count", "model", "reason", "respond", "tier")

    def __init__(
        self,
        model: ModelGuard | None,
        tier: TierGuard | None,
        reason: str,
        respond: Respond | None = None,
    ) -> None:
        self.model = model
        self.tier = tier
        self.reason = reason
        self.respond = respond
        self.count = 0

    @property
    def model_name(self) -> str:
        return self.model.name if self.model is not None else UNMATCHED

    @property
    def tier_name(self) -> str:
        if self.tier is not None:
            return self.tier.name
        return UNMATCHED if self.model is None else NO_TIER

    @property
    def degraded(self) -> bool:
        """Not served by the first tier of the ladder."""
        return self.model is not None and (self.tier is None or self.tier.index > 0)

    @property
    def passes_through(self) -> bool:
        """Unmatched: the request goes on untouched (but for the removal of spoofed headers)."""
        return self.model is None


class Ticket:
    """A request's admission, handed back on its response (or its release)."""

    __slots__ = ("admission", "decision", "done", "generation", "started")

    def __init__(self, decision: Decision, admission: int, generation: int, started: float) -> None:
        self.decision = decision
        self.admission = admission
        self.generation = generation
        self.started = started
        self.done = False


class TierGuard:
    """A rung of the ladder: its breaker (None for a ``respond`` tier) and its figures."""

    __slots__ = (
        "breaker",
        "index",
        "inflight",
        "latency",
        "model_name",
        "name",
        "outcomes",
        "probe",
        "route",
        "served",
        "served_ticket",
        "tier",
    )

    def __init__(self, model: ModelGuard, tier: Tier, index: int) -> None:
        self.model_name = model.name
        self.tier = tier
        self.name = tier.name
        self.route = tier.route
        self.index = index
        self.breaker: CircuitBreaker | None = None
        self.inflight = 0
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.latency = Histogram(LATENCY_BUCKETS)
        reason = REASON_OK if index == 0 else REASON_BREAKER_OPEN
        self.served = Decision(model, self, reason, tier.respond)
        """The answer when this tier serves outside a probe."""
        self.probe: Decision | None = None
        self.served_ticket = Ticket(self.served, REFUSED, 0, 0.0)
        """Shared by every request a ``respond`` tier answers: nothing is recorded for them."""

    def attach(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.probe = Decision(self.served.model, self, REASON_PROBE)

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return (self.served,) if self.probe is None else (self.served, self.probe)

    def snapshot(self) -> dict[str, object]:
        figures: dict[str, object] = {
            "index": self.index,
            "route": self.route,
            "respond": self.tier.respond is not None,
            "inflight": self.inflight,
            "outcomes": dict(self.outcomes),
        }
        if self.breaker is not None:
            figures.update(self.breaker.snapshot())
        return figures


class ModelGuard:
    __slots__ = ("exhausted", "exhausted_ticket", "failure", "name", "policy", "tiers")

    def __init__(self, policy: ModelPolicy) -> None:
        self.policy = policy
        self.name = policy.name
        self.failure: FailureSettings = policy.failure
        self.tiers: tuple[TierGuard, ...] = ()
        self.exhausted = Decision(self, None, REASON_BREAKER_OPEN)
        """Every tier refused: the built-in 503 (or gRPC UNAVAILABLE) naming the model."""
        self.exhausted_ticket = Ticket(self.exhausted, REFUSED, 0, 0.0)

    def snapshot(self) -> dict[str, object]:
        """This model's entry in /v1/state."""
        return {"match": _match_text(self.policy), "tiers": {tier.name: tier.snapshot() for tier in self.tiers}}


class Guard:
    """The decision core over one loaded policy."""

    def __init__(
        self,
        policy: Policy,
        clock: Clock = monotonic,
        rng: random.Random | None = None,
        on_transition: TransitionSink | None = None,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self._rng = rng or random.Random()
        self._on_transition = on_transition
        self.transitions: dict[tuple[str, str, str, str], int] = {}
        self.decision_duration = Histogram(DECISION_BUCKETS)
        self.models: tuple[ModelGuard, ...] = tuple(self._build_model(m) for m in policy.models)
        self.unmatched = Decision(None, None, UNMATCHED)
        self._unmatched_ticket = Ticket(self.unmatched, REFUSED, 0, 0.0)
        self._matcher: Matcher[ModelGuard] = Matcher([(m.policy.match, m) for m in self.models])
        self.header_names = self._matcher.header_names

    def _build_model(self, policy: ModelPolicy) -> ModelGuard:
        model = ModelGuard(policy)
        tiers = []
        for index, tier in enumerate(policy.tiers):
            tier_guard = TierGuard(model, tier, index)
            if tier.route is not None:
                tier_guard.attach(CircuitBreaker(policy.breaker, self.clock, self._rng, self._listener_for(tier_guard)))
            tiers.append(tier_guard)
        model.tiers = tuple(tiers)
        return model

    def _listener_for(self, tier: TierGuard) -> Callable[[CircuitBreaker, Transition], None]:
        def listener(_breaker: CircuitBreaker, transition: Transition) -> None:
            key = (tier.model_name, tier.name, transition.from_state.value, transition.to_state.value)
            self.transitions[key] = self.transitions.get(key, 0) + 1
            if self._on_transition is not None:
                self._on_transition(tier, transition)

        return listener

    # -- the hot path --------------------------------------------------------------------

    def decide(self, headers: Mapping[str, str]) -> Ticket:
        """Pick the tier for a request from its headers (only ``header_names`` are read)."""
        model = self._matcher.match(headers)
        if model is None:
            self.unmatched.count += 1
            return self._unmatched_ticket
        now = self.clock()
        for tier in model.tiers:
            breaker = tier.breaker
            if breaker is None:
                tier.served.count += 1
                return tier.served_ticket
            admission = breaker.acquire(now)
            if admission == REFUSED:
                continue
            decision = tier.probe if admission == PROBE else tier.served
            assert decision is not None
            decision.count += 1
            tier.inflight += 1
            return Ticket(decision, admission, breaker.generation, now)
        model.exhausted.count += 1
        return model.exhausted_ticket

    def record(
        self, ticket: Ticket, status: int, grpc_status: int | None, answered_at: float | None = None
    ) -> str | None:
        """Judge a response into the breaker of the tier that served it; returns the outcome.

        ``answered_at`` is when the response headers came, for a gRPC answer judged later on its
        trailers; the latency is measured to it, not to the end of the stream.
        """
        tier = ticket.decision.tier
        if ticket.done or tier is None or tier.breaker is None:
            return None
        ticket.done = True
        model = ticket.decision.model
        assert model is not None
        outcome = classify(status, grpc_status, model.failure)
        latency = (self.clock() if answered_at is None else answered_at) - ticket.started
        tier.inflight -= 1
        tier.outcomes[outcome] += 1
        tier.latency.observe(latency)
        tier.breaker.record(
            ticket.admission, ticket.generation, outcome == FAILURE, outcome == OVERLOAD, latency, ticket.started
        )
        return outcome

    def release(self, ticket: Ticket) -> None:
        """The stream ended without a response: free the in-flight count and any probe slot."""
        tier = ticket.decision.tier
        if ticket.done or tier is None or tier.breaker is None:
            return
        ticket.done = True
        tier.inflight -= 1
        tier.outcomes[DROPPED] += 1
        tier.breaker.release(ticket.admission, ticket.generation, ticket.started)

    # -- reading -------------------------------------------------------------------------

    def decisions(self) -> list[Decision]:
        """Every answer the guard can give, for the server to prebuild and metrics to read."""
        found = [self.unmatched]
        for model in self.models:
            for tier in model.tiers:
                found.extend(tier.decisions)
            found.append(model.exhausted)
        return found

    def tiers(self) -> list[TierGuard]:
        return [tier for model in self.models for tier in model.tiers]

    def breaker_states(self) -> list[tuple[TierGuard, BreakerState]]:
        return [(tier, tier.breaker.state) for tier in self.tiers() if tier.breaker is not None]

    def snapshot(self) -> dict[str, object]:
        """The JSON body of /v1/state."""
        return {
            "models": {model.name: model.snapshot() for model in self.models},
            "unmatched_requests": self.unmatched.count,
        }


def _match_text(policy: ModelPolicy) -> dict[str, str]:
    match = policy.match
    if match.path_prefix is not None:
        return {"path_prefix": match.path_prefix}
    if match.authority is not None:
        return {"authority": match.authority}
    return {"header": f"{match.header_name}: {match.header_value}"}
