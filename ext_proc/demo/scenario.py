"""The incident, as a script of fault injections on the model-server hosts.

Times are fractions of the run, so a shorter ``--duration`` keeps every phase:

    0%    normal traffic: primary ~200 ms, light ~40 ms; a new version of the primary (v2, on
          canary-1) is rolled out to 10% of users by the policy's canary, and it is bad: 30% of its
          calls fail at once (503). modelguard aborts the canary within seconds, on evidence that
          v2 fails more than stable, and (at the default rate) every user is back on stable before
          the host fault below
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
CANARY_HOSTS = ("canary-1",)
"""The canary route's hosts (variant v2): one, as a canary usually starts."""

BASE_LATENCY_MS = {"primary": 200.0, "light": 40.0, "v2": 200.0}
"""A healthy GPU model server's latency (lognormal around this median), set when a host starts."""
BASE_LATENCY_SIGMA = 0.25

BAD_HOST: dict[str, Any] = {"error_rate": 1.0, "error_status": 503}
OVERHEATED: dict[str, Any] = {
    "latency": {"distribution": "lognormal", "median_ms": 2800, "sigma": 0.2},  # on top of the base 200 ms
    "error_rate": 0.8,
    "error_status": 503,
    "fail_fast": True,  # the GPU errors surface at once; the calls that still succeed take ~3 s
}
BAD_CANARY: dict[str, Any] = {"error_rate": 0.3, "error_status": 503, "fail_fast": True}
"""A bad release: a third of its calls fail (a code path the new version breaks), fast, while its
latency stays normal, so only the canary's failure guardrails can tell (Envoy never ejects the one
canary host, see envoy/envoy.yaml)."""


@dataclass(frozen=True, slots=True)
class Step:
    at: float
    """Seconds after the load starts."""
    kind: str
    label: str
    faults: dict[str, dict[str, Any] | None]
    """Host id -> the fault it has from now on (None: healthy again)."""


def incident(duration: float) -> list[Step]:
    """The steps in order. The canary is bad from the start, not from a fraction of the run:
    modelguard needs a few dozen canary calls to judge it (about 20 to 80 at 30% errors), which
    at 10% of the default 100 req/s is 2 to 8 s, so the abort lands before the host fault at 15%
    (12 s) and the two stories stay apart. At a lower rate (the e2e test's 50 req/s, host fault
    at 6 s) it may land near the host fault; the canary's failures are kept out of the host
    fault's figure either way (report.summarize)."""
    return [
        Step(0.0, "canary_fault", "v2 canary (10% of users): 30% errors", {host: BAD_CANARY for host in CANARY_HOSTS}),
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
