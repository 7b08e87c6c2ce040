"""State that outlives a policy: breakers, windows, counters and histograms by (model, tier).

A guard is built from one policy and is thrown away by the next (a reload); what it observed
must not be. The guard asks the registry for each tier's state, and the registry hands back the
one it already holds when the tier is the same tier, so that a reload keeps an open breaker open,
its backoff, its window and every counter. The rule (README, "Reloading the policy"):

- same model and tier name, still routed, same route: everything is kept; new thresholds take
  effect at once (a closed breaker is judged against them on the spot); a window of another kind
  or size starts empty; an open period under way runs its course.
- the route changed: the tier now judges another upstream, so its breaker starts fresh (closed,
  empty window, no backoff); its counters are kept (same series).
- a tier that is new, or now answers directly: fresh, or no breaker at all.
- a model or tier that is gone: its state is dropped, and its series leave /metrics.

Counts of requests per (model, tier, reason) live here too, for the same reason, and so do the
operators' forced states (core/forcing.py): an order is kept by (model, tier) whether or not the
live policy has that tier, and applies whenever a policy has it, so a reload that drops a tier
and a later one that brings it back do not lose what an operator said.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Callable

from ext_proc.core.admission import Gate
from ext_proc.core.breaker import BreakerState, CircuitBreaker, Transition
from ext_proc.core.canary.book import CanaryBook
from ext_proc.core.canary.run import CanaryChange, ChangeSink
from ext_proc.core.clock import Clock, monotonic, wall_clock
from ext_proc.core.flight import Flight
from ext_proc.core.forcing import NEVER, ForceChange, ForcedClosed, ForcedOpen, ForceMode, ForceOrder
from ext_proc.core.listing import listed
from ext_proc.core.outcomes import OUTCOMES
from ext_proc.core.overload import Limiter
from ext_proc.core.overload.pushback import pushed_until
from ext_proc.core.reasons import CANARY_SUFFIX, UNMATCHED
from ext_proc.core.stats import LATENCY_BUCKETS, Counter, Histogram
from ext_proc.policy import BreakerSettings, Limit, Overload
from ext_proc.policy.durations import shown

TierKey = tuple[str, str]
"""(model, tier)."""
_OPENED = (BreakerState.CLOSED.value, BreakerState.OPEN.value)


NO_OVERLOAD = Overload()


class TierState:
    """One routed tier's breaker and figures."""

    __slots__ = (
        "__weakref__",
        "breaker",
        "era",
        "flight",
        "forced_changes",
        "gate",
        "latency",
        "limiter",
        "mark",
        "model_name",
        "name",
        "order",
        "outcomes",
        "overload",
        "pushbacks",
        "pushed_until",
        "registry",
        "retired",
        "route",
        "signal_figures",
        "signalled",
        "transitions",
    )

    def __init__(self, model_name: str, name: str, route: str, registry: StateRegistry | None = None) -> None:
        self.model_name = model_name
        self.name = name
        self.route = route
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.latency = Histogram(LATENCY_BUCKETS)
        self.transitions: dict[tuple[str, str], int] = {}
        """(from state, to state) -> count."""
        self.mark = 0
        """The last build (``StateRegistry.begin``) that asked for this state."""
        self.forced_changes: dict[str, int] = {}
        """State a forced-state change moved to (``forced_open``, ``forced_closed``, ``auto``) -> count."""
        self.order: ForceOrder | None = None
        """The operator's order in force, or None: the breaker decides."""
        self.retired = False
        """Replaced by a state for a new route, and no longer decided through."""
        self.era = 0
        """Bumped with every new gate: a forced-closed token admitted under another is not recorded."""
        self.registry = registry
        self.limiter: Limiter | None = None
        """The tier's concurrency limit (core/overload/), or None: no limit."""
        self.overload = NO_OVERLOAD
        self.pushed_until = 0.0
        """Until when the tier's own answers say it is overloaded (core/overload/pushback.py)."""
        self.pushbacks = 0
        """Times its answers (or its servers' load signal) pushed it back, ever: for the state endpoint."""
        self.signal_figures: dict[str, object] | None = None
        """Its load signal's figures as of the last scrape, for the state endpoint."""
        self.signalled = 0.0
        """The ``pushed_until`` its load signal last set, so that a reading below the bar ends
        that push and no other (server/load_signals.py)."""
        self.breaker: CircuitBreaker  # attached by the registry, which owns the clock and the listener
        self.flight: Flight
        self.gate: Gate
        """The head of the admission chain: the breaker, or a forced state standing in front of it."""

    def attach(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.flight = breaker.flight
        """Its calls in flight (core/flight.py): admitted, answered or dropped on the hot path."""

    @property
    def inflight(self) -> int:
        return self.flight.inflight

    def push_back(self, now: float, retry_after: float | None) -> None:
        """A 429 (RESOURCE_EXHAUSTED) came back at ``now``, already in the breaker's window."""
        until = pushed_until(self.overload, self.breaker.figures(), now, retry_after)
        if until is not None:
            self._push(now, until)

    def signal(self, now: float, overloaded: bool, hold: float) -> None:
        """The tier's servers' own load, read off the request path: overloaded, it is pushed back
        for ``hold`` seconds (or until a reading under the bar); not (or unknown), the push its
        signal made ends, a 429's push is left to run its course."""
        if overloaded:
            self._push(now, now + hold)
            self.signalled = self.pushed_until
        elif self.signalled and self.pushed_until == self.signalled:
            self.pushed_until = self.signalled = 0.0

    def _push(self, now: float, until: float) -> None:
        """Pushed back until ``until`` at least; a push that starts anew is counted."""
        if self.pushed_until <= now:
            self.pushbacks += 1
        self.pushed_until = max(self.pushed_until, until)

    def configure(self, limit: Limit | None, overload: Overload) -> None:
        """Take a policy's limit and overload settings: the limiter held goes on (its calls in
        flight stay counted)."""
        self.overload = overload
        if limit is None:
            self.limiter = None
        elif self.limiter is None:
            self.limiter = Limiter(limit, overload)
        else:
            self.limiter.reconfigure(limit, overload)

    @property
    def state_name(self) -> str:
        """What the tier is doing: a breaker state, ``forced_open`` or ``forced_closed``."""
        order = self.order
        return self.breaker.state.value if order is None else order.mode.value

    def expire(self, now: float) -> Gate:
        """The order's deadline has come: back to the breaker (the gate now in force)."""
        if self.registry is not None:
            self.registry.expire(self, now)
        return self.gate

    def regate(self, deadline: float = NEVER) -> None:
        self.era += 1
        order = self.order
        self.breaker.judging = order is None
        if order is None:
            self.gate = self.breaker
        elif order.mode is ForceMode.FORCED_OPEN:
            self.gate = ForcedOpen(self, deadline)
        else:
            self.gate = ForcedClosed(self, deadline)


NO_STATE = TierState("", "", "")
"""The null state of decisions that record nothing (unmatched, answered directly, refused): their
tickets hold no tokens and are settled from the start, so it is never written."""

TransitionSink = Callable[[TierState, Transition], None]
ForceSink = Callable[[ForceChange], None]
EXPIRY = "expiry"
"""Who ends an order whose time is up."""


def _ignore(_tier: TierState, _transition: Transition) -> None:
    return None


def _ignore_change(_change: ForceChange) -> None:
    return None


def _ignore_canary(_change: CanaryChange) -> None:
    return None


class UnknownTier(KeyError):
    """No routed tier of that name in the live policy; ``known`` lists those there are."""

    def __init__(self, model: str, tier: str, known: dict[str, list[str]]) -> None:
        super().__init__((model, tier))
        self.model = model
        self.tier = tier
        self.known = known

    def __str__(self) -> str:
        if self.model not in self.known:
            return f"no model {shown(self.model)}; models: {listed(self.known)}"
        tiers = listed(self.known[self.model])
        return f"model {shown(self.model)} has no routed tier {shown(self.tier)}; its routed tiers: {tiers}"


class StateRegistry:
    """Every tier's state and every request counter, kept across policies."""

    def __init__(
        self,
        clock: Clock = monotonic,
        rng: random.Random | None = None,
        on_transition: TransitionSink = _ignore,
        on_force: ForceSink = _ignore_change,
        wall: Clock = wall_clock,
        on_canary: ChangeSink = _ignore_canary,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self._rng = rng or random.Random()
        self._on_transition = on_transition
        self.on_force = on_force
        self.canaries = CanaryBook(clock, wall, self._rng, on_canary)
        """Every model's canary run (core/canary/), kept across policies as breakers are."""
        self._tiers: dict[TierKey, TierState] = {}
        self._orders: dict[TierKey, ForceOrder] = {}
        """Every order in force, for tiers the live policy has or not."""
        self._counters: dict[tuple[str, str, str], Counter] = {}
        self._replaced: list[TierState] = []
        """States a build replaced (a new route), retired when that build's guard goes live: until
        then the live guard still decides that tier through them, on the old route."""
        self.build = 0
        """Bumped by each guard built over this registry; what a build asks for is marked with it,
        so that ``sweep`` knows what the guard that goes live no longer has without listing it."""
        self.unmatched = self.counter(UNMATCHED, UNMATCHED, UNMATCHED)
        self.tries_logged = False
        """An access log stream of failed tries is open (core/tries.py): answers after a failed try
        are left to it."""
        self.flying: set[CircuitBreaker] = set()
        """Breakers whose tier admitted calls the in-flight sweep has still to look at."""

    def begin(self) -> int:
        """Start building a guard: the number its states and counters are marked with."""
        self.build += 1
        self.unmatched.mark = self.build
        return self.build

    def tier(
        self,
        model: str,
        tier: str,
        route: str,
        settings: BreakerSettings,
        limit: Limit | None = None,
        overload: Overload = NO_OVERLOAD,
    ) -> TierState:
        """The state of a routed tier: the one held, reconfigured, or a fresh one (see the module's rule)."""
        key = (model, tier)
        state = self._tiers.get(key)
        if state is None:
            state = self._tiers[key] = TierState(model, tier, route, self)
            state.attach(self._breaker(state, settings))
            self._apply(state, self._orders.get(key))
        elif state.route != route:
            self._replaced.append(state)
            state = self._tiers[key] = self._successor(state, route, settings)
        else:
            state.breaker.reconfigure(settings, judge=state.order is None)
        state.configure(limit, overload)
        state.mark = self.build
        return state

    def get(self, model: str, tier: str) -> TierState:
        """The state of a routed tier of the live policy (KeyError if there is none)."""
        return self._tiers[(model, tier)]

    def states_of(self, model: str) -> list[TierState]:
        """Every routed tier's state of a model, its canary route's included."""
        return [state for (name, _), state in self._tiers.items() if name == model]

    def counter(self, model: str, tier: str, reason: str) -> Counter:
        key = (model, tier, reason)
        found = self._counters.get(key)
        if found is None:
            found = self._counters[key] = Counter()
        found.mark = self.build
        return found

    def sweep(self, build: int) -> None:
        """Drop every state and counter that build ``build`` did not ask for: what its policy no
        longer has. ~10 ms at 10,000 models (listing what to keep instead took 80)."""
        kept: dict[TierKey, TierState] = {}
        for key, state in self._tiers.items():
            if state.mark == build:
                kept[key] = state
            else:
                state.breaker.retire()
                state.gate = state.breaker  # a forced gate and its state refer to each other
        self._tiers = kept
        for replaced in self._replaced:
            replaced.retired = True
            replaced.breaker.retire()
            replaced.gate = replaced.breaker
        self._replaced = []
        self._counters = {key: count for key, count in self._counters.items() if count.mark == build}
        self.canaries.sweep(build)

    def tiers(self) -> list[TierState]:
        return list(self._tiers.values())

    def judge_in_flight(self) -> int:
        """The periodic sweep of calls in flight (core/flight.py), over the tiers (canary routes
        included) with calls admitted since they were last swept clean; returns how many it looked at."""
        now = self.clock()
        flying = self.flying
        looked = 0
        failed: Exception | None = None
        for breaker in list(flying):
            looked += 1
            try:
                breaker.judge_in_flight(now)
            except Exception as exc:  # one tier's failure (a listener's, say) must not starve the others
                failed = failed or exc
                continue
            if breaker.flight.swept and not breaker.probing:
                flying.discard(breaker)
        if failed is not None:
            raise failed
        return looked

    # -- operators' orders ------------------------------------------------------------------

    def known(self) -> dict[str, list[str]]:
        """Routed tiers of the live policy by model, for an error naming what there is."""
        found: dict[str, list[str]] = {}
        for model, tier in self._tiers:
            found.setdefault(model, []).append(tier)
        return found

    def find(self, model: str, tier: str) -> TierState:
        """The state of a routed tier of the live policy, or ``UnknownTier`` naming those there are."""
        state = self._tiers.get((model, tier))
        if state is None:
            raise UnknownTier(model, tier, self.known())
        return state

    def orders(self) -> dict[TierKey, ForceOrder]:
        """Every order in force (tiers the live policy lacks included)."""
        return dict(self._orders)

    def force(self, model: str, tier: str, order: ForceOrder) -> ForceChange:
        """Put ``order`` in force on a routed tier of the live policy (``UnknownTier`` if none).
        ``auto`` hands the tier back to its breaker, closed with a fresh window."""
        state = self.find(model, tier)
        before = state.state_name
        ended = state.order
        if order.mode is ForceMode.AUTO and ended is None:
            return ForceChange(model, tier, before, before, order)  # automatic already: nothing to hand back
        if order.mode is ForceMode.AUTO:
            self._orders.pop((model, tier), None)
            self._apply(state, None)
            change = ForceChange(model, tier, before, state.state_name, ended or order, ended_by=order.caller)
        else:
            self._orders[(model, tier)] = order
            self._apply(state, order)
            change = ForceChange(model, tier, before, state.state_name, order)
        self._count(state, change)
        return change

    def forget(self, model: str, tier: str, caller: str) -> ForceChange:
        """Drop the order kept for a tier the live policy lacks (``UnknownTier`` if there is none)."""
        order = self._orders.pop((model, tier), None)
        if order is None or (model, tier) in self._tiers:
            if order is not None:
                self._orders[(model, tier)] = order
            raise UnknownTier(model, tier, self.known())
        change = ForceChange(model, tier, order.mode.value, ForceMode.AUTO.value, order, caller)
        self.on_force(change)
        return change

    def restore(self, orders: dict[TierKey, ForceOrder]) -> list[ForceChange]:
        """Make ``orders`` the orders in force (read back from a state store: at start-up, or
        when another worker changed them): the changes made, for the tiers the policy has."""
        changes = []
        for key in set(self._orders) | set(orders):
            order, previous = orders.get(key), self._orders.pop(key, None)
            if previous == order:
                if order is not None:
                    self._orders[key] = order
                continue
            if order is not None:
                self._orders[key] = order
            state = self._tiers.get(key)
            if state is None:
                continue
            before = state.state_name
            self._apply(state, order)
            if order is not None:
                change = ForceChange(key[0], key[1], before, state.state_name, order)
            elif previous is not None:  # handed back: the change names the order that ended
                change = ForceChange(key[0], key[1], before, state.state_name, previous, "state store")
            else:
                continue  # neither before nor now: nothing changed (unreachable, as they differ)
            self._count(state, change)
            changes.append(change)
        return changes

    def expire(self, state: TierState, now: float) -> None:
        """Hand ``state`` back to its breaker: its order's time is up."""
        order = state.order
        if order is None:
            return
        self._orders.pop((state.model_name, state.name), None)
        before = state.state_name
        self._apply(state, None)
        self._count(state, ForceChange(state.model_name, state.name, before, state.state_name, order, EXPIRY))

    def expire_due(self) -> None:
        """Hand back every tier whose order's time is up, traffic or not (a request to a forced
        tier does it as it comes; this is for tiers with none, and for the orders' records)."""
        wall = self.wall()
        for key, order in list(self._orders.items()):
            if order.until is not None and order.until <= wall:
                state = self._tiers.get(key)
                if state is None:  # kept for a tier the policy lacks: dropped, and so from the store
                    del self._orders[key]
                    self.on_force(ForceChange(key[0], key[1], order.mode.value, ForceMode.AUTO.value, order, EXPIRY))
                else:
                    self.expire(state, self.clock())

    def reset(self, model: str, tier: str, caller: str) -> TierState:
        """Close a tier's breaker with a fresh window and no backoff (a forced state is left as it is)."""
        state = self.find(model, tier)
        state.breaker.reset(f"reset by {caller}")
        return state

    def _apply(self, state: TierState, order: ForceOrder | None) -> None:
        if order is None:
            if state.order is not None:
                state.breaker.reset("forced state ended")
            state.order = None
            state.regate()
            return
        if order.mode is ForceMode.FORCED_CLOSED and (state.order is None or state.order.mode is not order.mode):
            state.breaker.reset("forced closed")  # its window shows what happened since
        state.order = order
        state.regate(self._deadline(order))

    def _deadline(self, order: ForceOrder) -> float:
        if order.until is None:
            return NEVER
        return self.clock() + (order.until - self.wall())

    def _count(self, state: TierState, change: ForceChange) -> None:
        to_state = change.to_state if state.order is not None else ForceMode.AUTO.value
        state.forced_changes[to_state] = state.forced_changes.get(to_state, 0) + 1
        self.on_force(change)

    def _successor(self, old: TierState, route: str, settings: BreakerSettings) -> TierState:
        """A tier's state for its new route: a fresh breaker (it judges another upstream now), the
        same series (its counters go on), the same order."""
        state = TierState(old.model_name, old.name, route, self)
        state.outcomes, state.latency, state.transitions = old.outcomes, old.latency, old.transitions
        state.forced_changes = old.forced_changes
        state.attach(self._breaker(state, settings))
        self._apply(state, old.order)
        return state

    def _breaker(self, state: TierState, settings: BreakerSettings) -> CircuitBreaker:
        held = weakref.ref(state)  # not the state itself: state -> breaker -> listener -> state is a cycle

        def listener(breaker: CircuitBreaker, transition: Transition) -> None:
            state = held()
            if state is None or state.retired or breaker is not state.breaker:
                return  # replaced by a reload; a late result on it is nobody's news
            key = (transition.from_state.value, transition.to_state.value)
            state.transitions[key] = state.transitions.get(key, 0) + 1
            self._on_transition(state, transition)
            if key == _OPENED and state.name.endswith(CANARY_SUFFIX):
                self.canaries.breaker_opened(state.model_name, state.route)

        return CircuitBreaker(settings, self.clock, self._rng, listener, self.flying.add)
