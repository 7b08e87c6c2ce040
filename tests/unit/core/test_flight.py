"""Slow calls seen while in flight: a hanging tier is judged within about slow_call_duration."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

from ext_proc.core.breaker import BreakerState, Transition
from ext_proc.core.clock import ManualClock
from ext_proc.core.flight import Flight
from ext_proc.core.guard import Guard, Ticket
from ext_proc.core.registry import StateRegistry, TierState
from ext_proc.policy import parse_policy

POLICY = """
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: rec-primary}
      - {name: light, route: rec-light}
    breaker: {slow_call_duration: 500ms, consecutive_failures: 5, min_calls: 20, jitter: 0,
              half_open_probes: 2, open_duration: 1s, max_probe_duration: 800ms}
"""
INFER = {":method": "POST", ":path": "/v2/models/recommender/infer"}
RATE = 200.0
Latency = Callable[[int, Ticket], tuple[float, int]]
"""(request index, its ticket) -> (seconds until the answer, its status)."""
SWEEP = 0.05


class World:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.opened: list[tuple[float, str]] = []
        self.registry = StateRegistry(self.clock, random.Random(1), on_transition=self._note)
        self.guard = Guard(parse_policy(POLICY), self.registry)
        self.pending: list[tuple[float, Ticket, int]] = []
        self.next_sweep = self.clock() + SWEEP

    def _note(self, tier: TierState, transition: Transition) -> None:
        if tier.name == "primary" and transition.to_state is BreakerState.OPEN:
            self.opened.append((self.clock(), transition.cause))

    @property
    def state(self) -> TierState:
        state = self.guard.models[0].tiers[0].state
        assert state is not None
        return state

    @property
    def primary(self) -> BreakerState:
        return self.state.breaker.state

    def run(self, seconds: float, latency: Latency) -> None:
        """Requests at RATE, answers after their latency, a sweep every SWEEP, on the fake clock."""
        end = self.clock() + seconds
        index = 0
        while self.clock() < end:
            ticket = self.guard.decide(INFER)
            delay, status = latency(index, ticket)
            self.pending.append((self.clock() + delay, ticket, status))
            index += 1
            self.clock.advance(1.0 / RATE)
            now = self.clock()
            for item in [p for p in self.pending if p[0] <= now]:
                self.pending.remove(item)
                self.guard.record(item[1], item[2], None, answered_at=item[0])
            if now >= self.next_sweep:
                self.registry.judge_in_flight()
                self.next_sweep += SWEEP


def healthy(index: int, ticket: Ticket) -> tuple[float, int]:
    return 0.2, 200


def test_a_hanging_model_is_judged_while_its_calls_hang() -> None:
    world = World()
    world.run(2.0, healthy)
    onset = world.clock()

    def hanging(index: int, ticket: Ticket) -> tuple[float, int]:
        return (3.0, 503) if ticket.decision.tier_name == "primary" else (0.04, 200)

    world.run(2.0, hanging)
    assert world.opened, "the hanging primary was never judged"
    detected, cause = world.opened[0]
    assert cause.startswith("slow calls in flight"), cause
    assert detected - onset <= 0.7, detected - onset  # 0.5 s, a bucket or two, a sweep
    state = world.guard.models[0].tiers[0].state
    assert state is not None and state.breaker.flight.overdue > 0


def test_one_hanging_host_of_three_never_opens_the_breaker() -> None:
    """Round robin interleaves the healthy hosts' answers: no run of overdue calls forms."""
    world = World()

    def one_host_hangs(index: int, ticket: Ticket) -> tuple[float, int]:
        return (1.0, 504) if index % 3 == 0 else (0.2, 200)

    world.run(10.0, one_host_hangs)
    assert world.primary is BreakerState.CLOSED and not world.opened


def test_a_probe_held_past_its_bound_reopens_without_another_request() -> None:
    world = World()
    for _ in range(5):
        world.guard.record(world.guard.decide(INFER), 503, None)
    assert world.primary is BreakerState.OPEN
    world.clock.advance(1.1)
    probe = world.guard.decide(INFER)
    assert probe.decision.reason == "half_open_probe"
    world.clock.advance(0.9)
    state = world.guard.models[0].tiers[0].state
    assert state is not None
    world.registry.judge_in_flight()
    assert state.breaker._state is BreakerState.OPEN  # the sweep acted: nobody read the state


