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

Counts of requests per (model, tier, reason) live here too, for the same reason.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Callable

from ext_proc.core.breaker import CircuitBreaker, Transition
from ext_proc.core.clock import Clock, monotonic
from ext_proc.core.outcomes import OUTCOMES
from ext_proc.core.reasons import UNMATCHED
from ext_proc.core.stats import LATENCY_BUCKETS, Counter, Histogram
from ext_proc.policy import BreakerSettings

TierKey = tuple[str, str]
"""(model, tier)."""


class TierState:
    """One routed tier's breaker and figures."""

    __slots__ = (
        "__weakref__",
        "breaker",
        "inflight",
        "latency",
        "mark",
        "model_name",
        "name",
        "outcomes",
        "route",
        "transitions",
    )

    def __init__(self, model_name: str, name: str, route: str) -> None:
        self.model_name = model_name
        self.name = name
        self.route = route
        self.inflight = 0
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.latency = Histogram(LATENCY_BUCKETS)
        self.transitions: dict[tuple[str, str], int] = {}
        """(from state, to state) -> count."""
        self.mark = 0
        """The last build (``StateRegistry.begin``) that asked for this state."""
        self.breaker: CircuitBreaker  # set by the registry, which owns the clock and the listener


NO_STATE = TierState("", "", "")
"""The null state of decisions that record nothing (unmatched, answered directly, refused): their
tickets hold no tokens and are settled from the start, so it is never written."""

TransitionSink = Callable[[TierState, Transition], None]


def _ignore(_tier: TierState, _transition: Transition) -> None:
    return None


class StateRegistry:
    """Every tier's state and every request counter, kept across policies."""

    def __init__(
        self, clock: Clock = monotonic, rng: random.Random | None = None, on_transition: TransitionSink = _ignore
    ) -> None:
        self.clock = clock
        self._rng = rng or random.Random()
        self._on_transition = on_transition
        self._tiers: dict[TierKey, TierState] = {}
        self._counters: dict[tuple[str, str, str], Counter] = {}
        self._replaced: list[CircuitBreaker] = []
        """Breakers a build replaced (a new route), retired when that build's guard goes live."""
        self.build = 0
        """Bumped by each guard built over this registry; what a build asks for is marked with it,
        so that ``sweep`` knows what the guard that goes live no longer has without listing it."""
        self.unmatched = self.counter(UNMATCHED, UNMATCHED, UNMATCHED)

    def begin(self) -> int:
        """Start building a guard: the number its states and counters are marked with."""
        self.build += 1
        self.unmatched.mark = self.build
        return self.build

    def tier(self, model: str, tier: str, route: str, settings: BreakerSettings) -> TierState:
        """The state of a routed tier: the one held, reconfigured, or a fresh one (see the module's rule)."""
        key = (model, tier)
        state = self._tiers.get(key)
        if state is None:
            state = self._tiers[key] = TierState(model, tier, route)
            state.breaker = self._breaker(state, settings)
        elif state.route != route:
            state.route = route
            self._replaced.append(state.breaker)  # the live guard may still admit through it
            state.breaker = self._breaker(state, settings)
        else:
            state.breaker.reconfigure(settings)
        state.mark = self.build
        return state

    def get(self, model: str, tier: str) -> TierState:
        """The state of a routed tier of the live policy (KeyError if there is none)."""
        return self._tiers[(model, tier)]

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
        self._tiers = kept
        for breaker in self._replaced:
            breaker.retire()
        self._replaced = []
        self._counters = {key: count for key, count in self._counters.items() if count.mark == build}

    def tiers(self) -> list[TierState]:
        return list(self._tiers.values())

    def _breaker(self, state: TierState, settings: BreakerSettings) -> CircuitBreaker:
        held = weakref.ref(state)  # not the state itself: state -> breaker -> listener -> state is a cycle

        def listener(breaker: CircuitBreaker, transition: Transition) -> None:
            state = held()
            if state is None or breaker is not state.breaker:
                return  # replaced by a reload; a late result on it is nobody's news
            key = (transition.from_state.value, transition.to_state.value)
            state.transitions[key] = state.transitions.get(key, 0) + 1
            self._on_transition(state, transition)

        return CircuitBreaker(settings, self.clock, self._rng, listener)
