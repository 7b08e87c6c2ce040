"""The families of /metrics built with prometheus_client's own classes, from the same figures:
the reference the hand-written text (observe/core_metrics.py, server/metrics.py) must equal
byte for byte once prometheus_client renders it."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ext_proc.core.breaker import BreakerState
from ext_proc.core.canary.run import CanaryState
from ext_proc.core.guard import Guard
from ext_proc.core.stats import Histogram
from ext_proc.server.metrics import ServerStats

PREFIX = "modelguard_"


class OracleCollector(Collector):
    def __init__(self, guard: Guard, stats: ServerStats) -> None:
        self._guard = guard
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        guard, stats = self._guard, self._stats
        requests = CounterMetricFamily(
            PREFIX + "requests", "Requests decided, by model, tier and reason.", labels=["model", "tier", "reason"]
        )
        for decision in guard.decisions():
            requests.add_metric([decision.model_name, decision.tier_name, decision.reason], decision.count)
        yield requests
        states = guard.states()
        breaker_state = GaugeMetricFamily(
            PREFIX + "breaker_state",
            "1 for the tier's current state: a breaker state, or forced_open / forced_closed.",
            labels=["model", "tier", "state"],
        )
        names = [*(value.value for value in BreakerState), "forced_open", "forced_closed"]
        for state in states:
            current = state.state_name
            for name in names:
                breaker_state.add_metric([state.model_name, state.name, name], float(name == current))
        yield breaker_state
        transitions = CounterMetricFamily(
            PREFIX + "breaker_transitions",
            "Breaker state changes.",
            labels=["model", "tier", "from_state", "to_state"],
        )
        for key in sorted((s.model_name, s.name, *move) for s in states for move in s.transitions):
            model, tier, from_state, to_state = key
            count = guard.registry.get(model, tier).transitions[(from_state, to_state)]
            transitions.add_metric(list(key), count)
        yield transitions
        forced = CounterMetricFamily(
            PREFIX + "forced_state_changes",
            "Forced-state changes by the state they moved to (forced_open, forced_closed, auto).",
            labels=["model", "tier", "state"],
        )
        for model, tier, to_state, count in sorted(
            (s.model_name, s.name, to_state, count) for s in states for to_state, count in s.forced_changes.items()
        ):
            forced.add_metric([model, tier, to_state], count)
        yield forced
        outcomes = CounterMetricFamily(
            PREFIX + "outcomes",
            "Judged responses: success, failure, overload (429), dropped (stream ended first).",
            labels=["model", "tier", "outcome"],
        )
        inflight = GaugeMetricFamily(
            PREFIX + "inflight", "Requests admitted to a tier and not yet answered.", labels=["model", "tier"]
        )
        latency = HistogramMetricFamily(
            PREFIX + "upstream_latency_seconds",
            "Time from request headers to response headers, as modelguard saw it.",
            labels=["model", "tier"],
        )
        for state in states:
            labels = [state.model_name, state.name]
            for outcome, count in state.outcomes.items():
                outcomes.add_metric([*labels, outcome], count)
            inflight.add_metric(labels, state.inflight)
            _add_histogram(latency, labels, state.latency)
        yield outcomes
        yield inflight
        yield latency
        host_calls = GaugeMetricFamily(
            PREFIX + "host_calls",
            "Calls in a breaker's window by the upstream host that answered them.",
            labels=["host", "model", "tier"],
        )
        host_failures = GaugeMetricFamily(
            PREFIX + "host_failures",
            "Failures in a breaker's window by the upstream host that answered them.",
            labels=["host", "model", "tier"],
        )
        for state in states:
            breaker = state.breaker
            for host, figures in breaker.hosts.figures(breaker.clock()):
                if figures.calls:
                    host_calls.add_metric([host or "none", state.model_name, state.name], figures.calls)
                    host_failures.add_metric([host or "none", state.model_name, state.name], figures.failures)
        yield host_calls
        yield host_failures
        limits = GaugeMetricFamily(
            PREFIX + "concurrency_limit",
            "A tier's concurrency limit now (static, or the adaptive limit's value).",
            labels=["model", "tier"],
        )
        counted = GaugeMetricFamily(
            PREFIX + "limit_inflight",
            "Calls a tier's limit counts now: its own and its canary's, admitted and unsettled.",
            labels=["model", "tier"],
        )
        for state in states:
            if state.limiter is not None:
                limits.add_metric([state.model_name, state.name], state.limiter.figure.value)
                counted.add_metric([state.model_name, state.name], state.limiter.inflight)
        yield limits
        yield counted
        pushed = GaugeMetricFamily(
            PREFIX + "pushed_back",
            "1 while a tier's own 429 / RESOURCE_EXHAUSTED answers step its traffic down.",
            labels=["model", "tier"],
        )
        for state in states:
            pushed.add_metric([state.model_name, state.name], 1 if state.pushed_until > state.breaker.clock() else 0)
        yield pushed
        weights = GaugeMetricFamily(
            PREFIX + "canary_weight", "Share of sticky keys a model's canary serves (0 to 1).", labels=["model"]
        )
        canary_states = GaugeMetricFamily(
            PREFIX + "canary_state",
            "1 for the canary's state: active, ramping, complete, promoted or aborted.",
            labels=["model", "state"],
        )
        for canary in guard.canaries.values():
            run = canary.run
            weights.add_metric([run.model], run.weight / 10_000)
            for word in CanaryState:
                canary_states.add_metric([run.model, word.value], float(word is run.state))
        yield weights
        yield canary_states
        duration = HistogramMetricFamily(
            PREFIX + "decision_duration_seconds", "Time inside modelguard to decide a request's tier."
        )
        _add_histogram(duration, [], stats.decision_duration)
        yield duration
        errors = CounterMetricFamily(
            PREFIX + "protocol_errors", "ext_proc messages that broke the protocol, by kind.", labels=["kind"]
        )
        for kind, count in sorted(stats.errors.counts.items()):
            errors.add_metric([kind], count)
        yield errors
        reloads = CounterMetricFamily(
            PREFIX + "policy_reloads",
            "Policy reloads, by result (success, error, unchanged).",
            labels=["result"],
        )
        for result, count in stats.reloads.items():
            reloads.add_metric([result], count)
        yield reloads
        if stats.policy_sha256:
            info = GaugeMetricFamily(
                PREFIX + "policy_info", "1, labelled with the SHA-256 of the live policy file.", labels=["sha256"]
            )
            info.add_metric([stats.policy_sha256], 1.0)
            yield info


def _add_histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    buckets = [("+Inf" if bound == float("inf") else repr(bound), count) for bound, count in histogram.cumulative()]
    family.add_metric(labels, buckets, histogram.total)


def oracle_text(guard: Guard, stats: ServerStats) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OracleCollector(guard, stats))
    return generate_latest(registry).decode()
