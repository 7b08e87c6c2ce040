"""Prometheus exposition of the guard's counters, built at scrape time.

The hot path only bumps plain integers (stats.py, Decision.count); this collector turns them
into metric families when /metrics is read. Label values come from the policy, or are the fixed
words ``unmatched`` and ``none``, so cardinality is bounded by the policy's size.

The admin site does not render this collector: prometheus_client renders a registry in one call,
which at 1,000 models holds the event loop (and the decisions on it) for 0.3 s or more.
exposition.py writes the same text in slices; GuardCollector stays as the registry form, for code
that reads the registry, and as the reference the sliced renderer is tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ext_proc.core.breaker import BreakerState
from ext_proc.core.guard import Guard
from ext_proc.core.stats import Histogram
from ext_proc.server.servicer import ProtocolErrors

PREFIX = "modelguard_"


class GuardCollector(Collector):
    def __init__(self, guard: Callable[[], Guard], errors: ProtocolErrors) -> None:
        self._guard = guard
        self._errors = errors

    def collect(self) -> Iterator[Metric]:
        guard = self._guard()
        requests = CounterMetricFamily(
            PREFIX + "requests",
            "Requests decided, by model, tier and reason.",
            labels=["model", "tier", "reason"],
        )
        for decision in guard.decisions():
            requests.add_metric([decision.model_name, decision.tier_name, decision.reason], decision.count)
        yield requests

        states = GaugeMetricFamily(
            PREFIX + "breaker_state", "1 for the breaker's current state.", labels=["model", "tier", "state"]
        )
        for tier, current in guard.breaker_states():
            for state in BreakerState:
                states.add_metric([tier.model_name, tier.name, state.value], 1.0 if state is current else 0.0)
        yield states

        transitions = CounterMetricFamily(
            PREFIX + "breaker_transitions",
            "Breaker state changes.",
            labels=["model", "tier", "from_state", "to_state"],
        )
        for key, count in sorted(guard.transitions.items()):
            transitions.add_metric(list(key), count)
        yield transitions

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
        for tier in guard.tiers():
            if tier.breaker is None:
                continue
            labels = [tier.model_name, tier.name]
            for outcome, count in tier.outcomes.items():
                outcomes.add_metric([*labels, outcome], count)
            inflight.add_metric(labels, tier.inflight)
            _add_histogram(latency, labels, tier.latency)
        yield outcomes
        yield inflight
        yield latency

        duration = HistogramMetricFamily(
            PREFIX + "decision_duration_seconds", "Time inside modelguard to decide a request's tier."
        )
        _add_histogram(duration, [], guard.decision_duration)
        yield duration

        errors = CounterMetricFamily(
            PREFIX + "protocol_errors", "ext_proc messages that broke the protocol, by kind.", labels=["kind"]
        )
        for kind, count in sorted(self._errors.counts.items()):
            errors.add_metric([kind], count)
        yield errors


def _add_histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    buckets = [("+Inf" if bound == float("inf") else repr(bound), count) for bound, count in histogram.cumulative()]
    family.add_metric(labels, buckets, histogram.total)


class GuardRegistry(CollectorRegistry):
    """Every family of /metrics, plus what the sliced renderer needs to write them itself: the
    protocol error counts and ``runtime``, a registry of the process, platform and gc collectors
    alone (small enough for prometheus_client to render in one go)."""

    def __init__(self, guard: Callable[[], Guard], errors: ProtocolErrors) -> None:
        super().__init__(auto_describe=False)
        self.errors = errors
        self.runtime = CollectorRegistry(auto_describe=False)
        self.register(GuardCollector(guard, errors))
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.register(collector)
            self.runtime.register(collector)


def registry_for(guard: Callable[[], Guard], errors: ProtocolErrors) -> GuardRegistry:
    return GuardRegistry(guard, errors)
