"""Structured JSON logs: one object per line, fields first, so a log pipeline needs no parsing rules."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from ext_proc.core.breaker import Transition
from ext_proc.core.canary.run import CanaryChange
from ext_proc.core.forcing import ForceChange
from ext_proc.core.registry import TierState

transitions_log = logging.getLogger("modelguard.breaker")

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def log_transition(tier: TierState, transition: Transition) -> None:
    """Every breaker transition, with the evidence that caused it."""
    figures = transition.figures
    transitions_log.warning(
        "breaker %s -> %s",
        transition.from_state.value,
        transition.to_state.value,
        extra={
            "event": "breaker_transition",
            "model": tier.model_name,
            "tier": tier.name,
            "from_state": transition.from_state.value,
            "to_state": transition.to_state.value,
            "cause": transition.cause,
            "failure_rate": round(figures.failure_rate, 4),
            "slow_rate": round(figures.slow_rate, 4),
            "calls_in_window": figures.calls,
            "failures_in_window": figures.failures,
            "slow_in_window": figures.slow,
            "consecutive_failures": transition.consecutive_failures,
            "open_duration_s": round(transition.open_duration, 3),
            "inflight": tier.inflight,
            "probes_in_flight": transition.probes_in_flight,
        },
    )


forced_log = logging.getLogger("modelguard.forced")


def log_force_change(change: ForceChange) -> None:
    """Every forced state given, replaced, handed back or expired, with who and why."""
    order = change.order
    forced_log.warning(
        "forced state %s -> %s",
        change.from_state,
        change.to_state,
        extra={
            "event": "forced_state_changed",
            "model": change.model,
            "tier": change.tier,
            "from_state": change.from_state,
            "to_state": change.to_state,
            "mode": order.mode.value,
            "reason": order.reason,
            "caller": order.caller,
            "until": order.until,
            "ended_by": change.ended_by or None,
        },
    )


canary_log = logging.getLogger("modelguard.canary")


def log_canary_change(change: CanaryChange) -> None:
    """Every canary state or weight change, with the evidence behind it (both arms, the tests)."""
    canary_log.warning(
        "canary %s -> %s",
        change.from_state,
        change.to_state,
        extra={
            "event": "canary_changed",
            "model": change.model,
            "route": change.route,
            "from_state": change.from_state,
            "to_state": change.to_state,
            "from_weight": change.from_weight,
            "to_weight": change.to_weight,
            "cause": change.cause,
            "caller": change.caller,
            "evidence": change.evidence,
        },
    )