def test_an_operators_order_keeps_the_sweep_from_deciding() -> None:
    world = World()
    state = world.guard.models[0].tiers[0].state
    assert state is not None
    state.breaker.judging = False
    world.run(1.5, lambda index, ticket: (3.0, 200))
    assert state.breaker._state is BreakerState.CLOSED
    assert state.breaker.flight.overdue > 0


def test_idle_tiers_leave_the_sweep() -> None:
    world = World()
    world.run(0.5, healthy)
    assert world.registry.flying
    world.clock.advance(2.0)
    for item in world.pending:
        world.guard.record(item[1], item[2], None)
    world.registry.judge_in_flight()
    assert not world.registry.flying
    assert world.registry.judge_in_flight() == 0


def test_the_ring_survives_long_gaps_and_stale_times() -> None:
    buckets: list[int] = []
    flight = Flight(0.5, lambda: buckets.append(1))
    flight.admit(10.0)
    flight.admit(9.0)  # an older time counts in the newest bucket
    assert len(buckets) == 1 and flight.inflight == 2
    flight.answer(10.0, 10.1)
    assert flight.sweep(11.0) == 0  # two admitted, one answered in time: no run
    assert flight.overdue == 1
    flight.admit(5000.0)  # far later: the ring starts over
    assert len(buckets) == 2
    assert flight.sweep(5001.0) == 1
    assert flight.swept


def test_a_new_duration_keeps_the_count_of_calls_in_flight() -> None:
    """A reload that changes slow_call_duration must not lose the calls in flight, nor count them
    twice when they answer."""
    world = World()
    for _ in range(3):
        world.guard.decide(INFER)
    state = world.state
    state.breaker.reconfigure(replace(state.breaker.settings, slow_call_duration=2.0))
    assert state.inflight == 3 and state.flight.duration == 2.0


def test_a_short_stall_is_not_a_verdict() -> None:
    """A pause of a few calls (fewer than min_calls) past the duration is not a hanging model."""
    world = World()

    def stall(index: int, ticket: Ticket) -> tuple[float, int]:
        return (0.8, 200) if 100 <= index < 110 else (0.2, 200)

    world.run(2.0, stall)
    assert world.primary is BreakerState.CLOSED and not world.opened


def test_calls_abandoned_in_time_do_not_break_a_run() -> None:
    """A client that sends and abandons calls cannot keep a hanging model's breaker closed."""
    world = World()
    world.run(1.0, healthy)
    onset = world.clock()

    def hanging(index: int, ticket: Ticket) -> tuple[float, int]:
        if index % 2:
            world.guard.release(ticket)  # the client went away at once
            return 99.0, 200
        return (3.0, 503) if ticket.decision.tier_name == "primary" else (0.04, 200)

    world.run(2.0, hanging)
    assert world.opened and world.opened[0][1].startswith("slow calls in flight")
    assert world.opened[0][0] - onset <= 0.8


def test_a_dropped_call_leaves_its_bucket() -> None:
    flight = Flight(0.5)
    flight.admit(10.0)
    flight.admit(10.0)
    flight.drop(10.0)
    assert flight.sweep(11.0) == 1 and flight.overdue == 1
    flight.drop(10.0)  # its bucket is judged: too late to change it
    assert flight.overdue == 1


def test_a_failing_tier_does_not_starve_the_sweep_of_the_others() -> None:
    """A listener that raises on one tier's opening: every other hanging tier is still judged in
    the same sweep, and the failure is still raised for the server to log."""
    clock = ManualClock()
    opened: list[str] = []

    def note(tier: TierState, transition: Transition) -> None:
        if transition.to_state is BreakerState.OPEN:
            opened.append(tier.model_name)
            raise RuntimeError("a listener's bug")

    registry = StateRegistry(clock, random.Random(1), on_transition=note)
    two = POLICY + POLICY.split("models:\n", 1)[1].replace("recommender", "ranker")
    guard = Guard(parse_policy(two), registry)
    for model in ("recommender", "ranker"):
        for _ in range(30):
            guard.decide({":method": "POST", ":path": f"/v2/models/{model}/infer"})
    clock.advance(1.0)
    try:
        registry.judge_in_flight()
    except RuntimeError:
        pass
    else:
        raise AssertionError("the listener's failure was swallowed")
    assert sorted(opened) == ["ranker", "recommender"]
