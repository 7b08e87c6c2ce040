"""The incident, as a script of fault injections on the model-server hosts.

Times are fractions of the run, so a shorter ``--duration`` keeps every phase:

    0%    normal traffic: primary ~200 ms, light ~40 ms
    15%   one primary host goes bad (all 503): Envoy retries on other hosts and ejects it;
          modelguard must not react, the model as a whole is fine
    35%   the whole primary model degrades (GPU node overheats): latency 200 ms -> 3 s,
          80% errors on every primary host; modelguard's breaker opens, traffic steps down
    65%   the fault clears; half-open probes succeed; traffic returns to primary
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRIMARY_HOSTS = ("primary-1", "primary-2", "primary-3")
LIGHT_HOSTS = ("light-1", "light-2")

PRIMARY_BASELINE: dict[str, Any] = {"latency": {"distribution": "lognormal", "median_ms": 200, "sigma": 0.25}}
LIGHT_BASELINE: dict[str, Any] = {"latency": {"distribution": "lognormal", "median_ms": 40, "sigma": 0.25}}
BAD_HOST: dict[str, Any] = {**PRIMARY_BASELINE, "error_rate": 1.0, "error_status": 503}
OVERHEATED: dict[str, Any] = {
    "latency": {"distribution": "lognormal", "median_ms": 3000, "sigma": 0.2},
    "error_rate": 0.8,
    "error_status": 503,
}


@dataclass(frozen=True, slots=True)
class Step:
    at: float
    """Seconds after the load starts."""
    kind: str
    label: str
    faults: dict[str, dict[str, Any]]
    """Host id -> the fault (the whole behaviour) it has from now on."""


def baseline() -> dict[str, dict[str, Any]]:
    """What every host does before the incident: the latency of a healthy GPU model server."""
    faults = {host: PRIMARY_BASELINE for host in PRIMARY_HOSTS}
    faults.update({host: LIGHT_BASELINE for host in LIGHT_HOSTS})
    return faults


def incident(duration: float) -> list[Step]:
    return [
        Step(
            round(0.15 * duration, 1),
            "single_host_fault",
            "primary-1 fails (503)",
            {"primary-1": BAD_HOST},
        ),
        Step(
            round(0.35 * duration, 1),
            "whole_model_fault",
            "whole primary model: 3 s, 80% errors",
            {host: OVERHEATED for host in PRIMARY_HOSTS},
        ),
        Step(
            round(0.65 * duration, 1),
            "fault_cleared",
            "fault cleared",
            {host: PRIMARY_BASELINE for host in PRIMARY_HOSTS},
        ),
    ]
