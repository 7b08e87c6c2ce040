"""The decision core: one call per request on its way in, one on its way out.

``Guard.decide`` walks a model's degrade ladder and takes the first tier whose admitters all let
the request through (core/admission.py); ``Guard.record`` judges the response into every one of
them. A guard is built from one policy over a ``StateRegistry`` that outlives it, so a new policy
is a new guard that finds the breakers and counters the old one left. Everything the guard can
answer is a ``Decision`` built with it, so the per-request path allocates one small ``Ticket``
and nothing else, and the server can keep the wire form of each answer once it is built.

Pure Python: no I/O, no gRPC, no locks (it runs on one event loop), time from an injected clock.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import partial

from ext_proc.core import reasons
from ext_proc.core.admission import NO_TOKENS, Admitter, Ticket, Token, admit_all, reason_of
from ext_proc.core.breaker import BreakerState
from ext_proc.core.calls import HEADER_NAMES as CALL_HEADER_NAMES
from ext_proc.core.calls import CallRule, lacks_model, own_call_paths
from ext_proc.core.canary.arms import CanaryGuard
from ext_proc.core.decision import NO_TIER, UNMATCHED, Decision
from ext_proc.core.hosts import NO_HOST
from ext_proc.core.matching import Matcher
from ext_proc.core.outcomes import DROPPED, FAILURE, LOGGED, NOT_FOUND, OUTCOMES, OVERLOAD, classify
from ext_proc.core.overload import CRITICAL_RANK, SHEDDABLE_RANK, Criticality, Limiter
from ext_proc.core.registry import StateRegistry, TierState
from ext_proc.core.tries import LoggedTry, answered_outcome, tried_state
from ext_proc.policy import Match, ModelPolicy, Policy, Tier
from ext_proc.protocol.bodies import names_model_in_body
from ext_proc.protocol.headers import METHOD, PATH, REQUEST_ID

__all__ = ["NO_TIER", "UNMATCHED", "Decision", "Guard", "ModelGuard", "Ticket", "TierGuard"]

UNREAD = -1
"""A criticality rank not read yet (core/overload/criticality.py ranks are 0 and up)."""


class TierGuard:
    """A rung of the ladder in this policy: its decisions, its state in the registry (None for a
    ``respond`` tier), the admitters after its state's gate (none today) and its limiter."""

    __slots__ = (
        "arm",
        "by_reason",
        "canary",
        "chain",
        "index",
        "limiter",
        "model_name",
        "name",
        "route",
        "served",
        "shed",
        "state",
        "tickets",
        "tier",
    )

    def __init__(self, model: ModelGuard, tier: Tier, index: int, registry: StateRegistry) -> None:
        self.model_name = model.name
        self.tier = tier
        self.name = tier.name
        self.route = tier.route
        self.index = index
        self.state: TierState | None = None
        self.chain: tuple[Admitter, ...] = ()
        """The admitters after the gate (``TierState.gate``: the breaker or a forced state); when
        there are none, decide() takes the gate's token without the chain's loop."""
        if tier.route is not None:
            policy = model.policy
            self.state = registry.tier(model.name, tier.name, tier.route, policy.breaker, tier.limit, policy.overload)
        self.limiter: Limiter | None = None if self.state is None else self.state.limiter
        """The tier's concurrency limit (core/overload/), or None: decide() skips the step."""
        settings = model.policy.canary if index == 0 else None
        self.arm = None if settings is None else reasons.ARM_STABLE
        reason = reasons.OK if index == 0 else reasons.BREAKER_OPEN
        self.served = self._decision(model, reason, registry)
        """The answer when this tier serves and no admitter says otherwise."""
        self.by_reason: dict[str | None, Decision] = {None: self.served}
        """The answers by reason: an admitter's (``half_open_probe``), or, lower down the ladder,
        why the first tier refused (``breaker_open``, ``forced``)."""
        if self.state is not None:
            self.by_reason[reasons.HALF_OPEN_PROBE] = self._decision(model, reasons.HALF_OPEN_PROBE, registry)
        if index > 0:
            self.by_reason[reasons.BREAKER_OPEN] = self.served
            self.by_reason[reasons.FORCED] = self._decision(model, reasons.FORCED, registry)
        if index > 0 or self.limiter is not None:
            self.by_reason[reasons.OVERLOAD] = self._decision(model, reasons.OVERLOAD, registry)
        self.shed: Ticket | None = None
        """The ticket of the sheddable requests this tier's limit refuses: 429 at once."""
        if self.limiter is not None:
            counter = registry.counter(model.name, self.name, reasons.SHED)
            self.shed = Ticket(Decision(model, self, reasons.SHED, counter, shed=True), NO_TOKENS, 0.0)
        self.tickets = {why: Ticket(decision, NO_TOKENS, 0.0) for why, decision in self.by_reason.items()}
        """Shared by every request a ``respond`` tier answers: nothing is recorded for them."""
        self.canary = None if settings is None else CanaryGuard(model, self, settings, registry)

    def _decision(self, model: ModelGuard, reason: str, registry: StateRegistry) -> Decision:
        counter = registry.counter(model.name, self.name, reason)
        return Decision(model, self, reason, counter, self.tier.respond, self.arm)

    @property
    def decisions(self) -> list[Decision]:
        found = list({id(decision): decision for decision in self.by_reason.values()}.values())
        if self.shed is not None:
            found.append(self.shed.decision)
        return found if self.canary is None else [*found, self.canary.served]

    def snapshot(self) -> dict[str, object]:
        figures: dict[str, object] = {
            "index": self.index,
            "route": self.route,
            "respond": self.tier.respond is not None,
            "model": self.tier.model,
        }
        state = self.state
        if state is None:
            figures.update(inflight=0, outcomes=dict.fromkeys(OUTCOMES, 0))
        else:
            figures.update(inflight=state.inflight, outcomes=dict(state.outcomes))
            if state.limiter is not None:
                figures["limit"] = state.limiter.snapshot()
            now = state.breaker.clock()
            figures["pushed_back_s"] = round(max(0.0, state.pushed_until - now), 3)
            figures["pushbacks"] = state.pushbacks
            if state.signal_figures is not None:
                figures["load_signal"] = state.signal_figures
            figures.update(state.breaker.snapshot())
            figures["hosts"] = state.breaker.hosts.snapshot(state.breaker.clock())
            order = state.order
            figures.update(
                state=state.state_name,
                breaker_state=figures["state"],  # the breaker's own, from its snapshot just taken
                forced=None if order is None else order.to_json(),
                would_open=None if order is None else state.breaker.would_open(),
            )
        return figures


