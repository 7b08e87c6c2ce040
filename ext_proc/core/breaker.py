"""The circuit breaker of one routed tier: an explicit state machine over a sliding window.

States and transitions, as in Resilience4j:

    closed --(failure rate, slow-call rate or consecutive failures at threshold)--> open
    open --(open period elapsed; observed lazily on the next request)--> half_open
    half_open --(half_open_probes successful probes)--> closed
    half_open --(a failed or slow probe)--> open, with the open period doubled up to the max
    half_open --(a probe held past max_probe_duration: a slow one)--> open, likewise

A probe's slot is held until its response headers come. Without the bound, a few clients that
trickle a request body, or hold a long gRPC stream, would keep a recovered tier half-open (and
its traffic on the next tier) for as long as they liked; Resilience4j bounds its half-open state
the same way (maxWaitDurationInHalfOpenState).

Every admission carries the breaker's ``generation``; a result that comes back after the
breaker has changed state is from another era and is not judged, so a slow call admitted
while closed cannot close a breaker that has since opened, nor steal a probe slot.

A breaker outlives the policy it was built from (core/registry.py): ``reconfigure`` gives it new
thresholds and keeps its state, its backoff and, unless the window's kind or size changed, its
window; a closed breaker is judged against the new thresholds at once.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

from ext_proc.core.admission import Token
from ext_proc.core.clock import Clock
from ext_proc.core.flight import Flight
from ext_proc.core.hosts import CONSECUTIVE, FAILURE_RATE, SLOW_CALL_RATE, host_book
from ext_proc.core.outcomes import FAILURE, LOGGED, OVERLOAD
from ext_proc.core.reasons import BREAKER_OPEN, HALF_OPEN_PROBE
from ext_proc.core.slowness import SlowThreshold
from ext_proc.core.windows import CountWindow, TimeWindow, Window, WindowFigures
from ext_proc.policy import BreakerSettings

REFUSED = 0
ADMITTED = 1
PROBE = 2
"""What ``acquire`` answers: plain ints, because it runs for every request."""

MAX_BACKOFF_LEVEL = 20


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change with the evidence behind it, for logs and metrics."""

    from_state: BreakerState
    to_state: BreakerState
    cause: str
    figures: WindowFigures
    consecutive_failures: int
    open_duration: float
    """For a move to open, the new open period (jitter included); otherwise the last one."""
    probes_in_flight: int


TransitionListener = Callable[["CircuitBreaker", Transition], None]


class BreakerToken:
    """The admission chain's token for a breaker (core/admission.py)."""

    __slots__ = ("admission", "breaker", "generation", "reason")

    def __init__(self, breaker: CircuitBreaker, admission: int, generation: int) -> None:
        self.breaker = breaker
        self.admission = admission
        self.generation = generation
        self.reason = HALF_OPEN_PROBE if admission == PROBE else None

    def record(self, outcome: str, latency: float, started: float) -> None:
        if outcome == LOGGED:
            self.breaker.record_logged(self.admission, self.generation, started)
        else:
            self.breaker.record(
                self.admission, self.generation, outcome == FAILURE, outcome == OVERLOAD, latency, started
            )

    def release(self, started: float) -> None:
        self.breaker.release(self.admission, self.generation, started)


class _RetiredToken:
    """The token a retired breaker hands out, should a stale guard still admit through it:
    recording into a breaker nobody reads is pointless, so it records nothing."""

    __slots__ = ()
    reason: str | None = None

    def record(self, outcome: str, latency: float, started: float) -> None:
        return None

    def release(self, started: float) -> None:
        return None


_RETIRED = _RetiredToken()


def _nothing() -> None:
    return None


def _window_for(settings: BreakerSettings) -> Window:
    if settings.window_calls is not None:
        return CountWindow(settings.window_calls)
    assert settings.window is not None  # the reader sets exactly one of the two
    return TimeWindow(settings.window)


