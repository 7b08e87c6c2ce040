"""The demo's scenarios, as scripts of fault injections on the model-server hosts.

``incident`` (the default; times are fractions of the run, so a shorter ``--duration`` keeps every
phase):

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

``bad_host``: only one primary host of three goes bad, long enough for Envoy to let it back in
while it is still bad (times in seconds, from Envoy's outlier detection, see ``bad_host``).

``slow_fault``: the whole primary model hangs: every call takes about 3 s and then fails, on every
primary host (see ``slow_fault``).

``overload``: nothing breaks; the load ramps from half to twice what the primary's hosts can serve
(each a bounded pool of workers with a queue), with critical, standard and sheddable requests
(see ``LOADS``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MODEL = "recommender"
"""The demo's one model (its policies' name for it)."""
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


# envoy/envoy.yaml, the primary cluster's outlier_detection: a host that fails 5 times in a row is
# ejected at once for base_ejection_time x (times ejected), at most max_ejection_time; the ejected
# hosts are checked for return every interval.
EJECTION_INTERVAL_S = 1.0
BASE_EJECTION_S = 10.0

BAD_HOST_AT = 1.0
"""A second of normal traffic first."""
BAD_HOST_BACK_IN_AT = BAD_HOST_AT + BASE_EJECTION_S + EJECTION_INTERVAL_S
"""About when Envoy has let the still bad host back in: its first ejection (10 s) ends at an interval's
check, up to 1 s later."""
BAD_HOST_CLEARED_AT = BAD_HOST_BACK_IN_AT + 4.0
"""Inside the second ejection (until about 32-33 s), with room for a first ejection a second late."""
BAD_HOST_BACK_HEALTHY_AT = BAD_HOST_BACK_IN_AT + 2 * BASE_EJECTION_S + EJECTION_INTERVAL_S
"""About when Envoy lets the (by then healthy) host back in, after its second ejection (2 x 10 s)."""
BAD_HOST_DURATION = BAD_HOST_BACK_HEALTHY_AT + 3.0
"""The load's length for ``bad_host`` (36 s): a few seconds of three healthy hosts at the end."""


def bad_host(duration: float) -> list[Step]:
    """One bad primary host of three, and Envoy letting it back in while it is still bad.

    primary-1 answers 503 from ``BAD_HOST_AT`` (1 s): Envoy retries its calls on the other hosts
    and ejects it after 5 failures in a row (its 503s come after its usual ~200 ms, and calls already
    sent to it fail too: within about a second, some 10-30 calls at 100-200 req/s), for
    ``BASE_EJECTION_S`` (10 s). At the first interval check after that (about 11-13 s) Envoy lets
    it back in, still bad: its next calls fail again (each retried elsewhere) until it is ejected a
    second time, now for 2 x 10 s. That return is the moment a breaker could count the host's
    failures as the model's; nothing else is wrong (no whole-model fault, the canary's v2 stays
    healthy), so any primary breaker trip is a false one. The host is cleared at 16 s, inside its
    second ejection, and comes back healthy by about 33 s; the load runs ``BAD_HOST_DURATION``
    (36 s). Times are seconds, not fractions: they follow Envoy's ejection times, not the run's
    length, so ``duration`` only has to leave room for every step (ValueError otherwise)."""
    if duration <= BAD_HOST_CLEARED_AT:
        raise ValueError(f"the bad_host scenario needs more than {BAD_HOST_CLEARED_AT:g} s of load, got {duration:g}")
    return [
        Step(BAD_HOST_AT, "single_host_fault", "primary-1 fails (503)", {"primary-1": BAD_HOST}),
        Step(BAD_HOST_CLEARED_AT, "single_host_cleared", "primary-1 healthy again", {"primary-1": None}),
    ]


HUNG: dict[str, Any] = {
    "latency": {"distribution": "lognormal", "median_ms": 2800, "sigma": 0.2},  # on top of the base 200 ms
    "error_rate": 1.0,
    "error_status": 503,
}
"""A stalled GPU: every call hangs about 3 s, then fails (Envoy's 1 s per-try timeout cuts it first)."""


def slow_fault(duration: float) -> list[Step]:
    """The whole primary model hangs from 30% of the run to 65%: no answer comes for longer than
    any per-try timeout, so a breaker that judges only answers waits for timeouts and failures,
    while one that sees its calls in flight can open about ``slow_call_duration`` after the onset
    (README, "Slow calls in flight")."""
    return [
        Step(
            round(0.3 * duration, 1),
            "whole_model_fault",
            "whole primary model: every call hangs 3 s, then fails",
            {host: HUNG for host in PRIMARY_HOSTS},
        ),
        Step(round(0.65 * duration, 1), "fault_cleared", "fault cleared", dict.fromkeys(PRIMARY_HOSTS)),
    ]


def overload(duration: float) -> list[Step]:
    """No fault: the load ramps past what the primary can serve (``LOADS["overload"]``)."""
    return [Step(0.0, "load_ramp", "load ramps from half to twice the primary's capacity", {})]


@dataclass(frozen=True, slots=True)
class Load:
    """A scenario's load, when it is not the steady rate of the others: ``ramp`` stages as multiples
    of the run's rate, a ``mix`` of criticalities, the hosts' ``capacity`` by variant (workers,
    queue; demo/capacity.py) and the policy it is played with (unless the run names one)."""

    ramp: tuple[float, ...] = ()
    mix: dict[str, float] | None = None
    capacity: dict[str, tuple[int, int]] | None = None
    policy: str | None = None
    """A file next to this module."""


PRIMARY_WORKERS = 4
"""Calls a primary host serves at once: with ~200 ms a call, three hosts serve about 58 req/s."""
PRIMARY_CAPACITY = len(PRIMARY_HOSTS) * PRIMARY_WORKERS / (BASE_LATENCY_MS["primary"] / 1000) * 0.97
"""Requests per second the primary tier serves at most (the lognormal's mean is ~3% over its median)."""
LOADS: dict[str, Load] = {
    "overload": Load(
        ramp=(0.5, 1.0, 1.5, 2.0),
        mix={"critical": 0.2, "standard": 0.5, "sheddable": 0.3},
        capacity={"primary": (PRIMARY_WORKERS, 32), "light": (8, 64), "v2": (PRIMARY_WORKERS, 32)},
        policy="overload_policy.yaml",
    )
}
"""``overload``: a quarter of the run at each of 0.5, 1, 1.5 and 2 x the run's rate (by default the
primary's capacity), 20% critical, 50% standard, 30% sheddable requests."""

SCENARIOS: dict[str, Callable[[float], list[Step]]] = {
    "incident": incident,
    "bad_host": bad_host,
    "slow_fault": slow_fault,
    "overload": overload,
}
DEFAULT_DURATION: dict[str, float] = {
    "incident": 80.0,
    "bad_host": BAD_HOST_DURATION,
    "slow_fault": 40.0,
    "overload": 60.0,
}
DEFAULT_RATE: dict[str, float] = {"overload": round(PRIMARY_CAPACITY)}
"""Each scenario's rate when none is given, where it is not the demo's 100 req/s."""
"""Each scenario's load length when none is given."""


def steps(name: str, duration: float) -> list[Step]:
    """The named scenario's steps for a load of ``duration`` seconds (KeyError: no such scenario)."""
    return SCENARIOS[name](duration)
