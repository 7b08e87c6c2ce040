"""The breaker state machine, stepped on a fake clock: every transition and its boundaries."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from ext_proc.core.breaker import ADMITTED, PROBE, REFUSED, BreakerState, CircuitBreaker, Transition
from ext_proc.core.clock import ManualClock
from ext_proc.policy import BreakerSettings

BASE = BreakerSettings(
    window=10.0,
    min_calls=10,
    failure_rate=0.5,
    slow_call_duration=1.0,
    slow_call_rate=0.8,
    consecutive_failures=0,
    open_duration=5.0,
    max_open_duration=40.0,
    half_open_probes=3,
    jitter=0.0,
)


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def make(
    settings: BreakerSettings = BASE, rng: random.Random | None = None
) -> tuple[CircuitBreaker, ManualClock, list[Transition]]:
    clock = ManualClock()
    seen: list[Transition] = []
    breaker = CircuitBreaker(settings, clock, rng or FixedRandom(0.0), lambda _b, t: seen.append(t))
    return breaker, clock, seen


def call(breaker: CircuitBreaker, failed: bool = False, latency: float = 0.1, overloaded: bool = False) -> int:
    admission = breaker.acquire(breaker.clock())
    if admission != REFUSED:
        breaker.record(admission, breaker.generation, failed, overloaded, latency, breaker.clock())
    return admission


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """Read through a function, so the type checker does not narrow a property across calls."""
    return breaker.state


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.settings.min_calls):
        call(breaker, failed=True)
    assert state_of(breaker) is BreakerState.OPEN


# -- closed -> open --------------------------------------------------------------------------


def test_no_verdict_below_min_calls() -> None:
    breaker, _, _ = make()
    for _ in range(9):
        call(breaker, failed=True)
    assert state_of(breaker) is BreakerState.CLOSED


def test_opens_at_exactly_min_calls_and_threshold() -> None:
    breaker, _, seen = make()
    for _ in range(5):
        call(breaker, failed=False)
    for _ in range(4):
        call(breaker, failed=True)
    assert state_of(breaker) is BreakerState.CLOSED  # 9 calls: below min_calls
    call(breaker, failed=True)  # 10 calls, 5 failures: exactly 0.5
    assert state_of(breaker) is BreakerState.OPEN
    assert [(t.from_state, t.to_state, t.cause) for t in seen] == [
        (BreakerState.CLOSED, BreakerState.OPEN, "failure_rate")
    ]
    assert seen[0].figures.calls == 10 and seen[0].figures.failures == 5


def test_stays_closed_just_below_threshold() -> None:
    breaker, _, _ = make()
    for _ in range(6):
        call(breaker, failed=False)
    for _ in range(4):
        call(breaker, failed=True)  # 4/10 < 0.5
    assert state_of(breaker) is BreakerState.CLOSED


def test_threshold_compared_exactly_for_awkward_ratios() -> None:
    # 0.3 * 10 is 3.0000000000000004 in floating point; 3 failures of 10 must still open.
    breaker, _, _ = make(replace(BASE, failure_rate=0.3))
    for _ in range(7):
        call(breaker)
    for _ in range(3):
        call(breaker, failed=True)
    assert state_of(breaker) is BreakerState.OPEN


def test_slow_call_rate_opens() -> None:
    breaker, _, seen = make()
    for _ in range(2):
        call(breaker, latency=0.1)
    for _ in range(8):
        call(breaker, latency=1.0)  # exactly slow_call_duration counts as slow
    assert state_of(breaker) is BreakerState.OPEN
    assert seen[-1].cause == "slow_call_rate"


def test_slow_rate_just_below_threshold_stays_closed() -> None:
    breaker, _, _ = make()
    for _ in range(3):
        call(breaker, latency=0.1)
    for _ in range(7):
        call(breaker, latency=0.999)  # below slow_call_duration: not slow
    for _ in range(7):
        call(breaker, latency=2.0)
    # 7 slow of 17 calls
    assert state_of(breaker) is BreakerState.CLOSED


def test_consecutive_failures_open_before_min_calls() -> None:
    breaker, _, seen = make(replace(BASE, consecutive_failures=3))
    call(breaker, failed=True)
    call(breaker, failed=True)
    call(breaker, failed=False)  # resets the run
    call(breaker, failed=True)
    call(breaker, failed=True)
    assert state_of(breaker) is BreakerState.CLOSED
    call(breaker, failed=True)
    assert state_of(breaker) is BreakerState.OPEN
    assert seen[-1].cause == "consecutive_failures"
    assert seen[-1].consecutive_failures == 3


def test_overload_is_neither_failure_nor_call() -> None:
    breaker, _clock, _ = make(replace(BASE, consecutive_failures=2))
    for _ in range(30):
        call(breaker, overloaded=True)
    assert state_of(breaker) is BreakerState.CLOSED
    snapshot = breaker.snapshot()
    assert snapshot["calls"] == 0 and snapshot["overloaded"] == 30


def test_time_window_forgets_old_failures() -> None:
    breaker, clock, _ = make()
    for _ in range(9):
        call(breaker, failed=True)
    clock.advance(10.5)  # every bucket of those failures has slid out
    call(breaker, failed=True)
    assert state_of(breaker) is BreakerState.CLOSED
    assert breaker.snapshot()["calls"] == 1


def test_count_window_judges_last_n_calls() -> None:
    settings = replace(BASE, window=None, window_calls=10, min_calls=10)
    breaker, _, _ = make(settings)
    for _ in range(4):
        call(breaker, failed=True)
    for _ in range(10):
        call(breaker)  # pushes the four failures out of the ring
    assert breaker.snapshot()["failures"] == 0
    for _ in range(4):
        call(breaker, failed=True)
    assert state_of(breaker) is BreakerState.CLOSED  # 4 of last 10
    call(breaker, failed=True)
    assert state_of(breaker) is BreakerState.OPEN  # 5 of last 10


# -- open -----------------------------------------------------------------------------------


def test_open_refuses_until_the_period_elapses() -> None:
    breaker, clock, _ = make()
    trip(breaker)
    clock.advance(4.999)
    assert breaker.acquire(breaker.clock()) == REFUSED
    clock.advance(0.001)
    assert breaker.acquire(breaker.clock()) == PROBE
    assert state_of(breaker) is BreakerState.HALF_OPEN


def test_jitter_shortens_open_period_within_bound() -> None:
    breaker, clock, seen = make(replace(BASE, jitter=0.1), rng=FixedRandom(1.0))
    trip(breaker)
    assert seen[-1].open_duration == pytest.approx(4.5)
    clock.advance(4.5)
    assert breaker.acquire(breaker.clock()) == PROBE


def test_results_from_before_opening_are_not_judged() -> None:
    breaker, clock, _ = make()
    admission, generation = breaker.acquire(breaker.clock()), breaker.generation
    trip(breaker)
    clock.advance(5.0)
    breaker.acquire(breaker.clock())  # half-open now, one probe out
    breaker.record(admission, generation, False, False, 0.1, breaker.clock())  # the old call succeeds late
    snapshot = breaker.snapshot()
    assert snapshot["state"] == "half_open" and snapshot["probe_successes"] == 0


# -- half-open -------------------------------------------------------------------------------


def half_open(settings: BreakerSettings = BASE) -> tuple[CircuitBreaker, ManualClock, list[Transition]]:
    breaker, clock, seen = make(settings)
    trip(breaker)
    clock.advance(settings.open_duration)
    return breaker, clock, seen


def test_half_open_admits_at_most_the_probe_count() -> None:
    breaker, _, _ = half_open()
    assert [breaker.acquire(breaker.clock()) for _ in range(5)] == [PROBE, PROBE, PROBE, REFUSED, REFUSED]


def test_probes_all_succeeding_close_and_reset() -> None:
    breaker, _, seen = half_open()
    admissions = [(breaker.acquire(breaker.clock()), breaker.generation) for _ in range(3)]
    for admission, generation in admissions[:2]:
        breaker.record(admission, generation, False, False, 0.1, breaker.clock())
    assert state_of(breaker) is BreakerState.HALF_OPEN
    assert breaker.acquire(breaker.clock()) == REFUSED  # two done + one in flight = three probes
    breaker.record(*admissions[2], False, False, 0.1, breaker.clock())
    assert state_of(breaker) is BreakerState.CLOSED
    assert seen[-1].cause == "probes succeeded"
    assert breaker.snapshot()["calls"] == 0  # a fresh window after closing
    assert breaker.acquire(breaker.clock()) == ADMITTED


def test_failed_probe_reopens_with_doubled_period() -> None:
    breaker, clock, seen = half_open()
    admission, generation = breaker.acquire(breaker.clock()), breaker.generation
    breaker.record(admission, generation, True, False, 0.1, breaker.clock())
    assert state_of(breaker) is BreakerState.OPEN
    assert seen[-1].cause == "probe failed" and seen[-1].open_duration == 10.0
    clock.advance(9.9)
    assert breaker.acquire(breaker.clock()) == REFUSED
    clock.advance(0.1)
    assert breaker.acquire(breaker.clock()) == PROBE


def test_slow_probe_reopens() -> None:
    breaker, _, seen = half_open()
    admission, generation = breaker.acquire(breaker.clock()), breaker.generation
    breaker.record(admission, generation, False, False, 1.5, breaker.clock())
    assert state_of(breaker) is BreakerState.OPEN and seen[-1].cause == "probe slow"


def test_open_period_doubles_up_to_the_max_then_resets_on_close() -> None:
    breaker, clock, seen = make()
    trip(breaker)
    periods = [seen[-1].open_duration]
    for _ in range(5):
        clock.advance(periods[-1])
        breaker.record(breaker.acquire(breaker.clock()), breaker.generation, True, False, 0.1, breaker.clock())
        periods.append(seen[-1].open_duration)
    assert periods == [5.0, 10.0, 20.0, 40.0, 40.0, 40.0]
    clock.advance(40.0)
    for _ in range(3):
        breaker.record(breaker.acquire(breaker.clock()), breaker.generation, False, False, 0.1, breaker.clock())
    assert state_of(breaker) is BreakerState.CLOSED
    trip(breaker)
    assert seen[-1].open_duration == 5.0


def test_released_probe_frees_its_slot() -> None:
    breaker, _, _ = half_open()
    held = [(breaker.acquire(breaker.clock()), breaker.generation) for _ in range(3)]
    assert breaker.acquire(breaker.clock()) == REFUSED
    breaker.release(*held[0], breaker.clock())  # the stream was dropped before a response
    assert breaker.snapshot()["probes_in_flight"] == 2
    assert breaker.acquire(breaker.clock()) == PROBE


def test_overloaded_probe_frees_its_slot_without_verdict() -> None:
    breaker, _, _ = half_open()
    admission, generation = breaker.acquire(breaker.clock()), breaker.generation
    breaker.record(admission, generation, False, True, 0.1, breaker.clock())
    snapshot = breaker.snapshot()
    assert snapshot["state"] == "half_open"
    assert snapshot["probes_in_flight"] == 0 and snapshot["probe_successes"] == 0


def test_release_of_a_stale_probe_does_not_touch_the_next_cycle() -> None:
    breaker, clock, _ = half_open()
    stale = (breaker.acquire(breaker.clock()), breaker.generation)
    failing = (breaker.acquire(breaker.clock()), breaker.generation)
    breaker.record(*failing, True, False, 0.1, breaker.clock())  # reopens
    clock.advance(10.0)
    fresh = [breaker.acquire(breaker.clock()) for _ in range(3)]
    breaker.release(*stale, breaker.clock())
    assert fresh == [PROBE, PROBE, PROBE]
    assert breaker.snapshot()["probes_in_flight"] == 3
    assert breaker.acquire(breaker.clock()) == REFUSED


def test_non_probe_result_in_half_open_is_ignored() -> None:
    breaker, _, _ = half_open()
    breaker.acquire(breaker.clock())
    breaker.record(ADMITTED, breaker.generation, True, False, 0.1, breaker.clock())
    assert state_of(breaker) is BreakerState.HALF_OPEN


def test_every_transition_is_reported_in_order() -> None:
    breaker, clock, seen = make()
    trip(breaker)
    clock.advance(5.0)
    breaker.record(breaker.acquire(breaker.clock()), breaker.generation, True, False, 0.1, breaker.clock())
    clock.advance(10.0)
    for _ in range(3):
        breaker.record(breaker.acquire(breaker.clock()), breaker.generation, False, False, 0.1, breaker.clock())
    assert [(t.from_state.value, t.to_state.value) for t in seen] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert breaker.generation == 5


# -- half_open: the probe bound ---------------------------------------------------------------

BOUNDED = replace(BASE, max_probe_duration=2.0)


def test_probes_held_past_the_bound_count_as_slow_and_reopen() -> None:
    breaker, clock, seen = half_open(BOUNDED)
    held = [(breaker.acquire(clock()), breaker.generation, clock()) for _ in range(3)]
    assert [h[0] for h in held] == [PROBE] * 3
    clock.advance(1.9)
    assert breaker.acquire(clock()) == REFUSED
    assert state_of(breaker) is BreakerState.HALF_OPEN
    clock.advance(0.1)
    assert breaker.acquire(clock()) == REFUSED
    assert state_of(breaker) is BreakerState.OPEN
    assert seen[-1].to_state is BreakerState.OPEN and "max_probe_duration" in seen[-1].cause
    assert seen[-1].open_duration == 10.0  # a failed probe: the open period doubles
    for admission, generation, started in held:  # the held probes answer at last: not judged
        breaker.record(admission, generation, False, False, 0.1, started)
    assert state_of(breaker) is BreakerState.OPEN
    clock.advance(10.0)
    assert [breaker.acquire(clock()) for _ in range(4)] == [PROBE, PROBE, PROBE, REFUSED]


def test_a_held_probe_is_noticed_on_a_state_read_too() -> None:
    breaker, clock, _ = half_open(BOUNDED)
    assert breaker.acquire(clock()) == PROBE
    clock.advance(2.0)
    assert state_of(breaker) is BreakerState.OPEN


def test_a_probe_that_answers_in_time_takes_its_start_with_it() -> None:
    breaker, clock, _ = half_open(BOUNDED)
    first = (breaker.acquire(clock()), breaker.generation, clock())
    clock.advance(1.0)
    second = (breaker.acquire(clock()), breaker.generation, clock())
    assert first[0] == second[0] == PROBE
    clock.advance(0.5)
    admission, generation, started = first
    breaker.record(admission, generation, False, False, 0.5, started)  # in time, a success
    clock.advance(1.0)  # past the first probe's bound, not the second's
    assert breaker.acquire(clock()) == PROBE
    assert state_of(breaker) is BreakerState.HALF_OPEN
    clock.advance(0.5)  # the second probe is overdue now
    assert state_of(breaker) is BreakerState.OPEN
    assert second[1] != breaker.generation
