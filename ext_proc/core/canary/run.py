"""One canary's life: its state, its weight, its ramp, the operators' orders, and its evidence.

States (README, "Canary gating"): ``active`` (at the policy's weight, no ramp), ``ramping`` (the
weight rises by ``ramp.step`` every ``ramp.every`` while healthy), ``complete`` (at the ramp's
``max``, healthy), ``promoted`` (an operator sent every key to it), ``aborted`` (every key back to
stable, by a guardrail or an operator, until an operator resumes it). An operator's order
(abort, promote, a weight) is kept in the state store, so it outlives a restart; resuming drops
it and starts over at the policy's weight with fresh evidence. Every change goes to the sink
with the evidence behind it.

Pure: time from the injected clock, draws from the injected generator, no I/O.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ext_proc.core.canary.buckets import Buckets
from ext_proc.core.canary.evidence import Evidence
from ext_proc.core.clock import Clock
from ext_proc.core.outcomes import FAILURE, LOGGED, SUCCESS
from ext_proc.policy import BUCKETS, Canary
from ext_proc.protocol.headers import REQUEST_ID

NEVER = float("inf")
JUDGE = "modelguard"
"""The caller of an abort that a guardrail decided."""
BREAKER_OPEN = "canary breaker open"
"""The cause of an abort because the canary route's breaker opened."""


class CanaryState(enum.Enum):
    ACTIVE = "active"
    RAMPING = "ramping"
    COMPLETE = "complete"
    PROMOTED = "promoted"
    ABORTED = "aborted"


class Action(enum.Enum):
    ABORT = "abort"
    PROMOTE = "promote"
    WEIGHT = "weight"


@dataclass(frozen=True, slots=True)
class CanaryOrder:
    """What an operator (or a guardrail) decided for a model's canary: kept in the state store,
    for the canary of that ``route`` only (a new version starts without it)."""

    action: Action
    route: str
    reason: str
    caller: str
    since: float
    """Wall-clock seconds."""
    weight: int = 0
    """Buckets, for ``weight``."""

    def to_json(self) -> dict[str, object]:
        return {
            "action": self.action.value,
            "route": self.route,
            "weight": self.weight / BUCKETS,
            "reason": self.reason,
            "caller": self.caller,
            "since": self.since,
        }


@dataclass(frozen=True, slots=True)
class CanaryChange:
    """A canary's state or weight moved: what logs, metrics and watchers get."""

    model: str
    route: str
    from_state: str
    to_state: str
    from_weight: float
    to_weight: float
    cause: str
    caller: str
    order: CanaryOrder | None = None
    """The order in force after the change (a guardrail's abort is one, for the store to keep)."""
    evidence: dict[str, object] = field(default_factory=dict)
    verdict: bool = False
    """The run's own abort (a guardrail, or its breaker), new: for the store to keep."""


ChangeSink = Callable[[CanaryChange], None]

STABLE, CANARY = False, True
_JUDGED = (FAILURE, SUCCESS, LOGGED)
_FAILED = (FAILURE, LOGGED)


class _StableToken:
    """Records a stable call into the evidence it was admitted under."""

    __slots__ = ("evidence", "run")
    reason: str | None = None

    def __init__(self, run: CanaryRun, evidence: Evidence) -> None:
        self.run = run
        self.evidence = evidence

    def record(self, outcome: str, latency: float, started: float) -> None:
        if outcome in _JUDGED:  # overload (429) says "slow down", not "worse"
            self.evidence.stable_outcome(outcome in _FAILED, latency, started + latency)

    def release(self, started: float) -> None:
        return None


class _CanaryToken(_StableToken):
    __slots__ = ()

    def record(self, outcome: str, latency: float, started: float) -> None:
        if outcome in _JUDGED:
            self.run.judge(self.evidence, outcome in _FAILED, latency, started + latency)


