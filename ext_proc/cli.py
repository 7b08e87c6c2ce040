"""The ``modelguard`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from ext_proc import __version__
from ext_proc.app import DEFAULT_ADMIN_ADDRESS, DEFAULT_GRACE, DEFAULT_GRPC_ADDRESS, serve
from ext_proc.logs import configure
from ext_proc.policy import PolicyError, load_policy


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelguard",
        description="Envoy ext_proc server: per-model circuit breakers and a degrade ladder.",
    )
    parser.add_argument("--version", action="version", version=f"modelguard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser("serve", help="run the ext_proc server")
    serve_cmd.add_argument("--policy", required=True, metavar="FILE", help="the policy file (YAML)")
    serve_cmd.add_argument(
        "--grpc-address",
        default=DEFAULT_GRPC_ADDRESS,
        help=f"ext_proc gRPC listen address ({DEFAULT_GRPC_ADDRESS})",
    )
    serve_cmd.add_argument(
        "--admin-address",
        default=DEFAULT_ADMIN_ADDRESS,
        help=f"admin HTTP address for /metrics, /healthz, /readyz, /v1/state ({DEFAULT_ADMIN_ADDRESS})",
    )
    serve_cmd.add_argument(
        "--grace", type=float, default=DEFAULT_GRACE, help="seconds in-flight streams get on SIGTERM (5)"
    )
    serve_cmd.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    check_cmd = commands.add_parser("check", help="validate a policy file: exit 0, or 1 naming every error")
    check_cmd.add_argument("file", metavar="FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.file)
    configure(args.log_level)
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        _print_errors(exc)
        return 1
    try:
        return asyncio.run(serve(policy, args.grpc_address, args.admin_address, args.grace))
    except KeyboardInterrupt:
        return 130


def _check(path: str) -> int:
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        _print_errors(exc)
        return 1
    tiers = sum(len(m.tiers) for m in policy.models)
    print(f"{path}: OK ({len(policy.models)} model(s), {tiers} tier(s))")
    return 0


def _print_errors(exc: PolicyError) -> None:
    print(f"{exc.source}: {len(exc.errors)} error(s)", file=sys.stderr)
    for error in exc.errors:
        print(f"  {error}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
