"""The PrometheusRule: the alerts that say when modelguard protects less than it should, each pointing at
the README section that says what to do."""

from __future__ import annotations

from typing import Any

import yaml

from istio.monitoring.series import (
    CANARY_STATE,
    FAILURE_MODE_ALLOWED,
    INFO,
    MODELGUARD_JOB,
    RELOADS,
    REQUESTS,
    STATE,
    STREAMS_FAILED,
    STREAMS_STARTED,
    in_state,
    ratio,
    sum_increase,
    sum_rate,
)

NAME = "modelguard"
NAMESPACE = "modelguard"
LABELS = {"app.kubernetes.io/name": "modelguard"}

RUNBOOK = "README.md"
"""Where the alerts' runbook_url points: the README section that says what to do (a path in this
repository, with the section's anchor)."""

TIER = "{{ $labels.model }} / {{ $labels.tier }}"
WHERE = "(namespace {{ $labels.namespace }})"
PROXY = "Envoy pod {{ $labels.namespace }}/{{ $labels.pod }}"


def alert(
    name: str,
    expr: str,
    severity: str,
    summary: str,
    description: str,
    section: str,
    duration: str | None = None,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if duration is not None:
        rule["for"] = duration
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{RUNBOOK}#{section}",
    }
    return rule


def fail_open_share(metric: str) -> str:
    """Per Envoy pod, not per namespace: one proxy that cannot reach modelguard is already a hole."""
    return ratio(
        sum_rate(metric, "", "namespace, pod", "5m"),
        sum_rate(STREAMS_STARTED, "", "namespace, pod", "5m"),
    )


def breaker_alerts() -> list[dict[str, Any]]:
    return [
        alert(
            "ModelguardBreakerOpen",
            in_state(STATE, 'state=~"open|half_open"', "namespace, model, tier"),
            "warning",
            f"Breaker of {TIER} open for more than 10 minutes",
            f"The breaker of tier {TIER} {WHERE} has been open or half-open (its probes failing) for more than 10 "
            "minutes: its requests are served by the tiers below it. Check the tier's upstream; `modelguard ctl "
            "state --model {{ $labels.model }}` shows the failure and slow rates that opened it.",
            "operator-controls",
            "10m",
        ),
        alert(
            "ModelguardTierForcedOpen",
            in_state(STATE, 'state="forced_open"', "namespace, model, tier"),
            "warning",
            f"Tier {TIER} forced open for more than an hour",
            f"An operator forced tier {TIER} {WHERE} open more than an hour ago: it admits nothing, its "
            "requests take the next tier. `modelguard ctl state` names who and why; `modelguard ctl auto {{ "
            "$labels.model }} {{ $labels.tier }}` hands it back to its breaker.",
            "operator-controls",
            "1h",
        ),
        alert(
            "ModelguardTierForcedClosed",
            in_state(STATE, 'state="forced_closed"', "namespace, model, tier"),
            "warning",
            f"Tier {TIER} forced closed for more than an hour",
            f"An operator forced tier {TIER} {WHERE} closed more than an hour ago: it admits everything and its "
            "breaker cannot trip. `modelguard ctl state` shows what the breaker would do; `modelguard ctl auto {{ "
            "$labels.model }} {{ $labels.tier }}` hands it back.",
            "operator-controls",
            "1h",
        ),
        alert(
            "ModelguardNoTierAvailable",
            sum_rate(REQUESTS, 'tier="none"', "namespace, model", "5m") + " > 0",
            "critical",
            "Every tier of {{ $labels.model }} refuses requests",
            "For 5 minutes every tier of model {{ $labels.model }} " + WHERE + " has refused some requests: those "
            "clients get modelguard's built-in 503 (gRPC UNAVAILABLE). The ladder has no tier left that admits "
            "them; a `respond:` tier at its end would answer them instead.",
            "how-it-works",
            "5m",
        ),
    ]


def canary_alerts() -> list[dict[str, Any]]:
    return [
        alert(
            "ModelguardCanaryAborted",
            in_state(CANARY_STATE, 'state="aborted"', "namespace, model"),
            "warning",
            "Canary of {{ $labels.model }} aborted",
            "The canary of model {{ $labels.model }} " + WHERE + " was aborted, by its guardrails or by an "
            "operator: every key is back on the stable version, across restarts, until `modelguard ctl canary "
            "resume {{ $labels.model }}` or a policy with another canary route. `modelguard ctl canary {{ "
            "$labels.model }}` shows the evidence.",
            "canary-gating",
        ),
    ]


