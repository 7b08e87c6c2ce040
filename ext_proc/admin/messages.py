"""The core's state and events in the admin API's messages (ext_proc/api)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from ext_proc.api import admin_pb2
from ext_proc.core.breaker import Transition
from ext_proc.core.canary.arms import CanaryGuard
from ext_proc.core.canary.run import CanaryChange
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
    message = admin_pb2.ModelState(name=model.name, tiers=[tier_state(tier) for tier in model.tiers])
    canary = model.tiers[0].canary
    if canary is not None:
        message.canary.CopyFrom(canary_state(canary.snapshot()))
    return message


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


def canary_state(figures: Mapping[str, Any]) -> Any:
    """A canary's snapshot (CanaryGuard.snapshot, or a change's evidence with its state) as a message."""
    arms, tests = figures.get("arms", {}), figures.get("tests", {})
    message = admin_pb2.CanaryState(
        route=str(figures.get("route", "")),
        state=str(figures.get("state", "")),
        weight=float(figures.get("weight", 0.0)),
        canary=_arm(arms.get("canary", {})),
        stable=_arm(arms.get("stable", {})),
        tests=[
            admin_pb2.CanaryTest(
                name=name,
                statistic=float(test["statistic"]),
                boundary=float(test["boundary"]),
                null_rate=float(test.get("null", 0.0)),
            )
            for name, test in tests.items()
        ],
        min_calls=int(figures.get("min_calls", 0)),
        breaker_state=str(figures.get("breaker", {}).get("state", "")),
    )
    if "since" in figures:
        message.since.CopyFrom(timestamp(float(figures["since"])))
    order = figures.get("order")
    if order:
        message.order.CopyFrom(
            admin_pb2.CanaryOrder(
                action=order["action"],
                route=order["route"],
                weight=order["weight"],
                reason=order["reason"],
                caller=order["caller"],
                since=timestamp(order["since"]),
            )
        )
    return message


def _arm(figures: Mapping[str, Any]) -> Any:
    return admin_pb2.ArmFigures(
        calls=int(figures.get("calls", 0)),
        failures=int(figures.get("failures", 0)),
        failure_rate=float(figures.get("failure_rate", 0.0)),
        slow=int(figures.get("slow", 0)),
        slow_after_seconds=float(figures.get("slow_after") or 0.0),
        failure_rate_bound=float(figures.get("failure_rate_bound", 0.0)),
        latency_p95_seconds=float(figures.get("latency_p95") or 0.0),
    )


def model_canary(model: str, canary: CanaryGuard) -> Any:
    return admin_pb2.ModelCanary(model=model, canary=canary_state(canary.snapshot()))


def canary_event(change: CanaryChange, at: float, worker: int) -> Any:
    event = admin_pb2.Event(worker=worker)
    event.time.CopyFrom(timestamp(at))
    figures = {**change.evidence, "route": change.route, "state": change.to_state, "weight": change.to_weight}
    if change.order is not None:
        figures["order"] = change.order.to_json()
    event.canary_change.CopyFrom(
        admin_pb2.CanaryChange(
            model=change.model,
            route=change.route,
            from_state=change.from_state,
            to_state=change.to_state,
            from_weight=change.from_weight,
            to_weight=change.to_weight,
            cause=change.cause,
            caller=change.caller,
            canary=canary_state(figures),
        )
    )
    return event