class CanaryRun:
    """The canary of one model, for one route (a new route is a new run)."""

    __slots__ = (
        "buckets",
        "canary_token",
        "clock",
        "evidence",
        "exclude_header",
        "excluded",
        "mark",
        "model",
        "next_step",
        "order",
        "retired",
        "route",
        "settings",
        "since",
        "sink",
        "stable_token",
        "state",
        "sticky_header",
        "wall",
        "weight",
    )

    def __init__(
        self, model: str, settings: Canary, clock: Clock, wall: Clock, rng: random.Random, sink: ChangeSink
    ) -> None:
        self.model = model
        self.route = settings.route
        self.clock = clock
        self.wall = wall
        self.sink = sink
        self.buckets = Buckets(model, settings.route, rng)
        self.order: CanaryOrder | None = None
        self.mark = 0
        self.retired = False
        """Replaced by a run for another route, or dropped by a reload: late results judge nothing."""
        self._configure(settings)
        self._start()

    # -- the hot path --------------------------------------------------------------------

    def arm(self, headers: Mapping[str, str], now: float) -> bool | None:
        """CANARY or STABLE for a request; None when it is no evidence (excluded, or aborted)."""
        if now >= self.next_step:
            self._step(now)
        threshold = self.weight
        if threshold <= 0:
            return None
        if self.exclude_header is not None and headers.get(self.exclude_header) in self.excluded:
            return None
        if threshold >= BUCKETS:
            return CANARY
        key = headers.get(self.sticky_header)
        if key is None:
            key = headers.get(REQUEST_ID)
        return self.buckets.of(key) < threshold

    def judge(self, evidence: Evidence, failed: bool, latency: float, now: float) -> None:
        if evidence is not self.evidence or self.state is CanaryState.ABORTED or self.retired:
            return  # admitted before a resume, an abort or a new version: not this evidence's to judge
        broken = evidence.canary_outcome(failed, latency, now)
        if broken is not None:
            self._abort(f"guardrail {broken}")

    def breaker_open(self) -> None:
        """The canary route's own breaker opened from closed. While the policy and the guardrails
        decide (no operator's order), and the canary has failed more than it may so far, that is
        a verdict: a version bad enough to trip a breaker is aborted at once, as a rollout tool
        must hear, rather than after min_calls judged calls that the open breaker keeps from
        coming. Two versions equally flaky, or a breaker an operator's order stands over, do not."""
        if self.retired or self.order is not None or self.state is CanaryState.ABORTED:
            return
        evidence = self.evidence
        if evidence.canary.rate > evidence.allowed_failure_rate:
            self._abort(BREAKER_OPEN)

    def _abort(self, why: str) -> None:
        order = CanaryOrder(Action.ABORT, self.route, why, JUDGE, self.wall())
        self.apply(order, cause=f"{why} broken" if why.startswith("guardrail") else why, verdict=True)

    # -- operators and the policy --------------------------------------------------------

    def apply(self, order: CanaryOrder | None, cause: str, verdict: bool = False) -> CanaryChange:
        """Put an order in force (None: resume, back to the policy's start with fresh evidence)."""
        before, weight_before = self.state, self.weight
        self.order = order
        if order is None:
            self._start()
            return self._changed(before, weight_before, cause, "")
        if before is CanaryState.ABORTED and order.action is not Action.ABORT:
            self._new_evidence()  # what was judged bad is not the evidence of what comes next
        if order.action is Action.ABORT:
            self._set(CanaryState.ABORTED, 0)
        elif order.action is Action.PROMOTE:
            self._set(CanaryState.PROMOTED, BUCKETS)
        else:
            self._set(CanaryState.ACTIVE, order.weight)
        return self._changed(before, weight_before, cause, order.caller, verdict)

    def reconfigure(self, settings: Canary) -> None:
        """A new policy with the same route: the evidence and any order are kept; a new starting
        weight or ramp takes effect at once for a canary the operators left to the policy."""
        old = self.settings
        self._configure(settings)
        self.evidence.reconfigure(settings.guardrails)
        if self.order is None and (old.weight != settings.weight or old.ramp != settings.ramp):
            before, weight_before = self.state, self.weight
            self._begin(self.clock())
            self._changed(before, weight_before, "policy reloaded", "policy")

    # -- reading -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        order = self.order
        return {
            "model": self.model,
            "route": self.route,
            "state": self.state.value,
            "weight": self.weight / BUCKETS,
            "since": self.since,
            "order": None if order is None else order.to_json(),
            "ramp": None if self.settings.ramp is None else _ramp_json(self.settings),
            **self.evidence.figures(),
        }

    # -- within ----------------------------------------------------------------------------

    def _configure(self, settings: Canary) -> None:
        self.settings = settings
        self.sticky_header = settings.sticky_header
        exclude = settings.exclude
        self.exclude_header = None if exclude is None else exclude.header
        self.excluded = frozenset() if exclude is None else exclude.values

    def _start(self) -> None:
        self._new_evidence()
        self._begin(self.clock())

    def _new_evidence(self) -> None:
        self.since = self.wall()
        """Wall-clock seconds when the evidence started."""
        self.evidence = Evidence(self.settings.guardrails, self.clock())
        self.stable_token = _StableToken(self, self.evidence)
        self.canary_token = _CanaryToken(self, self.evidence)

    def _begin(self, now: float) -> None:
        ramp = self.settings.ramp
        weight = self.settings.weight
        if ramp is None:
            self._set(CanaryState.ACTIVE, weight)
        elif weight >= ramp.max:
            self._set(CanaryState.COMPLETE, weight)
        else:
            self._set(CanaryState.RAMPING, weight)
            self.next_step = now + ramp.every

    def _set(self, state: CanaryState, weight: int) -> None:
        self.state = state
        self.weight = weight
        self.next_step = NEVER

    def _step(self, now: float) -> None:
        """The ramp's time has come: a step up if the canary has been judged on min_calls calls
        since it started (a canary nobody calls is not shown healthy), else a look again later."""
        ramp = self.settings.ramp
        if ramp is None or self.state is not CanaryState.RAMPING:
            self.next_step = NEVER
            return
        if self.evidence.canary.calls < self.settings.guardrails.min_calls:
            self.next_step = now + min(ramp.every, 1.0)
            return
        before, weight_before = self.state, self.weight
        weight = min(ramp.max, self.weight + ramp.step)
        self._set(CanaryState.COMPLETE if weight >= ramp.max else CanaryState.RAMPING, weight)
        if self.state is CanaryState.RAMPING:
            self.next_step = now + ramp.every
        self._changed(before, weight_before, "ramp step", JUDGE)

    def _changed(
        self, before: CanaryState, weight_before: int, cause: str, caller: str, verdict: bool = False
    ) -> CanaryChange:
        change = CanaryChange(
            self.model,
            self.route,
            before.value,
            self.state.value,
            weight_before / BUCKETS,
            self.weight / BUCKETS,
            cause,
            caller,
            self.order,
            self.evidence.figures(),
            verdict,
        )
        self.sink(change)
        return change


def _ramp_json(settings: Canary) -> dict[str, object]:
    ramp = settings.ramp
    assert ramp is not None
    return {"step": ramp.step / BUCKETS, "every": ramp.every, "max": ramp.max / BUCKETS}
