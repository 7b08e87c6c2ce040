"""The dashboard's rows on modelguard's own health and the upstreams' answers: what the breakers weigh,
how fast modelguard decides, and when Envoy goes on without it (fail-open)."""

from __future__ import annotations

from istio.monitoring.panels import PER_TIER, Section, queries, timeseries
from istio.monitoring.series import (
    ERRORS,
    FAILURE_MODE_ALLOWED,
    HOST_CALLS,
    HOST_FAILURES,
    INFLIGHT,
    INFO,
    MESSAGE_TIMEOUTS,
    MODELGUARD_JOB,
    MODELS,
    NS,
    REJECTED_MUTATIONS,
    RELOADS,
    SPURIOUS_MESSAGES,
    STREAMS_FAILED,
    STREAMS_STARTED,
    decision_quantile,
    envoy_rate,
    failure_ratio,
    outcome_rate,
    ratio,
    sum_increase,
    sum_rate,
    upstream_quantile,
)


def overload_panels() -> Section:
    return Section(
        "Outcomes and overload",
        103,
        timeseries(
            15,
            "Overload answers (429, RESOURCE_EXHAUSTED)",
            "Responses judged as overload: counted apart, they never trip a breaker (unless the policy lists "
            "them as failures).",
            "reqps",
            queries((outcome_rate("overload"), PER_TIER)),
        ),
        timeseries(
            16,
            "Failure ratio by tier",
            "Failures among judged responses (success or failure) of each tier: what its breaker weighs "
            "against `failure_rate`.",
            "percentunit",
            queries((failure_ratio(), PER_TIER)),
            max_value=1,
        ),
        timeseries(
            17,
            "In flight by tier",
            "Requests admitted to a tier and not yet answered, summed over replicas.",
            "short",
            queries((f"sum by (model, tier) ({INFLIGHT}{{{MODELS}}})", PER_TIER)),
        ),
    )


PER_HOST = "{{model}}/{{tier}} {{host}}"


def host_panels() -> Section:
    per_host = "max by (model, tier, host) ({name}{{{models}}})"
    calls = per_host.format(name=HOST_CALLS, models=MODELS)
    failures = per_host.format(name=HOST_FAILURES, models=MODELS)
    return Section(
        "Upstream hosts",
        107,
        timeseries(
            27,
            "Failure ratio by upstream host",
            "Each upstream host's failures over its calls in its tier's breaker window (the most any replica "
            "of modelguard saw). One bad replica of several is Envoy's to eject and does not open the model's "
            'breaker; failures on several hosts do (README, "Host-aware judgement").',
            "percentunit",
            queries((ratio(failures, calls), PER_HOST)),
            width=12,
            max_value=1,
        ),
        timeseries(
            28,
            "Calls by upstream host",
            "Calls each upstream host answered in its tier's breaker window (at most 32 hosts a tier; `none`: "
            "answers without a host).",
            "short",
            queries((calls, PER_HOST)),
            width=12,
        ),
    )


def latency_panels() -> Section:
    return Section(
        "Latency",
        104,
        timeseries(
            18,
            "Decision latency",
            "Time inside modelguard to decide a request's tier (one request-headers message in 8 is timed). "
            "Envoy fails open past its message_timeout (200 ms in envoy/envoy.yaml).",
            "s",
            queries(
                (decision_quantile(0.5), "p50"),
                (decision_quantile(0.99), "p99"),
                (decision_quantile(0.999), "p99.9"),
            ),
            width=12,
        ),
        timeseries(
            19,
            "Upstream latency by tier",
            "Request-headers to response-headers time of each tier, as modelguard saw it (what the breaker "
            "compares with `slow_call_duration`).",
            "s",
            queries(
                (upstream_quantile(0.5), PER_TIER + " p50"),
                (upstream_quantile(0.95), PER_TIER + " p95"),
            ),
            width=12,
            table=True,
        ),
    )


def envoy_panels() -> Section:
    return Section(
        "Fail-open, as Envoy sees it",
        105,
        timeseries(
            20,
            "Requests that failed open",
            "Requests Envoy let through unprotected and untagged because modelguard was down, refused, or slower "
            f"than message_timeout (failure_mode_allow), by proxy namespace: `{FAILURE_MODE_ALLOWED}`.",
            "reqps",
            queries((envoy_rate(FAILURE_MODE_ALLOWED), "{{namespace}}")),
            width=6,
        ),
        timeseries(
            21,
            "Share of ext_proc streams failing open",
            "Failed-open requests over the ext_proc streams Envoy started for modelguard.",
            "percentunit",
            queries(
                (ratio(envoy_rate(FAILURE_MODE_ALLOWED), envoy_rate(STREAMS_STARTED)), "{{namespace}}"),
            ),
            width=6,
            max_value=1,
        ),
        timeseries(
            22,
            "ext_proc stream errors",
            "Streams to modelguard that failed (unreachable, refused), message timeouts, header mutations Envoy "
            "rejected, and messages Envoy did not expect.",
            "reqps",
            queries(
                (envoy_rate(STREAMS_FAILED), "{{namespace}} streams failed"),
                (envoy_rate(MESSAGE_TIMEOUTS), "{{namespace}} message timeouts"),
                (envoy_rate(REJECTED_MUTATIONS), "{{namespace}} rejected header mutations"),
                (envoy_rate(SPURIOUS_MESSAGES), "{{namespace}} spurious messages"),
            ),
            width=6,
        ),
        timeseries(
            23,
            "modelguard targets up",
            "modelguard admin endpoints Prometheus scrapes, and how many of them answer.",
            "short",
            queries(
                (f"sum by (namespace) (up{{{NS}, {MODELGUARD_JOB}}})", "{{namespace}} up"),
                (f"count by (namespace) (up{{{NS}, {MODELGUARD_JOB}}})", "{{namespace}} scraped"),
            ),
            width=6,
        ),
    )


def policy_panels() -> Section:
    return Section(
        "Policy and protocol",
        106,
        timeseries(
            24,
            "Policy reloads",
            "Reloads by result: success (a new policy is live), error (refused: the old one serves on), "
            "unchanged (same bytes).",
            "short",
            queries((sum_increase(RELOADS, NS, "result"), "{{result}}")),
            bars=True,
        ),
        timeseries(
            25,
            "Replicas by live policy",
            "How many replicas run each policy file, by its SHA-256: more than one line for long means a "
            "replica refused a reload or missed it.",
            "short",
            queries((f"count by (sha256) ({INFO}{{{NS}}})", "{{sha256}}")),
        ),
        timeseries(
            26,
            "Protocol errors",
            "ext_proc messages that broke the protocol, by kind (each ends its stream only).",
            "reqps",
            queries((sum_rate(ERRORS, NS, "kind"), "{{kind}}")),
        ),
    )
