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
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

from ext_proc.core.clock import Clock
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


class CircuitBreaker:
    __slots__ = (
        "_consecutive",
        "_level",
        "_listener",
        "_open_duration",
        "_open_until",
        "_probe_starts",
        "_probe_successes",
        "_rng",
        "_state",
        "_window",
        "clock",
        "generation",
        "settings",
    )

    def __init__(
        self,
        settings: BreakerSettings,
        clock: Clock,
        rng: random.Random | None = None,
        listener: TransitionListener | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._rng = rng or random.Random()
        self._listener = listener
        self._window: Window = (
            CountWindow(settings.window_calls)
            if settings.window_calls is not None
            else TimeWindow(settings.window or 10.0)
        )
        self._state = BreakerState.CLOSED
        self.generation = 0
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
        }

    # -- the hot path --------------------------------------------------------------------

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
            self._record_closed(failed, overloaded, latency)
        elif state is BreakerState.HALF_OPEN and admission == PROBE:
            self._forget_probe(started)
            if overloaded:
                return
            if failed or latency >= self.settings.slow_call_duration:
                self._open("probe slow" if not failed else "probe failed", self._level + 1)
                return
            self._probe_successes += 1
            if self._probe_successes >= self.settings.half_open_probes:
                self._close()

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

    def _record_closed(self, failed: bool, overloaded: bool, latency: float) -> None:
        now = self.clock()
        window = self._window
        if overloaded:
            window.record_overload(now)
            return
        settings = self.settings
        window.record(now, failed, latency >= settings.slow_call_duration)
        if failed:
            self._consecutive += 1
            if settings.consecutive_failures and self._consecutive >= settings.consecutive_failures:
                self._open("consecutive_failures", 0)
                return
        else:
            self._consecutive = 0
        calls = window.calls
        if calls < settings.min_calls:
            return
        # Ratios by division, not `failures >= rate * calls`: 0.3 * 10 is 3.0000000000000004
        # in floating point, which would put exactly-at-threshold on the wrong side.
        if window.failures / calls >= settings.failure_rate:
            self._open("failure_rate", 0)
        elif window.slow / calls >= settings.slow_call_rate:
            self._open("slow_call_rate", 0)

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
        self._move(BreakerState.CLOSED, "probes succeeded")
        self._window.reset()
        self._consecutive = 0
        self._level = 0
        self._open_duration = 0.0

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
        self.generation += 1
        self._probe_starts = []
        self._probe_successes = 0
        if self._listener is not None:
            self._listener(self, transition)