class ModelGuard:
    __slots__ = (
        "calls",
        "criticality",
        "exhausted",
        "exhausted_tickets",
        "failure",
        "name",
        "own_paths",
        "passing",
        "policy",
        "tiers",
    )

    def __init__(self, policy: ModelPolicy, registry: StateRegistry) -> None:
        self.policy = policy
        self.name = policy.name
        self.failure = policy.failure
        self.own_paths = own_call_paths(policy.match.path_prefix, policy.calls)
        """Where a 404 says the tier lacks the model (core/calls.py ``lacks_model``)."""
        self.criticality = Criticality(policy.overload)
        """How its requests' criticality is read, when a limit or a pushed-back tier asks."""
        self.tiers: tuple[TierGuard, ...] = tuple(
            TierGuard(self, tier, index, registry) for index, tier in enumerate(policy.tiers)
        )
        self.exhausted = {
            why: Decision(self, None, why, registry.counter(self.name, NO_TIER, why))
            for why in (reasons.BREAKER_OPEN, reasons.FORCED)
        }
        counter = registry.counter(self.name, NO_TIER, reasons.OVERLOAD)
        self.exhausted[reasons.OVERLOAD] = Decision(self, None, reasons.OVERLOAD, counter, shed=True)
        """Every tier refused: the built-in 503 (or gRPC UNAVAILABLE) naming the model, by why the
        first tier refused; 429 (RESOURCE_EXHAUSTED) when it was a limit."""
        self.exhausted_tickets = {why: Ticket(decision, NO_TOKENS, 0.0) for why, decision in self.exhausted.items()}
        self.calls = CallRule(policy.calls)
        counter = registry.counter(self.name, NO_TIER, reasons.PASS_THROUGH)
        self.passing = Ticket(Decision(self, None, reasons.PASS_THROUGH, counter, passing=True), NO_TOKENS, 0.0)
        """The ticket of the model's requests that are not calls it judges (core/calls.py)."""

    def snapshot(self) -> dict[str, object]:
        """This model's entry in /v1/state."""
        found: dict[str, object] = {
            "match": _match_text(self.policy.match),
            "tiers": {tier.name: tier.snapshot() for tier in self.tiers},
        }
        canary = self.tiers[0].canary
        if canary is not None:
            found["canary"] = canary.snapshot()
        return found


