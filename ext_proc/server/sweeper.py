"""The in-flight sweep on the server's loop: calls past slow_call_duration are judged while they
hang (core/flight.py), without a timer per request.

Every SWEEP_INTERVAL the registry looks at the tiers that admitted calls since they were last
swept clean; an idle tier costs nothing. A failure is logged (rate-limited) and the sweep goes on:
it must never take the server down, nor stop quietly.
"""

from __future__ import annotations

import asyncio
import logging

from ext_proc.core.registry import StateRegistry
from ext_proc.observe.log_budget import LogBudget

SWEEP_INTERVAL = 0.05
"""Seconds between sweeps: a hanging tier is judged about slow_call_duration plus this (and a
bucket, 1/16 of the duration or 25 ms) after its calls started."""

log = logging.getLogger("modelguard.server")


async def sweep_in_flight(registry: StateRegistry, interval: float = SWEEP_INTERVAL) -> None:
    budget = LogBudget()
    while True:
        await asyncio.sleep(interval)
        try:
            registry.judge_in_flight()
        except Exception:
            suppressed = budget.take()
            if suppressed is not None:
                log.exception(
                    "in-flight sweep failed", extra={"event": "sweep_failed", "suppressed_since_last": suppressed}
                )
