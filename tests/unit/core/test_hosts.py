"""Host-aware judgement: failures confined to one host of several never open a model's breaker."""

from __future__ import annotations

import random

import pytest

from ext_proc.core.breaker import BreakerState
from ext_proc.core.clock import ManualClock
from ext_proc.core.guard import Guard
from ext_proc.core.hosts import MAX_HOSTS, NO_HOST, OTHER, CountHostBook, HostBook, TimeHostBook
from ext_proc.core.registry import StateRegistry
from ext_proc.policy import parse_policy

POLICY = """
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: rec-primary}
      - {name: light, route: rec-light}
    breaker: {%s, min_calls: 20, failure_rate: 0.5, jitter: 0%s}
"""
INFER = {":method": "POST", ":path": "/v2/models/recommender/infer"}
HOSTS = ("10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000")


def make(extra: str = ", consecutive_failures: 5", window: str = "window: 10s") -> tuple[Guard, ManualClock]:
    clock = ManualClock()
    return Guard(parse_policy(POLICY % (window, extra)), StateRegistry(clock, random.Random(1))), clock


def answer(guard: Guard, status: int, host: str) -> str:
    ticket = guard.decide(INFER)
    guard.record(ticket, status, None, host=host)
    return ticket.decision.tier_name


def primary_state(guard: Guard) -> BreakerState:
    state = guard.models[0].tiers[0].state
    assert state is not None
    return state.breaker.state


def test_a_run_of_failures_from_one_host_does_not_open() -> None:
    """What Envoy lets through when a bad host comes back from ejection: its fast 503s, back to back."""
    guard, clock = make()
    for host in HOSTS:
        for _ in range(10):
            answer(guard, 200, host)
    for _ in range(50):
        answer(guard, 503, HOSTS[0])
        clock.advance(0.005)
    assert primary_state(guard) is BreakerState.CLOSED
    snapshot = guard.models[0].tiers[0].snapshot()
    hosts = snapshot["hosts"]
    assert isinstance(hosts, dict)
    assert hosts[HOSTS[0]]["failures"] == 50 and hosts[HOSTS[0]]["in_run"]
    assert hosts[HOSTS[1]]["failures"] == 0


def test_one_host_failing_at_a_high_rate_does_not_open() -> None:
    guard, _ = make(", consecutive_failures: 0")
    for _ in range(40):
        answer(guard, 503, HOSTS[0])
        answer(guard, 503, HOSTS[0])
        answer(guard, 200, HOSTS[1])  # overall failure rate 2/3, all from one host
    assert primary_state(guard) is BreakerState.CLOSED


def test_failures_from_two_hosts_open_at_once() -> None:
    guard, _ = make()
    for host in HOSTS:
        answer(guard, 200, host)
    for index in range(5):
        answer(guard, 503, HOSTS[index % 2])
    assert primary_state(guard) is BreakerState.OPEN
    assert answer(guard, 200, HOSTS[2]) == "light"


def test_a_failure_rate_on_every_host_opens() -> None:
    guard, _ = make(", consecutive_failures: 0")
    for index in range(30):
        host = HOSTS[index % 3]
        answer(guard, 503 if index % 5 < 3 else 200, host)
    assert primary_state(guard) is BreakerState.OPEN


def test_a_model_with_one_host_trips_as_before() -> None:
    guard, _ = make()
    for _ in range(5):
        answer(guard, 503, HOSTS[0])
    assert primary_state(guard) is BreakerState.OPEN


def test_without_host_information_the_breaker_judges_as_before() -> None:
    guard, _ = make()
    for _ in range(5):
        answer(guard, 503, NO_HOST)
    assert primary_state(guard) is BreakerState.OPEN


def test_failures_no_host_answered_count_as_one_more_failing_host() -> None:
    """Envoy's `no healthy upstream` after a host failed: two sources of failure, the verdict stands."""
    guard, _ = make()
    for host in HOSTS:
        answer(guard, 200, host)
    answer(guard, 503, HOSTS[0])
    for _ in range(4):
        answer(guard, 503, NO_HOST)
    assert primary_state(guard) is BreakerState.OPEN


def test_failures_no_host_answered_alone_do_not_outvote_healthy_hosts() -> None:
    """Answers without a host (clients gone, an overflow) while three hosts answer well: not the model's fault."""
    guard, _ = make()
    for host in HOSTS:
        answer(guard, 200, host)
    for _ in range(30):
        answer(guard, 503, NO_HOST)
    assert primary_state(guard) is BreakerState.CLOSED


def test_a_count_window_judges_hosts_over_its_own_calls() -> None:
    """A count window has no length: a host's evidence is its calls among the window's, however
    slowly they came."""
    guard, clock = make(window="window_calls: 50")
    for host in HOSTS:
        answer(guard, 200, host)
        clock.advance(15.0)
    for _ in range(10):
        answer(guard, 503, HOSTS[0])
    assert primary_state(guard) is BreakerState.CLOSED
    hosts = guard.models[0].tiers[0].snapshot()["hosts"]
    assert isinstance(hosts, dict)
    assert hosts[HOSTS[1]]["calls"] == 1 and hosts[HOSTS[0]]["failures"] == 10


