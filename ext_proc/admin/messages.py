"""The core's state and events in the admin API's messages (ext_proc/api)."""

from __future__ import annotations

from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from ext_proc.api import admin_pb2
from ext_proc.core.breaker import Transition
from ext_proc.core.forcing import ForceChange, ForceMode, ForceOrder
from ext_proc.core.guard import ModelGuard, TierGuard
from ext_proc.core.registry import TierState
from ext_proc.core.windows import WindowFigures

FORCE_OF_MODE = {
    ForceMode.AUTO: admin_pb2.AUTO,
    ForceMode.FORCED_OPEN: admin_pb2.FORCED_OPEN,
    ForceMode.FORCED_CLOSED: admin_pb2.FORCED_CLOSED,
}
MODE_OF_FORCE = {force: mode for mode, force in FORCE_OF_MODE.items()}
RESPOND = "respond"
"""The ``state`` of a tier modelguard answers itself: it has no breaker."""


def timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def duration(seconds: float) -> Duration:
    length = Duration()
    length.FromNanoseconds(int(seconds * 1e9))
    return length


def forced_state(order: ForceOrder) -> Any:
    message = admin_pb2.ForcedState(mode=FORCE_OF_MODE[order.mode], reason=order.reason, caller=order.caller)
    message.since.CopyFrom(timestamp(order.since))
    if order.until is not None:
        message.until.CopyFrom(timestamp(order.until))
    return message


def window(figures: WindowFigures) -> Any:
    return admin_pb2.Window(
        calls=figures.calls,
        failures=figures.failures,
        slow=figures.slow,
        overloaded=figures.overloaded,
        failure_rate=round(figures.failure_rate, 4),
        slow_rate=round(figures.slow_rate, 4),
    )


def tier_state(tier: TierGuard) -> Any:
    state = tier.state
    if state is None:
        return admin_pb2.TierState(name=tier.name, respond=True, state=RESPOND)
    snapshot = state.breaker.snapshot()
    message = admin_pb2.TierState(
        name=tier.name,
        route=tier.route or "",
        state=state.state_name,
        breaker_state=str(snapshot["state"]),
        window=window(state.breaker.figures()),
        inflight=max(0, state.inflight),
        outcomes=state.outcomes,
        consecutive_failures=_int(snapshot["consecutive_failures"]),
        probes_in_flight=_int(snapshot["probes_in_flight"]),
    )
    remaining = snapshot["open_remaining_s"]
    if isinstance(remaining, float) and remaining > 0:
        message.open_remaining.CopyFrom(duration(remaining))
    if state.order is not None:
        message.forced.CopyFrom(forced_state(state.order))
        message.would_open = state.breaker.would_open() or ""
    return message


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def model_state(model: ModelGuard) -> Any:
    return admin_pb2.ModelState(name=model.name, tiers=[tier_state(tier) for tier in model.tiers])


def transition_event(tier: TierState, transition: Transition, at: float, worker: int) -> Any:
    event = admin_pb2.Event(worker=worker)
    event.time.CopyFrom(timestamp(at))
    event.breaker_transition.CopyFrom(
        admin_pb2.BreakerTransition(
            model=tier.model_name,
            tier=tier.name,
            from_state=transition.from_state.value,
            to_state=transition.to_state.value,
            cause=transition.cause,
            window=window(transition.figures),
        )
    )
    return event


def force_event(change: ForceChange, at: float, worker: int) -> Any:
    event = admin_pb2.Event(worker=worker)
    event.time.CopyFrom(timestamp(at))
    event.forced_state_change.CopyFrom(
        admin_pb2.ForcedStateChange(
            model=change.model,
            tier=change.tier,
            from_state=change.from_state,
            to_state=change.to_state,
            forced=forced_state(change.order),
            ended_by=change.ended_by,
        )
    )
    return event


def reload_event(result: str, trigger: str, sha256: str, errors: list[str], at: float, worker: int) -> Any:
    event = admin_pb2.Event(worker=worker)
    event.time.CopyFrom(timestamp(at))
    event.policy_reload.CopyFrom(
        admin_pb2.PolicyReload(result=result, trigger=trigger, policy_sha256=sha256, errors=errors)
    )
    return event