def fail_open_alerts() -> list[dict[str, Any]]:
    return [
        alert(
            "ModelguardFailingOpen",
            fail_open_share(FAILURE_MODE_ALLOWED) + " > 0.01",
            "warning",
            f"{PROXY} lets requests through without modelguard",
            f"For 10 minutes {PROXY} has let {{{{ $value | humanizePercentage }}}} of its ext_proc streams through "
            "without modelguard's decision (failure_mode_allow): modelguard is down, refuses the proxy, or answers "
            "slower than message_timeout. Those requests go to the catch-all route, unprotected and untagged.",
            "security",
            "10m",
        ),
        alert(
            "ModelguardUnreachable",
            fail_open_share(STREAMS_FAILED) + " > 0.1",
            "critical",
            f"{PROXY} cannot reach modelguard",
            f"For 5 minutes {{{{ $value | humanizePercentage }}}} of the ext_proc streams of {PROXY} to modelguard "
            "failed to open or broke: its model traffic flows without breakers. Check modelguard's pods, the "
            "modelguard cluster's health in the proxy, and the policies that admit the proxy to modelguard's gRPC "
            "port.",
            "security",
            "5m",
        ),
        alert(
            "ModelguardTargetDown",
            f"up{{{MODELGUARD_JOB}}} == 0",
            "warning",
            "modelguard target {{ $labels.namespace }}/{{ $labels.pod }} is down",
            "Prometheus has not scraped modelguard's admin endpoint {{ $labels.instance }} for 5 minutes: the "
            "replica is down, or its admin port is not reachable from Prometheus.",
            "running-it",
            "5m",
        ),
        alert(
            "ModelguardTargetMissing",
            f"absent(up{{{MODELGUARD_JOB}}} == 1)",
            "critical",
            "No modelguard replica is up",
            "For 10 minutes no modelguard target has answered Prometheus: either modelguard is not running (every "
            "proxy fails open) or it is not scraped (and the other modelguard alerts cannot fire).",
            "running-it",
            "10m",
        ),
    ]


def policy_alerts() -> list[dict[str, Any]]:
    return [
        alert(
            "ModelguardPolicyReloadFailed",
            sum_increase(RELOADS, 'result="error"', "namespace, pod", "15m") + " > 0",
            "warning",
            "modelguard {{ $labels.namespace }}/{{ $labels.pod }} refused a policy file",
            "modelguard {{ $labels.namespace }}/{{ $labels.pod }} refused a new policy file in the last 15 "
            "minutes and serves on with the previous one. Its `policy_reload_failed` log line lists the errors; "
            "`modelguard check` says the same of the file.",
            "running-it",
        ),
        alert(
            "ModelguardPolicyDiverged",
            f"count by (namespace) (count by (namespace, sha256) ({INFO})) > 1",
            "warning",
            "modelguard replicas in {{ $labels.namespace }} run different policies",
            "For 15 minutes the modelguard replicas in {{ $labels.namespace }} have run {{ $value }} different "
            f"policy files ({INFO}'s sha256): some refused or missed a reload.",
            "running-it",
            "15m",
        ),
    ]


def prometheus_rule() -> dict[str, Any]:
    groups = [
        {"name": "modelguard.breakers", "rules": breaker_alerts()},
        {"name": "modelguard.canary", "rules": canary_alerts()},
        {"name": "modelguard.fail-open", "rules": fail_open_alerts()},
        {"name": "modelguard.policy", "rules": policy_alerts()},
    ]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)},
        "spec": {"groups": groups},
    }


class _Dumper(yaml.SafeDumper):
    """Block style, strings with newlines as literal blocks, no aliases: the file reads like one written
    by hand, and a PromQL expression keeps its line breaks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _string)


def rules_text(command: str) -> str:
    header = (
        f"# Generated by istio/monitoring/generate.py: do not edit. Rewrite it with `{command}`;\n"
        f"# `{command} --check` fails when this file is not what the script writes.\n"
    )
    body = yaml.dump(prometheus_rule(), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096)
    return header + body
