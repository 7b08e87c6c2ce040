"""The dashboard's rows on where requests go: which tiers refuse traffic and why, which tier serves
instead, and each canary's two arms side by side, so that a canary going wrong shows against the stable
version it is meant to match."""

from __future__ import annotations

from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries

from istio.monitoring.panels import (
    PER_TIER,
    Section,
    queries,
    query,
    stat,
    state_timeline,
    thresholds,
    timeseries,
    value_map,
)
from istio.monitoring.series import (
    ARMS,
    BREAKER_CODES,
    CANARY_CODES,
    CANARY_STATE,
    CANARY_WEIGHT,
    FORCED_CHANGES,
    MODELS,
    RATE,
    REQUESTS,
    STABLE_TIERS,
    STATE,
    TRANSITIONS,
    coded,
    count_in_state,
    failure_ratio,
    ratio,
    requests_rate,
    sum_increase,
    upstream_quantile,
)

BREAKER_LOOKS = {
    "closed": ("closed", "green"),
    "forced_closed": ("forced closed", "blue"),
    "half_open": ("half-open", "yellow"),
    "open": ("open", "red"),
    "forced_open": ("forced open", "purple"),
}


def state_changes(panel_id: int, title: str, description: str, counter: str, to_label: str) -> Timeseries:
    """Bars, not lines: a change is an event, and a tier that changes once a day must still show."""
    return timeseries(
        panel_id,
        title,
        description,
        "short",
        queries((sum_increase(counter, MODELS, f"model, tier, {to_label}"), f"{PER_TIER} -> {{{{{to_label}}}}}")),
        width=12,
        bars=True,
    )


def breaker_panels() -> Section:
    return Section(
        "Breakers and forced states",
        100,
        state_timeline(
            1,
            "Breaker state by model and tier",
            "Each routed tier's state: its breaker's (closed, half-open, open) or an operator's order "
            "(forced open, forced closed). With several replicas, the worst of them. A canary route's own "
            "breaker is the tier `<tier>@canary`.",
            query(coded(STATE, MODELS, BREAKER_CODES, "model, tier"), PER_TIER),
            value_map(BREAKER_CODES, BREAKER_LOOKS),
            width=16,
        ),
        stat(
            2,
            "Tiers refusing traffic",
            "Tiers whose breaker is open or half-open, or that an operator forced open, on any replica: their "
            "requests take the next tier of the ladder.",
            query(
                count_in_state(STATE, MODELS + ', state=~"open|half_open|forced_open"', "model, tier"),
                "refusing",
            ),
            thresholds((None, "green"), (1, "red")),
        ),
        stat(
            3,
            "Forced tiers",
            "Tiers under an operator's order (forced open or forced closed) on any replica; `modelguard ctl auto "
            "MODEL TIER` hands a tier back to its breaker.",
            query(
                count_in_state(STATE, MODELS + ', state=~"forced_open|forced_closed"', "model, tier"),
                "forced",
            ),
            thresholds((None, "green"), (1, "purple")),
        ),
        state_changes(
            4,
            "Breaker transitions",
            "State changes of the breakers themselves, by the state moved to.",
            TRANSITIONS,
            "to_state",
        ),
        state_changes(
            5,
            "Forced-state changes",
            "Operators' orders, by the state moved to: forced_open, forced_closed, or auto (handed back by an "
            "operator, by expiry, or read back from the state directory).",
            FORCED_CHANGES,
            "state",
        ),
    )