def model_guards(policy: Policy, registry: StateRegistry) -> Iterator[ModelGuard]:
    """The policy's models one by one, each finding (or making) its tiers' state in the registry;
    for one guard (it starts a build of the registry, and the guard made of them takes its mark)."""
    registry.begin()
    for model in policy.models:
        yield ModelGuard(model, registry)


class Guard:
    """The decision core over one loaded policy, its state kept in ``registry``."""

    def __init__(self, policy: Policy, registry: StateRegistry, models: Sequence[ModelGuard] | None = None) -> None:
        """``models``: the policy's, built already by ``model_guards`` (a reload builds them a few
        at a time between decisions); built here when not given."""
        self.policy = policy
        self.registry = registry
        self.clock = registry.clock
        self.models: tuple[ModelGuard, ...] = tuple(model_guards(policy, registry) if models is None else models)
        self.build = registry.build
        self.unmatched = Decision(None, None, UNMATCHED, registry.unmatched)
        self._unmatched_ticket = Ticket(self.unmatched, NO_TOKENS, 0.0)
        self._matcher: Matcher[ModelGuard] = Matcher([(m.policy.match, m) for m in self.models])
        self._alone: dict[str, Matcher[ModelGuard]] = {m.name: Matcher([(m.policy.match, m)]) for m in self.models}
        self._nothing: Matcher[ModelGuard] = Matcher([])
        self._by_body: dict[str, ModelGuard] = {}
        """Models matched by the ``model`` of an OpenAI-style body, by that name (the first claims it)."""
        for model in self.models:
            if model.policy.match.body_model is not None:
                self._by_body.setdefault(model.policy.match.body_model, model)
        classes = {m.criticality.header for m in self.models}
        self.header_names = self._matcher.header_names | canary_headers(policy) | CALL_HEADER_NAMES | classes
        self._by_route: dict[str, tuple[ModelGuard, ...]] = routed_models(self.models)
        """The models by the routes of their tiers and canaries: which model a logged try is of."""
        self.canaries: dict[str, CanaryGuard] = {
            model.name: model.tiers[0].canary for model in self.models if model.tiers[0].canary is not None
        }
        """The models' canaries by model name."""

    def adopt(self) -> None:
        """Make this guard's policy the registry's: state of models and tiers it lacks is dropped."""
        self.registry.sweep(self.build)

    # -- the hot path --------------------------------------------------------------------

    def decide(self, headers: Mapping[str, str], scope: str | None = None) -> Ticket:
        """Pick the tier for a request from its headers (only ``header_names`` are read). A
        ``scope`` names the only model the request may match (an unknown name matches none)."""
        matcher = self._matcher if scope is None else self._alone.get(scope, self._nothing)
        model = matcher.match(headers)
        if model is None:
            self.unmatched.counter.value += 1
            return self._unmatched_ticket
        return self._walk(model, headers)

    def reads_body(self, headers: Mapping[str, str]) -> bool:
        """A request no header matched that may name its model in its body: a POST to an OpenAI-style
        API path, with models matched by ``body_model`` in the policy (protocol/bodies.py)."""
        return bool(self._by_body) and headers.get(METHOD) == "POST" and names_model_in_body(headers.get(PATH, ""))

    @property
    def reads_bodies(self) -> bool:
        return bool(self._by_body)

    def awaiting_body(self, headers: Mapping[str, str]) -> Ticket:
        """The ticket of a request whose body was asked for: unmatched until the body names a model,
        and carrying its headers until then (nothing to settle)."""
        return Ticket(self.unmatched, NO_TOKENS, 0.0, headers)

    def decide_body(self, headers: Mapping[str, str], name: str | None, scope: str | None = None) -> Ticket:
        """The ticket of a request ``reads_body`` asked the body of, now that it names ``name`` (None:
        no model named). It was counted unmatched on its headers; a model's now, it is counted there."""
        model = None if name is None else self._by_body.get(name)
        if model is None or (scope is not None and model.name != scope):
            return self._unmatched_ticket
        self.unmatched.counter.value -= 1
        return self._walk(model, headers)

    def _walk(self, model: ModelGuard, headers: Mapping[str, str]) -> Ticket:
        """Down the model's ladder to the first tier whose admitters all let the request through."""
        if not model.calls.judged(headers):
            model.passing.decision.counter.value += 1
            return model.passing
        now = self.clock()
        rank = UNREAD  # the request's criticality, read when a limit or a pushed-back tier asks
        why: str | None = None  # the refusal of the first tier that refused
        spare: tuple[TierGuard, TierState, Token] | None = None
        """A critical request's first tier whose gate let it through and whose limit had no room:
        where it goes past the limit if no tier below has room (it is never shed)."""
        for tier in model.tiers:
            state = tier.state
            if state is None:
                if spare is not None:
                    return self._past_limit(*spare, headers, now)
                ticket = tier.tickets[why]
                ticket.decision.counter.value += 1
                return ticket
            gate = state.gate
            token = gate.admit(now)
            if token is None:
                if why is None:
                    why = gate.refusal
                continue
            if state.pushed_until > now:
                if rank == UNREAD:
                    rank = model.criticality.rank(headers)
                if rank != CRITICAL_RANK:
                    token.release(now)
                    why = why or reasons.OVERLOAD
                    continue
            limiter = tier.limiter
            held: Token | None = None
            if limiter is not None:
                if rank == UNREAD:
                    rank = model.criticality.rank(headers)
                held = limiter.admit(rank)
                if held is None:
                    if rank == SHEDDABLE_RANK:
                        token.release(now)
                        return self._shed(tier)
                    why = why or reasons.OVERLOAD
                    if rank == CRITICAL_RANK and spare is None:
                        spare = (tier, state, token)
                    else:
                        token.release(now)
                    continue
            if spare is not None:  # a tier below had room: the first tier's hold is not needed
                spare[2].release(now)
                spare = None
            if tier.canary is not None:  # the first tier only, whose chain is the gate alone
                return tier.canary.decide(headers, tier, state, token, now, held)
            if tier.chain:
                rest = admit_all(tier.chain, now)
                if rest is None:
                    token.release(now)
                    if held is not None:
                        held.release(now)
                    continue
                tokens: tuple[Token, ...] = (token, *rest) if held is None else (token, held, *rest)
                reason = reason_of(tokens)
            elif held is None:
                tokens = (token,)
                reason = token.reason
            else:
                tokens = (token, held)
                reason = token.reason or held.reason
            if reason is None:
                reason = why
            decision = tier.served if reason is None else tier.by_reason[reason]
            decision.counter.value += 1
            state.flight.admit(now)
            return Ticket(decision, tokens, now, headers)
        if spare is not None:
            return self._past_limit(*spare, headers, now)
        ticket = model.exhausted_tickets[why or reasons.BREAKER_OPEN]
        ticket.decision.counter.value += 1
        return ticket

    @staticmethod
    def _shed(tier: TierGuard) -> Ticket:
        ticket = tier.shed
        assert ticket is not None  # a tier with a limiter has one
        ticket.decision.counter.value += 1
        return ticket

    @staticmethod
    def _past_limit(tier: TierGuard, state: TierState, token: Token, headers: Mapping[str, str], now: float) -> Ticket:
        """A critical request no tier had room for, let through by the first that would have taken it."""
        limiter = tier.limiter
        assert limiter is not None  # only a tier with a limiter is spare
        held = limiter.force()
        if tier.canary is not None:
            return tier.canary.decide(headers, tier, state, token, now, held)
        decision = tier.by_reason[token.reason or reasons.OVERLOAD]
        decision.counter.value += 1
        state.flight.admit(now)
        return Ticket(decision, (token, held), now, headers)

    def record(
        self,
        ticket: Ticket,
        status: int,
        grpc_status: int | None,
        answered_at: float | None = None,
        host: str = NO_HOST,
        attempts: int = 1,
        tries_logged: bool = False,
        retry_after: float | None = None,
    ) -> str | None:
        """Judge a response into every admitter of the ticket; returns the outcome.

        ``answered_at`` is when the response headers came, for a gRPC answer judged later on its
        trailers; the latency is measured to it, not to the end of the stream. ``host`` is the
        upstream host that answered, as Envoy names it (core/hosts.py); ``attempts`` the tries
        Envoy made; ``tries_logged`` that the call's Envoy logs its failed tries (core/tries.py);
        ``retry_after`` the seconds of the answer's Retry-After (core/overload/pushback.py).
        """
        if ticket.done:
            return None
        ticket.done = True
        decision = ticket.decision
        state = decision.state
        missing = status == NOT_FOUND and lacks_model(decision.own_paths, ticket.headers)
        outcome = classify(status, grpc_status, decision.failure, missing)
        started = ticket.started
        answered = self.clock() if answered_at is None else answered_at
        latency = answered - started
        judged = outcome
        if tries_logged:
            siblings = partial(self.registry.states_of, decision.model_name)
            log_open = self.registry.tries_logged
            judged = answered_outcome(state, siblings, outcome, status, host, attempts, answered, latency, log_open)
        if judged != LOGGED:
            state.breaker.note_host(host, answered, outcome == FAILURE, outcome == OVERLOAD, latency)
        for token in ticket.tokens:
            token.record(judged, latency, started)
        if outcome == OVERLOAD:
            state.push_back(answered, retry_after)
        state.flight.answer(started, answered)
        state.outcomes[outcome] += 1
        state.latency.observe(latency)
        return outcome

    def judge_try(self, tried: LoggedTry) -> bool:
        """Count a failed try from Envoy's access log into the tier that took it; False when it is
        not one: no model's, not an inference call, not a failure by the model's rules."""
        models = self._by_route.get(tried.route, ())
        model = models[0] if len(models) == 1 else self._matcher.match(tried.headers)
        if model is None or model not in models or not model.calls.judged(tried.headers):
            return False
        if classify(tried.status, None, model.failure) != FAILURE:
            return False
        state = tried_state(model, tried)
        if state is None:
            return False
        state.breaker.judge_try(tried.host, self.clock(), tried.latency)
        return True

    def release(self, ticket: Ticket) -> None:
        """The stream ended without a response: settle the ticket's tokens, count it dropped."""
        if ticket.done:
            return
        ticket.done = True
        for token in ticket.tokens:
            token.release(ticket.started)
        state = ticket.decision.state
        state.flight.drop(ticket.started)
        state.outcomes[DROPPED] += 1

    # -- reading -------------------------------------------------------------------------

    def decisions(self) -> list[Decision]:
        """Every answer the guard can give, for metrics to read (and the server to answer)."""
        found = [self.unmatched]
        for model in self.models:
            for tier in model.tiers:
                found.extend(tier.decisions)
            found.extend(model.exhausted.values())
            found.append(model.passing.decision)
        return found

    def tiers(self) -> list[TierGuard]:
        return [tier for model in self.models for tier in model.tiers]

    def states(self) -> list[TierState]:
        """Every routed tier's state, the canary routes' included: what metrics read."""
        found = []
        for tier in self.tiers():
            if tier.state is not None:
                found.append(tier.state)
            if tier.canary is not None:
                found.append(tier.canary.state)
        return found

    def breaker_states(self) -> list[tuple[TierGuard, BreakerState]]:
        return [(tier, tier.state.breaker.state) for tier in self.tiers() if tier.state is not None]

    def snapshot(self) -> dict[str, object]:
        """The JSON body of /v1/state."""
        return {
            "models": {model.name: model.snapshot() for model in self.models},
            "unmatched_requests": self.unmatched.count,
        }


def routed_models(models: Sequence[ModelGuard]) -> dict[str, tuple[ModelGuard, ...]]:
    found: dict[str, tuple[ModelGuard, ...]] = {}
    for model in models:
        canary = model.tiers[0].canary
        routes = {tier.route for tier in model.tiers if tier.route is not None}
        if canary is not None:
            routes.add(canary.state.route)
        for route in routes:
            found[route] = (*found.get(route, ()), model)
    return found


def canary_headers(policy: Policy) -> frozenset[str]:
    """The request headers the policy's canaries read: sticky keys, their fallback, exclusions."""
    names: set[str] = set()
    for model in policy.models:
        canary = model.canary
        if canary is not None:
            names.update((canary.sticky_header, REQUEST_ID))
            if canary.exclude is not None:
                names.add(canary.exclude.header)
    return frozenset(names)


def _match_text(match: Match) -> dict[str, str]:
    if match.path_prefix is not None:
        return {"path_prefix": match.path_prefix}
    if match.authority is not None:
        return {"authority": match.authority}
    if match.body_model is not None:
        return {"body_model": match.body_model}
    return {"header": f"{match.header_name}: {match.header_value}"}
