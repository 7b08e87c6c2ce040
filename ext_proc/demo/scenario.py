"""The incident, as a script of fault injections on the model-server hosts.

Times are fractions of the run, so a shorter ``--duration`` keeps every phase:

    0%    normal traffic: primary ~200 ms, light ~40 ms
    15%   one primary host goes bad (all 503): Envoy retries on other hosts and ejects it;
          modelguard must not react, the model as a whole is fine
    35%   the whole primary model degrades (GPU node overheats): 80% of calls fail at once,
          the rest take 3 s instead of 200 ms, on every primary host; modelguard's breaker
          opens, traffic steps down
    65%   the fault clears; half-open probes succeed; traffic returns to primary
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRIMARY_HOSTS = ("primary-1", "primary-2", "primary-3")
LIGHT_HOSTS = ("light-1", "light-2")

BASE_LATENCY_MS = {"primary": 200.0, "light": 40.0}
"""A healthy GPU model server's latency (lognormal around this median), set when a host starts."""
BASE_LATENCY_SIGMA = 0.25

BAD_HOST: dict[str, Any] = {"error_rate": 1.0, "error_status": 503}
OVERHEATED: dict[str, Any] = {
    "latency": {"distribution": "lognormal", "median_ms": 2800, "sigma": 0.2},  # on top of the base 200 ms
    "error_rate": 0.8,
    "error_status": 503,
    "fail_fast": True,  # the GPU errors surface at once; the calls that still succeed take ~3 s
}


@dataclass(frozen=True, slots=True)
class Step:
    at: float
    """Seconds after the load starts."""
    kind: str
    label: str
    faults: dict[str, dict[str, Any] | None]
    """Host id -> the fault it has from now on (None: healthy again)."""


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
            dict.fromkeys(PRIMARY_HOSTS),
        ),
    ]