def tier_panels() -> Section:
    return Section(
        "Traffic by tier",
        101,
        timeseries(
            6,
            "Requests by tier",
            "Decisions per second, by the tier that serves them (tier `none`: every tier refused, the client got "
            "modelguard's built-in 503). A canary's requests count under its first tier (reason `canary`).",
            "reqps",
            queries((requests_rate(MODELS, "model, tier"), PER_TIER)),
            stacked=True,
        ),
        timeseries(
            7,
            "Share of requests by tier",
            "Each tier's share of its model's decisions.",
            "percentunit",
            queries(
                (
                    ratio(
                        requests_rate(MODELS, "model, tier"),
                        f"on (model) group_left {requests_rate(MODELS, 'model')}",
                    ),
                    PER_TIER,
                )
            ),
            stacked=True,
            max_value=1,
        ),
        timeseries(
            8,
            "Degraded share",
            "Share of each model's decisions not served by its first tier: served lower down the ladder because "
            "a better tier's breaker refused or an operator forced it open (reason breaker_open or forced), "
            "including those every tier refused. A lower tier's half-open probes are not counted.",
            "percentunit",
            queries(
                (
                    ratio(
                        requests_rate(MODELS + ', reason=~"breaker_open|forced"', "model"),
                        requests_rate(MODELS, "model"),
                    ),
                    "{{model}} degraded",
                ),
                (
                    ratio(requests_rate(MODELS + ', tier="none"', "model"), requests_rate(MODELS, "model")),
                    "{{model}} refused by every tier",
                ),
            ),
            max_value=1,
        ),
    )


CANARY_LOOKS = {
    "active": ("active", "green"),
    "ramping": ("ramping", "blue"),
    "complete": ("complete", "dark-green"),
    "promoted": ("promoted", "purple"),
    "aborted": ("aborted", "red"),
}

STABLE_REQUESTS = (
    f'sum by (model) (rate({REQUESTS}{{{MODELS}, reason=~"ok|half_open_probe"}}[{RATE}]) '
    f"and on (model, tier) {STABLE_TIERS})"
)
"""The stable arm's requests: its first tier's own (``ok``, half-open probes), not the canary's that count
under that tier too (reason ``canary``)."""


def on_arms(expr: str) -> str:
    """``expr`` (by model and tier) kept for the two arms of each canary only."""
    return f"{expr}\nand on (model, tier) {ARMS}"


def canary_panels() -> Section:
    return Section(
        "Canary",
        102,
        state_timeline(
            9,
            "Canary state",
            "Each canary's state: active, ramping, complete, promoted, or aborted (by its guardrails or an "
            "operator: every key back on stable until `modelguard ctl canary resume`). With several replicas, "
            "the one latest in that list.",
            query(coded(CANARY_STATE, MODELS, CANARY_CODES, "model"), "{{model}}"),
            value_map(CANARY_CODES, CANARY_LOOKS),
            width=12,
            height=8,
        ),
        timeseries(
            10,
            "Canary weight",
            "Share of sticky keys each model's canary serves (0 once aborted, 1 when promoted), averaged over "
            "replicas.",
            "percentunit",
            queries((f"avg by (model) ({CANARY_WEIGHT}{{{MODELS}}})", "{{model}}")),
            max_value=1,
        ),
        stat(
            11,
            "Canaries aborted",
            "Models whose canary is aborted on any replica.",
            query(count_in_state(CANARY_STATE, MODELS + ', state="aborted"', "model"), "aborted"),
            thresholds((None, "green"), (1, "red")),
            height=8,
        ),
        timeseries(
            12,
            "Canary arms: requests",
            "Requests per second on each arm of each canary: canary (reason `canary`) and stable (the first "
            "tier's other requests, excluded keys included).",
            "reqps",
            queries(
                (requests_rate(MODELS + ', reason="canary"', "model"), "{{model}} canary"),
                (STABLE_REQUESTS, "{{model}} stable"),
            ),
        ),
        timeseries(
            13,
            "Canary arms: failure rate",
            "Failures among judged responses (success or failure; overload and dropped streams are neither) of "
            "each arm: the canary route's tier `<tier>@canary` against the stable tier beside it.",
            "percentunit",
            queries((on_arms(f"(\n{failure_ratio()}\n)"), PER_TIER)),
            max_value=1,
        ),
        timeseries(
            14,
            "Canary arms: p95 upstream latency",
            "95th percentile of request-headers to response-headers time, as modelguard saw it, on each arm.",
            "s",
            queries((on_arms(upstream_quantile(0.95)), PER_TIER)),
        ),
    )
