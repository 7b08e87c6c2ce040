"""The series the dashboard and the alerts read, and the PromQL built on them, written once so that a
panel and the alert beside it cannot drift apart.

Two sources of series:

- modelguard's own ``/metrics`` (README, "Running it": the ``modelguard_`` families), scraped with a
  ``namespace`` and ``pod`` label per replica. Queries aggregate over replicas (and over the workers
  of ``--workers N``).
- Envoy's ext_proc filter statistics, from every proxy that runs the filter (``/stats/prometheus``;
  Istio merges it into the sidecar's and the gateway's scrape). With the ext_proc ``stat_prefix``
  ``modelguard`` Envoy names them ``envoy_http_ext_proc_modelguard_<counter>``, and puts the HTTP
  connection manager's own ``stat_prefix`` in a label: ``envoy_http_conn_manager_prefix`` with Envoy's
  default tags (``ingress_http`` in envoy/envoy.yaml), ``http_conn_manager_prefix`` with Istio's
  bootstrap (``outbound_0.0.0.0_8080`` and the like). Queries sum over it, whatever its name.
  Istio proxies export these statistics only when the proxy's ``proxyStatsMatcher`` includes them
  (for example ``inclusionRegexps: [".*ext_proc\\.modelguard\\..*"]``).
"""

from __future__ import annotations

from ext_proc.observe.core_metrics import (
    CANARY_STATE,
    CANARY_WEIGHT,
    CONCURRENCY_LIMIT,
    FORCED_CHANGES,
    HOST_CALLS,
    HOST_FAILURES,
    INFLIGHT,
    LATENCY,
    LIMIT_INFLIGHT,
    OUTCOMES,
    PUSHED_BACK,
    REQUESTS,
    STATE,
    TRANSITIONS,
)
from ext_proc.server.metrics import DURATION, ERRORS, INFO, RELOADS

__all__ = [
    "CANARY_STATE",
    "CANARY_WEIGHT",
    "CONCURRENCY_LIMIT",
    "DURATION",
    "ERRORS",
    "FORCED_CHANGES",
    "HOST_CALLS",
    "HOST_FAILURES",
    "INFLIGHT",
    "INFO",
    "LATENCY",
    "LIMIT_INFLIGHT",
    "OUTCOMES",
    "PUSHED_BACK",
    "RELOADS",
    "REQUESTS",
    "STATE",
    "TRANSITIONS",
]
# modelguard's family names are the ones its metric sources write (re-exported for the panels and
# the alerts); the rest of this module adds the queries built on them.

RATE = "$__rate_interval"

NS = 'namespace=~"$namespace"'
"""modelguard's own series, in the namespaces picked."""
MODELS = NS + ', model=~"$model"'
"""... of the models picked."""
PROXIES = 'namespace=~"$proxy_namespace"'
"""Envoy's series, in the proxies' namespaces picked."""

EXT_PROC = "envoy_http_ext_proc_modelguard_"
"""Envoy's ext_proc counters for the filter with ``stat_prefix: modelguard`` (``http.<hcm prefix>.ext_proc.
modelguard.<counter>`` in Envoy's own names; the HCM prefix becomes a label)."""
FAILURE_MODE_ALLOWED = EXT_PROC + "failure_mode_allowed"
STREAMS_STARTED = EXT_PROC + "streams_started"
STREAMS_FAILED = EXT_PROC + "streams_failed"
MESSAGE_TIMEOUTS = EXT_PROC + "message_timeouts"
REJECTED_MUTATIONS = EXT_PROC + "rejected_header_mutations"
SPURIOUS_MESSAGES = EXT_PROC + "spurious_msgs_received"

MODELGUARD_JOB = 'job=~".*modelguard.*"'
"""The scrape job(s) of modelguard's admin port: a ServiceMonitor's job is its Service's name, a
PodMonitor's ``<namespace>/<name>``; both contain ``modelguard`` in this deployment."""

BREAKER_CODES = {"closed": 0, "forced_closed": 1, "half_open": 2, "open": 3, "forced_open": 4}
"""The breaker_state label as one number per tier, worst highest (the max over replicas)."""
CANARY_CODES = {"active": 0, "ramping": 1, "complete": 2, "promoted": 3, "aborted": 4}
"""The canary_state label as one number per model, latest in the canary's life highest."""


def selected(metric: str, matchers: str = "") -> str:
    """``metric{matchers}``, or the bare name: an alert reads every namespace, with no matcher."""
    return f"{metric}{{{matchers}}}" if matchers else metric


def _summed(function: str, metric: str, matchers: str, by: str, window: str) -> str:
    return f"sum by ({by}) ({function}({selected(metric, matchers)}[{window}]))"


def sum_rate(metric: str, matchers: str, by: str, window: str = RATE) -> str:
    return _summed("rate", metric, matchers, by, window)


def sum_increase(metric: str, matchers: str, by: str, window: str = RATE) -> str:
    return _summed("increase", metric, matchers, by, window)


def ratio(numerator: str, denominator: str) -> str:
    return f"{numerator}\n/\n{denominator}"


def in_state(metric: str, matchers: str, by: str) -> str:
    """The ``by`` groups where some replica's 0/1 state family is 1 for a state ``matchers`` picks."""
    return f"max by ({by}) ({metric}{{{matchers}}}) == 1"


def count_in_state(metric: str, matchers: str, by: str) -> str:
    """How many groups are in the states picked: 0, not an empty result, when none is."""
    return f"count({in_state(metric, matchers, by)}) or vector(0)"


def coded(metric: str, matchers: str, codes: dict[str, int], by: str) -> str:
    """One number per ``by`` group for a family that is 1 for the current ``state`` and 0 for the
    others: the code of the current state (the highest code over replicas)."""
    arms = "\n  or ".join(f'{metric}{{{matchers}, state="{state}"}} * {code}' for state, code in codes.items())
    return f"max by ({by}) (\n  {arms}\n)"


CANARY_TIERS = f'max by (model, tier) ({STATE}{{{MODELS}, tier=~".+@canary"}})'
"""The canary routes' tiers (``primary@canary``): one series per model with a canary."""
STABLE_TIERS = f'label_replace({CANARY_TIERS}, "tier", "$1", "tier", "(.+)@canary")'
"""The stable arm of each canary: the first tier the canary route stands beside (``primary``)."""
ARMS = f"({CANARY_TIERS} or {STABLE_TIERS})"


def requests_rate(matchers: str, by: str) -> str:
    return sum_rate(REQUESTS, matchers, by)


def outcome_rate(outcome: str, by: str = "model, tier") -> str:
    return sum_rate(OUTCOMES, f'{MODELS}, outcome=~"{outcome}"', by)


def failure_ratio(by: str = "model, tier") -> str:
    return ratio(outcome_rate("failure", by), outcome_rate("success|failure", by))


def _quantile(q: float, histogram: str, matchers: str, by: str) -> str:
    return f"histogram_quantile({q}, {sum_rate(histogram + '_bucket', matchers, by)})"


def upstream_quantile(q: float) -> str:
    return _quantile(q, LATENCY, MODELS, "model, tier, le")


def decision_quantile(q: float) -> str:
    return _quantile(q, DURATION, NS, "le")


def envoy_rate(metric: str) -> str:
    return sum_rate(metric, PROXIES, "namespace")