class CircuitBreaker:
    refusal = BREAKER_OPEN
    """The reason a request it refuses gives the tier that takes it (the admission chain's gate)."""

    __slots__ = (
        "_admitted",
        "_consecutive",
        "_level",
        "_listener",
        "_on_flight",
        "_open_duration",
        "_open_until",
        "_probe_starts",
        "_probe_successes",
        "_rng",
        "_state",
        "_window",
        "clock",
        "flight",
        "generation",
        "hosts",
        "judging",
        "settings",
        "slow",
    )

    def __init__(
        self,
        settings: BreakerSettings,
        clock: Clock,
        rng: random.Random | None = None,
        listener: TransitionListener | None = None,
        on_flight: Callable[[CircuitBreaker], None] | None = None,
    ) -> None:
        """``on_flight``: told when the tier admits calls the in-flight sweep must look at."""
        self.settings = settings
        self.clock = clock
        self._rng = rng or random.Random()
        self._listener = listener
        self._window = _window_for(settings)
        self.hosts = host_book(settings)
        """Where the evidence came from: a verdict needs it from enough hosts (core/hosts.py)."""
        self.judging = True
        """No operator's order stands in front (core/forcing.py): the sweep may decide."""
        self._on_flight = on_flight
        self.slow = SlowThreshold(settings.slow_call_duration, settings.slow_call_auto)
        """What counts as slow now: fixed, or learnt (core/slowness.py)."""
        self.flight = Flight(self.slow.value, self._flying)
        """The tier's calls in flight by admission time: overdue ones are slow already (core/flight.py)."""
        self._state = BreakerState.CLOSED
        self.generation = 0
        self._admitted: Token = BreakerToken(self, ADMITTED, 0)
        """The token of every plain admission of this generation: shared, so that the common
        request allocates nothing here."""
        self._consecutive = 0
        self._open_until = 0.0
        self._open_duration = 0.0
        self._level = 0
        self._probe_starts: list[float] = []
        """When each probe in flight was admitted, oldest first."""
        self._probe_successes = 0

    # -- reading -------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state; an elapsed open period or an overdue probe is acted on when observed."""
        if self._state is not BreakerState.CLOSED:
            now = self.clock()
            if self._state is BreakerState.OPEN and now >= self._open_until:
                self._half_open()
            if self._state is BreakerState.HALF_OPEN:
                self._reopen_if_probe_overdue(now)
        return self._state

    def figures(self) -> WindowFigures:
        """What its window holds now."""
        return self._window.figures(self.clock())

    def snapshot(self) -> dict[str, object]:
        """The breaker's figures for the state endpoint (JSON-ready)."""
        state = self.state
        now = self.clock()
        figures = self._window.figures(now)
        return {
            "state": state.value,
            "calls": figures.calls,
            "failures": figures.failures,
            "slow": figures.slow,
            "overloaded": figures.overloaded,
            "failure_rate": round(figures.failure_rate, 4),
            "slow_rate": round(figures.slow_rate, 4),
            "consecutive_failures": self._consecutive,
            "open_duration_s": round(self._open_duration, 3),
            "open_remaining_s": round(max(0.0, self._open_until - now), 3) if state is BreakerState.OPEN else 0.0,
            "probes_in_flight": len(self._probe_starts),
            "probe_successes": self._probe_successes,
            "overdue_in_flight": self.flight.overdue,
            **self.slow.snapshot(),
        }

    # -- reconfiguring ---------------------------------------------------------------------

    def reconfigure(self, settings: BreakerSettings, judge: bool = True) -> None:
        """Judge by ``settings`` from now on. A window of another kind or size starts empty (its
        buckets cannot be re-cut); an open period under way runs its course; a half-open breaker
        that already has the probes the new settings ask for closes (otherwise it would refuse
        every further probe and never close)."""
        old = self.settings
        self.settings = settings
        if (old.window, old.window_calls) != (settings.window, settings.window_calls):
            self._window = _window_for(settings)
            self.hosts = host_book(settings)
        if (old.slow_call_duration, old.slow_call_auto) != (settings.slow_call_duration, settings.slow_call_auto):
            self.slow = SlowThreshold(settings.slow_call_duration, settings.slow_call_auto)
            self.flight.reconfigure(self.slow.value)
        if settings == old:
            return
        if self._state is BreakerState.CLOSED and judge:  # not while an operator's order stands in front
            self._window.advance(self.clock())
            self._judge(self._window)
        elif self._state is BreakerState.HALF_OPEN and self._probe_successes >= settings.half_open_probes:
            self._close()

    def reset(self, cause: str) -> None:
        """Closed, with a fresh window and no backoff: an operator's reset, or the hand-back of a
        forced tier. Results of calls admitted before it are from another era and not judged."""
        if self._state is BreakerState.CLOSED:
            self.generation += 1
            self._admitted = BreakerToken(self, ADMITTED, self.generation)
        else:
            self._move(BreakerState.CLOSED, cause)
        self._window.reset()
        self.hosts = host_book(self.settings)
        self._consecutive = 0
        self._level = 0
        self._open_duration = 0.0

    def note_host(self, host: str, now: float, failed: bool, overloaded: bool, latency: float) -> None:
        """Which host answered a call of this tier at ``now`` (before the call is judged: the
        verdict asks)."""
        if overloaded:
            self.hosts.note_overload(host, now)
        else:
            self.hosts.note(host, now, failed, latency >= self.slow.value)

    @property
    def probing(self) -> bool:
        """Probes are in flight (the sweep keeps watching them until they answer)."""
        return bool(self._probe_starts)

    def judge_in_flight(self, now: float) -> None:
        """The periodic sweep: calls still in flight past slow_call_duration are slow already, and
        a run of them opens a closed breaker (core/flight.py); a probe held past its bound reopens
        a half-open one, whether or not another request comes. Not while an operator's order stands
        in front (``judging`` False): the count is kept, nothing is decided."""
        run = self.flight.sweep(now)
        state = self._state
        judge = self.judging
        if state is BreakerState.CLOSED and judge:
            settings = self.settings
            if run >= settings.min_calls:
                self._open(f"slow calls in flight ({run} in a row past {self.slow.value:g}s)", 0)
            return
        self.flight.reset_run()
        if state is BreakerState.HALF_OPEN and judge:
            self._reopen_if_probe_overdue(now)

    def observe(self, failed: bool, overloaded: bool, latency: float) -> None:
        """Count a call into the window without judging it: a forced-closed tier's outcomes,
        shown (``would_open``) but never acted on."""
        now = self.clock()
        if overloaded:
            self._window.record_overload(now)
            return
        self._window.record(now, failed, latency >= self.slow.value)
        self._consecutive = self._consecutive + 1 if failed else 0

    def would_open(self) -> str | None:
        """The cause the breaker would open with on the evidence in its window, or None."""
        self._window.advance(self.clock())
        return self._verdict(self._window)

    def retire(self) -> None:
        """Its tier is gone (a reload): drop the reference cycles it has (itself <-> its shared
        token, and its flight's call back), so that it is freed by reference counting once the
        streams still holding its tokens end, even frozen out of the collector."""
        self._admitted = _RETIRED
        self.flight.on_bucket = _nothing

    def _flying(self) -> None:
        if self._on_flight is not None:
            self._on_flight(self)

    # -- the hot path --------------------------------------------------------------------

    def admit(self, now: float) -> Token | None:
        """The admission chain's form of ``acquire``."""
        if self._state is BreakerState.CLOSED:
            return self._admitted
        admission = self.acquire(now)
        if admission == ADMITTED:
            return self._admitted
        if admission == REFUSED:
            return None
        return BreakerToken(self, admission, self.generation)

    def acquire(self, now: float) -> int:
        """Admit a request arriving at ``now`` (ADMITTED or PROBE) or refuse it (REFUSED)."""
        state = self._state
        if state is BreakerState.CLOSED:
            return ADMITTED
        if state is BreakerState.OPEN:
            if now < self._open_until:
                return REFUSED
            self._half_open()
        elif self._reopen_if_probe_overdue(now):
            return REFUSED
        starts = self._probe_starts
        if len(starts) + self._probe_successes >= self.settings.half_open_probes:
            return REFUSED
        starts.append(now)
        return PROBE

    def record(
        self, admission: int, generation: int, failed: bool, overloaded: bool, latency: float, started: float
    ) -> None:
        """Judge the result of a call this breaker admitted in ``generation`` at ``started``."""
        if generation != self.generation:
            return
        state = self._state
        if state is BreakerState.CLOSED:
            self._record_closed(failed, overloaded, latency, started + latency)
        elif state is BreakerState.HALF_OPEN and admission == PROBE:
            self._forget_probe(started)
            if overloaded:
                return
            if failed or latency >= self.slow.value:
                self._open("probe slow" if not failed else "probe failed", self._level + 1)
                return
            self._probe_successes += 1
            if self._probe_successes >= self.settings.half_open_probes:
                self._close()

    def record_logged(self, admission: int, generation: int, started: float) -> None:
        """A call whose failed tries the access log judges (``judge_try``): a probe among them failed;
        a closed breaker has nothing to add."""
        if admission == PROBE and generation == self.generation and self._state is BreakerState.HALF_OPEN:
            self._forget_probe(started)
            self._open("probe failed", self._level + 1)

    def judge_try(self, host: str, now: float, latency: float, failed: bool = True) -> None:
        """A try of a call admitted to another tier, with the host that took it: a failed try from
        Envoy's access log, or the answer of a call retried onto this tier (core/tries.py). Into
        the window, judged like any (observed only behind an operator's order). Open or half-open:
        nothing (no call was admitted but probes, judged on their answer)."""
        if self._state is not BreakerState.CLOSED:
            return
        slow = latency >= self.slow.value
        self.hosts.note(host, now, failed, slow)
        if not self.judging:
            self.observe(failed, False, latency)
            return
        window = self._window
        window.record(now, failed, slow)
        self._consecutive = self._consecutive + 1 if failed else 0
        self._judge(window)

    def release(self, admission: int, generation: int, started: float) -> None:
        """Give back an admission whose call never produced a result (stream dropped)."""
        if admission == PROBE and generation == self.generation and self._state is BreakerState.HALF_OPEN:
            self._forget_probe(started)

    def _forget_probe(self, started: float) -> None:
        """Free the slot of the probe admitted at ``started`` (any one, should none match exactly,
        so that a slot can never stay taken)."""
        starts = self._probe_starts
        if started in starts:
            starts.remove(started)
        elif starts:
            starts.pop()

    def _reopen_if_probe_overdue(self, now: float) -> bool:
        starts = self._probe_starts
        if starts and now - starts[0] >= self.settings.max_probe_duration:
            self._open("probe slow (held past max_probe_duration)", self._level + 1)
            return True
        return False

    # -- transitions ---------------------------------------------------------------------

    def _record_closed(self, failed: bool, overloaded: bool, latency: float, now: float) -> None:
        window = self._window
        if overloaded:
            window.record_overload(now)
            return
        slow = self.slow
        window.record(now, failed, latency >= slow.value)
        self._consecutive = self._consecutive + 1 if failed else 0
        if slow.learns and not failed and slow.learn(latency):
            self.flight.reconfigure(slow.value)
        crossed = self._crossed(window)
        if crossed:
            self._open_on(crossed)

    def _judge(self, window: Window) -> None:
        """Open if the evidence so far crosses a threshold."""
        crossed = self._crossed(window)
        if crossed:
            self._open_on(crossed)

    def _open_on(self, crossed: tuple[str, ...]) -> None:
        cause = self._spread(crossed)
        if cause is not None:
            self._open(cause, 0)

    def _verdict(self, window: Window) -> str | None:
        """The threshold the evidence so far crosses, if any, on evidence from enough hosts."""
        crossed = self._crossed(window)
        return self._spread(crossed) if crossed else None

    def _spread(self, crossed: tuple[str, ...]) -> str | None:
        """The first of the crossed thresholds whose evidence comes from enough hosts."""
        now = self.clock()
        for cause in crossed:
            if self.hosts.spread(cause, self.settings, now):
                return cause
        return None

    def _crossed(self, window: Window) -> tuple[str, ...]:
        """The thresholds the evidence in the window crosses, strongest first; () on most calls."""
        settings = self.settings
        found: tuple[str, ...] = ()
        if settings.consecutive_failures and self._consecutive >= settings.consecutive_failures:
            found = (CONSECUTIVE,)
        calls = window.calls
        if calls < settings.min_calls:
            return found
        # Ratios by division, not `failures >= rate * calls`: 0.3 * 10 is 3.0000000000000004
        # in floating point, which would put exactly-at-threshold on the wrong side.
        if window.failures / calls >= settings.failure_rate:
            found += (FAILURE_RATE,)
        if window.slow / calls >= settings.slow_call_rate:
            found += (SLOW_CALL_RATE,)
        return found

    def _open(self, cause: str, level: int) -> None:
        settings = self.settings
        self._level = min(level, MAX_BACKOFF_LEVEL)
        base = min(settings.open_duration * (2**self._level), settings.max_open_duration)
        self._open_duration = base * (1.0 - settings.jitter * self._rng.random())
        self._open_until = self.clock() + self._open_duration
        self._move(BreakerState.OPEN, cause)

    def _half_open(self) -> None:
        self._move(BreakerState.HALF_OPEN, "open period elapsed")

    def _close(self) -> None:
        self.reset("probes succeeded")

    def _move(self, to_state: BreakerState, cause: str) -> None:
        transition = Transition(
            from_state=self._state,
            to_state=to_state,
            cause=cause,
            figures=self._window.figures(self.clock()),
            consecutive_failures=self._consecutive,
            open_duration=self._open_duration,
            probes_in_flight=len(self._probe_starts),
        )
        self._state = to_state
        self.hosts.clear_run()
        self.flight.reset_run()
        self.generation += 1
        self._admitted = BreakerToken(self, ADMITTED, self.generation)
        self._probe_starts = []
        self._probe_successes = 0
        if self._listener is not None:
            self._listener(self, transition)
