"""The dashboard's row on overload protection: each tier's concurrency limit against the calls it
counts, the requests shed or stepped down over a limit, and tiers whose own answers push them back
(README, "Overload: limits, shedding and retries")."""

from __future__ import annotations

from istio.monitoring.panels import PER_TIER, Section, queries, timeseries
from istio.monitoring.series import CONCURRENCY_LIMIT, LIMIT_INFLIGHT, MODELS, PUSHED_BACK, REQUESTS, sum_rate


def limit_panels() -> Section:
    return Section(
        "Concurrency limits and shedding",
        108,
        timeseries(
            29,
            "Concurrency limit and calls counted",
            "Each limited tier's limit (the lowest any replica holds; adaptive limits move with latency) and "
            "the calls its limit counts, summed over replicas.",
            "short",
            queries(
                (f"min by (model, tier) ({CONCURRENCY_LIMIT}{{{MODELS}}})", "{{model}}/{{tier}} limit"),
                (f"sum by (model, tier) ({LIMIT_INFLIGHT}{{{MODELS}}})", "{{model}}/{{tier}} counted"),
            ),
        ),
        timeseries(
            30,
            "Shed and stepped down",
            "Sheddable requests refused with 429 over a limit (`shed`), and requests served lower down the "
            "ladder or refused because a tier was over its limit or pushed back (`overload`).",
            "reqps",
            queries(
                (
                    sum_rate(REQUESTS, f'{MODELS}, reason=~"shed|overload"', "model, tier, reason"),
                    PER_TIER + " {{reason}}",
                )
            ),
        ),
        timeseries(
            31,
            "Tiers pushed back",
            "1 while a tier's own 429 / RESOURCE_EXHAUSTED answers step its traffic but the critical down.",
            "short",
            queries((f"max by (model, tier) ({PUSHED_BACK}{{{MODELS}}})", PER_TIER)),
            max_value=1,
        ),
    )
