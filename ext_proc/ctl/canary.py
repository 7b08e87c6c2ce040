"""``modelguard ctl canary``: every canary's state, weight, arms and tests; abort, resume, weight
and promote. An order goes to one worker, which writes it to the shared state directory; the
others follow within a second (server/forced.py), as for forced states."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any

from ext_proc.api import admin_pb2
from ext_proc.ctl.client import UNREACHABLE, Client, Connection, CtlError, caller_name
from ext_proc.ctl.render import as_dict, clock_time

ACTIONS = {"abort": "AbortCanary", "resume": "ResumeCanary", "weight": "SetCanaryWeight", "promote": "PromoteCanary"}


def run_canary(connection: Connection, args: argparse.Namespace, others: Any) -> int:
    """``others(connection, answer)``: the other workers' addresses (ctl/commands.py)."""
    words = list(args.words)
    if words and words[0] in ACTIONS:
        return _order(connection, words, args.reason)
    if len(words) > 1:
        raise CtlError(f"ctl canary takes one MODEL to show, or one of {', '.join(ACTIONS)}", UNREACHABLE)
    request = admin_pb2.GetCanaryRequest(model=args.model or (words[0] if words else ""))
    client = Client(connection)
    try:
        first = client.call("GetCanary", request)
    finally:
        client.close()
    answers, failed = [first], 0
    for address in others(connection, first):
        worker = Client(_at(connection, address))
        try:
            answers.append(worker.call("GetCanary", request))
        except CtlError as exc:
            print(f"modelguard ctl: worker at {address}: {exc}", file=sys.stderr)
            failed = max(failed, exc.code)
        finally:
            worker.close()
    answers.sort(key=lambda answer: answer.worker)
    print(_json(answers) if args.output == "json" else canary_text(answers))
    return failed


def _at(connection: Connection, address: str) -> Connection:
    return dataclasses.replace(connection, address=address)


def _order(connection: Connection, words: Sequence[str], reason: str) -> int:
    action = words[0]
    wanted = 3 if action == "weight" else 2
    if len(words) != wanted:
        usage = "weight MODEL PERCENT" if action == "weight" else f"{action} MODEL"
        raise CtlError(f"usage: ctl canary {usage}", UNREACHABLE)
    request = admin_pb2.CanaryOrderRequest(model=words[1], reason=reason, caller=caller_name())
    if action == "weight":
        request.weight = _share(words[2])
    client = Client(connection)
    try:
        answer = client.call(ACTIONS[action], request, mutating=True)
    finally:
        client.close()
    canary = answer.canary.canary
    print(f"{answer.canary.model} canary: {canary.state} at {canary.weight * 100:g}% (was {answer.previous_state})")
    if answer.warning:
        print(f"modelguard ctl: warning: {answer.warning}", file=sys.stderr)
    return 0


def _share(text: str) -> float:
    """``10%``: a percentage of keys, as a share. The sign is required, as in the policy: is a
    bare 0.5 half a percent or half the keys?"""
    try:
        percent = float(text[:-1]) if text.endswith("%") and text[:-1].replace(".", "", 1).isdigit() else -1.0
    except ValueError:
        percent = -1.0
    if not 0 < percent <= 100:
        raise CtlError(
            f"PERCENT must be a percentage above 0% and at most 100%, such as 10%, not {text!r}", UNREACHABLE
        )
    return percent / 100


def canary_text(answers: Sequence[Any]) -> str:
    lines: list[str] = []
    several = len(answers) > 1
    for answer in answers:
        for entry in answer.canaries:
            lines.extend(_block(entry, f"worker {answer.worker} " if several else ""))
    return "\n".join(lines) if lines else "no canaries in the live policy"


def _block(entry: Any, worker: str) -> list[str]:
    canary = entry.canary
    head = (
        f"{worker}{entry.model}: {canary.state} at {canary.weight * 100:g}% to {canary.route} "
        f"(since {clock_time(canary.since)}; its breaker {canary.breaker_state})"
    )
    arms = [
        f"  canary  calls {canary.canary.calls}  failures {canary.canary.failures} "
        f"({canary.canary.failure_rate * 100:.2f}%)  slow {canary.canary.slow}"
        + (f" (over {canary.canary.slow_after_seconds * 1000:.1f} ms)" if canary.canary.slow_after_seconds else ""),
        f"  stable  calls {canary.stable.calls}  failures {canary.stable.failures} "
        f"({canary.stable.failure_rate * 100:.2f}%, at most {canary.stable.failure_rate_bound * 100:.2f}%)  "
        f"p95 {canary.stable.latency_p95_seconds * 1000:.1f} ms",
    ]
    tests = f"  tests (abort at the boundary; none below {canary.min_calls} canary calls but harm): " + ", ".join(
        f"{test.name} {test.statistic:.3g} of {test.boundary:g}"
        + (f" (allowed {test.null_rate * 100:.2f}%)" if test.null_rate else "")
        for test in canary.tests
    )
    lines = [head, *arms, tests]
    if canary.HasField("order"):
        order = canary.order
        text = f"  order: {order.action} by {order.caller} at {clock_time(order.since)}"
        lines.append(f"{text}: {order.reason}" if order.reason else text)
    return lines


def _json(answers: Sequence[Any]) -> str:
    documents = [as_dict(answer) for answer in answers]
    return json.dumps(documents[0] if len(documents) == 1 else {"workers": documents}, indent=2, sort_keys=True)
