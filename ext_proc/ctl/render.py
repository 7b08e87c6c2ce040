"""What ``modelguard ctl`` prints: a table people read, JSON for scripts, one line per event."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict

from ext_proc.api import admin_pb2

_FORCE_NAMES = {admin_pb2.AUTO: "auto", admin_pb2.FORCED_OPEN: "forced_open", admin_pb2.FORCED_CLOSED: "forced_closed"}


def clock_time(stamp: Any) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp.seconds))


def forced_text(forced: Any) -> str:
    """``by alice@h (ipv4:127.0.0.1:5555) until 2026-12-05T12:30:00Z: gpu node hot``."""
    text = f"by {forced.caller}"
    if forced.HasField("until"):
        text += f" until {clock_time(forced.until)}"
    return f"{text}: {forced.reason}" if forced.reason else text


def _percent(rate: float) -> str:
    return f"{rate * 100:.1f}"


def state_table(answers: Sequence[Any]) -> str:
    """One row per tier (and per worker when there are several)."""
    several = len(answers) > 1
    header = ["MODEL", "TIER", "STATE", "CALLS", "FAIL%", "SLOW%", "INFLIGHT", "FORCED"]
    if several:
        header.insert(0, "WORKER")
    rows = [header]
    for answer in answers:
        for model in answer.models:
            for tier in model.tiers:
                row = [
                    model.name,
                    tier.name,
                    tier.state + (f" (would open: {tier.would_open})" if tier.would_open else ""),
                    str(tier.window.calls),
                    _percent(tier.window.failure_rate),
                    _percent(tier.window.slow_rate),
                    str(tier.inflight),
                    forced_text(tier.forced) if tier.HasField("forced") else "-",
                ]
                if several:
                    row.insert(0, str(answer.worker))
                rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines = ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
             for row in rows]  # fmt: skip
    first = answers[0]
    footer = [f"policy sha256 {first.policy_sha256[:12] or '-'}"]
    if several and len({answer.policy_sha256 for answer in answers}) > 1:
        footer.append("WORKERS SERVE DIFFERENT POLICIES: " + ", ".join(
            f"worker {answer.worker} {answer.policy_sha256[:12]}" for answer in answers
        ))  # fmt: skip
    for answer in answers:
        for order in answer.dormant:
            footer.append(
                f"kept for a tier the policy lacks: {order.model}/{order.tier} "
                f"{_FORCE_NAMES.get(order.forced.mode, '?')} {forced_text(order.forced)}"
            )
    return "\n".join([*(line.rstrip() for line in lines), *footer])


def state_json(answers: Sequence[Any]) -> str:
    documents = [as_dict(answer) for answer in answers]
    return json.dumps(documents[0] if len(documents) == 1 else {"workers": documents}, indent=2, sort_keys=True)


def tier_line(model: str, tier: Any) -> str:
    text = f"{model}/{tier.name}: {tier.state}"
    if tier.HasField("forced"):
        text += f" ({forced_text(tier.forced)})"
    return text


def event_line(event: Any) -> str:
    """``2026-12-05T12:00:01Z worker 0 recommender/primary breaker closed -> open (failure_rate)``."""
    prefix = f"{clock_time(event.time)} worker {event.worker}"
    kind = event.WhichOneof("kind")
    if kind == "breaker_transition":
        move = event.breaker_transition
        return (
            f"{prefix} {move.model}/{move.tier} breaker {move.from_state} -> {move.to_state} ({move.cause}; "
            f"{move.window.failures}/{move.window.calls} failed)"
        )
    if kind == "forced_state_change":
        change = event.forced_state_change
        who = f"ended by {change.ended_by}" if change.ended_by else forced_text(change.forced)
        return f"{prefix} {change.model}/{change.tier} {change.from_state} -> {change.to_state} ({who})"
    if kind == "canary_change":
        change = event.canary_change
        return (
            f"{prefix} {change.model} canary {change.from_state} -> {change.to_state} at {change.to_weight * 100:g}% "
            f"({change.cause}; canary {change.canary.canary.failures}/{change.canary.canary.calls} failed, "
            f"stable {change.canary.stable.failures}/{change.canary.stable.calls})"
        )
    if kind == "policy_reload":
        reload = event.policy_reload
        return f"{prefix} policy reload {reload.result} ({reload.trigger}) sha256 {reload.policy_sha256[:12]}"
    return f"{prefix} (an event this ctl does not know)"


def event_json(event: Any) -> str:
    return json.dumps(as_dict(event), sort_keys=True)


def as_dict(message: Any) -> dict[str, Any]:
    """Zero figures included: a script reading ``calls`` should find 0, not nothing."""
    found: dict[str, Any] = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return found