def test_a_count_window_opens_when_every_host_fails_after_a_long_healthy_spell() -> None:
    """Each host's evidence is its share of the last window_calls calls, not of a longer span: a
    minute of successes before the fault must not hide it (the tier's window holds only failures)."""
    guard, clock = make(", consecutive_failures: 0", window="window_calls: 50")
    for index in range(600):
        answer(guard, 200, HOSTS[index % 3])
        clock.advance(0.1)
    answered = 0
    while primary_state(guard) is BreakerState.CLOSED and answered < 100:
        answer(guard, 503, HOSTS[answered % 3])
        answered += 1
    assert answered == 25  # the tier's window crosses 0.5 at its 25th failure of 50 calls; so does every host


def test_a_count_window_still_spares_a_model_one_bad_host() -> None:
    guard, _ = make(", consecutive_failures: 5", window="window_calls: 50")
    for index in range(300):
        answer(guard, 503 if index % 3 == 0 else 200, HOSTS[index % 3])
    for _ in range(30):
        answer(guard, 503, HOSTS[0])
    assert primary_state(guard) is BreakerState.CLOSED


def test_min_failing_hosts_is_a_setting() -> None:
    guard, _ = make(", consecutive_failures: 5, min_failing_hosts: 3")
    for host in HOSTS:
        answer(guard, 200, host)
    for index in range(8):
        answer(guard, 503, HOSTS[index % 2])
    assert primary_state(guard) is BreakerState.CLOSED
    answer(guard, 503, HOSTS[2])
    assert primary_state(guard) is BreakerState.OPEN


def test_min_failing_hosts_of_one_is_the_old_rule() -> None:
    guard, _ = make(", consecutive_failures: 5, min_failing_hosts: 1")
    for host in HOSTS:
        answer(guard, 200, host)
    for _ in range(5):
        answer(guard, 503, HOSTS[0])
    assert primary_state(guard) is BreakerState.OPEN


def test_hosts_leave_the_count_with_the_window() -> None:
    """A host quiet for a whole window is no longer "seen": one host left serving judges alone."""
    guard, clock = make()
    for host in HOSTS:
        answer(guard, 200, host)
    clock.advance(11.0)
    for _ in range(5):
        answer(guard, 503, HOSTS[0])
    assert primary_state(guard) is BreakerState.OPEN


@pytest.mark.parametrize("book", [TimeHostBook(10.0), CountHostBook(1000)], ids=["time", "count"])
def test_the_book_is_bounded(book: HostBook) -> None:
    for index in range(MAX_HOSTS * 4):
        book.note(f"10.1.{index // 250}.{index % 250}:80", 0.0, True, False)
    tracked = {host for host, figures in book.figures(0.0)}
    assert len(tracked) == MAX_HOSTS and OTHER in tracked and len(book.run) == MAX_HOSTS
    assert dict(book.figures(0.0))[OTHER].calls == MAX_HOSTS * 3 + 1


def test_hosts_gone_quiet_make_room_again() -> None:
    time_book = TimeHostBook(10.0)
    count_book = CountHostBook(MAX_HOSTS)
    for book in (time_book, count_book):
        for index in range(MAX_HOSTS * 2):
            book.note(f"10.1.0.{index}:80", 0.0, False, False)
    time_book.note("10.9.9.9:80", 100.0, False, False)  # the window has passed
    for _ in range(MAX_HOSTS):  # the ring has turned over: the earlier hosts have no call left in it
        count_book.note("10.9.9.9:80", 0.0, False, False)
    for book in (time_book, count_book):
        figures = dict(book.figures(100.0))
        assert figures["10.9.9.9:80"].calls >= 1 and len(figures) <= MAX_HOSTS
    count_book.note("10.8.8.8:80", 0.0, True, False)
    assert dict(count_book.figures(0.0))["10.8.8.8:80"].failures == 1


def test_a_reset_forgets_the_hosts_evidence() -> None:
    """An operator's reset starts a fresh window: old per-host evidence must not decide the next verdict."""
    guard, _ = make()
    for host in HOSTS:
        answer(guard, 503, host)
    state = guard.models[0].tiers[0].state
    assert state is not None
    assert state.breaker.hosts.snapshot(0.0)
    state.breaker.reset("operator reset")
    assert guard.models[0].tiers[0].snapshot()["hosts"] == {}


@pytest.mark.parametrize("book", [TimeHostBook(10.0), CountHostBook(100)], ids=["time", "count"])
def test_a_host_name_too_long_to_be_an_address_counts_as_other(book: HostBook) -> None:
    """Host names come from Envoy and from anything that reaches the log port; they are shown on
    /metrics and /v1/state, so a name no address could have is not kept."""
    book.note("x" * 5000, 0.0, True, False)
    book.note("10.0.0.1:8000", 0.0, False, False)
    assert {host for host, _ in book.figures(0.0)} == {OTHER, "10.0.0.1:8000"}
    assert book.run == set()  # the success cleared the run the long name's failure started
