"""``modelguard ctl``'s command line (no gRPC import here: the CLI builds every parser before it
applies gRPC's runtime settings)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ext_proc.server.settings import DEFAULT_ADMIN_GRPC_ADDRESS

TOKEN_ENV = "MODELGUARD_ADMIN_TOKEN"
ADDRESS_ENV = "MODELGUARD_ADDRESS"


def add_ctl_parser(commands: Any) -> None:
    ctl = commands.add_parser(
        "ctl",
        help="operate a running modelguard: state, forced states, resets, reloads, events",
        description="Talks to modelguard's admin gRPC API. Exit 0 on success, 1 when the server refused, "
        "2 when it cannot be reached or the command is misused.",
    )
    ctl.add_argument(
        "--address",
        default=os.environ.get(ADDRESS_ENV) or DEFAULT_ADMIN_GRPC_ADDRESS,
        help=f"the admin gRPC address (${ADDRESS_ENV}, else {DEFAULT_ADMIN_GRPC_ADDRESS})",
    )
    ctl.add_argument("--token-file", metavar="FILE", help=f"the admin token (else ${TOKEN_ENV})")
    ctl.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer (10)")
    ctl.add_argument("--tls-ca", metavar="FILE", help="speak TLS, trusting these PEM CA certificates")
    ctl.add_argument("--tls-cert", metavar="FILE", help="a client certificate, for mutual TLS")
    ctl.add_argument("--tls-key", metavar="FILE", help="the key of --tls-cert")
    ctl.add_argument("--tls-server-name", metavar="NAME", help="the name the server's certificate must carry")
    verbs = ctl.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    state = verbs.add_parser("state", help="every model's tiers: state, window figures, forced states")
    state.add_argument("--model", default="", help="only this model")
    state.add_argument("--output", choices=["table", "json"], default="table")

    for verb, what in (("force-open", "admits nothing: requests take the next tier"),
                       ("force-closed", "admits everything and never trips; outcomes still shown")):  # fmt: skip
        forcing = verbs.add_parser(verb, help=f"force a tier: {what}")
        forcing.add_argument("model")
        forcing.add_argument("tier")
        forcing.add_argument("--reason", default="", help="why, for the log and for the next person")
        forcing.add_argument("--for", dest="duration", metavar="DURATION", help="back to auto after (30s, 10m, 2h)")
    auto = verbs.add_parser("auto", help="hand a tier back to its breaker (closed, fresh window)")
    auto.add_argument("model")
    auto.add_argument("tier")
    reset = verbs.add_parser("reset", help="close a tier's breaker with a fresh window and no backoff")
    reset.add_argument("model")
    reset.add_argument("tier")
    verbs.add_parser("reload", help="read the policy file again (as SIGHUP does)")
    canary = verbs.add_parser(
        "canary",
        help="canaries: show them, or abort / resume / weight / promote one",
        description="ctl canary [MODEL] shows state, weight, both arms and the tests; ctl canary abort MODEL "
        "[--reason TEXT], resume MODEL, weight MODEL PERCENT, promote MODEL change one (durably).",
    )
    canary.add_argument("words", nargs="*", metavar="[ACTION] MODEL [PERCENT]")
    canary.add_argument("--model", default="", help="show only this model (a model named like an action)")
    canary.add_argument("--reason", default="", help="why, for the log and for the next person")
    canary.add_argument("--output", choices=["table", "json"], default="table")
    watch = verbs.add_parser("watch", help="breaker transitions, forced-state changes and reloads as they happen")
    watch.add_argument("--output", choices=["text", "json"], default="text")
    watch.add_argument("--count", type=_count, default=0, help="stop after this many events (0: never)")


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0 or more)")
    return int(text)
