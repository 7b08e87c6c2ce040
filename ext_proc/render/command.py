"""``modelguard render envoy|istio --policy FILE``: manifests on stdout (or --out), errors by their
place in the policy, exit 1 when the policy cannot be rendered."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from ext_proc.policy import PolicyError, load_policy
from ext_proc.policy.report import error_lines
from ext_proc.render.documents import render_envoy, render_istio
from ext_proc.render.envoy import EnvoyOptions
from ext_proc.render.istio import IstioOptions
from ext_proc.render.plan import CANARY_REPLICAS, REPLICAS, RenderError

__all__ = ["add_render_parser", "run_render"]

_ISTIO = IstioOptions()
_ENVOY = EnvoyOptions()


_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_DNS_NAME = re.compile(r"(?:\*\.)?[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)*")


def _namespace(text: str) -> str:
    if not _DNS_LABEL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a namespace (a DNS label: lowercase letters, digits, '-')")
    return text


def _host(text: str) -> str:
    if len(text) > 253 or not _DNS_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name (lowercase DNS labels joined by '.')")
    return text


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


def _replicas(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number of replicas from 1 to 10000")
    return int(text)


def _gateway(text: str) -> str:
    namespace, slash, name = text.partition("/")
    if not slash or not _DNS_LABEL.fullmatch(namespace) or not _DNS_LABEL.fullmatch(name):
        raise argparse.ArgumentTypeError(f"{text!r}: give the Gateway as NAMESPACE/NAME")
    return text


def _selector(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: give a label as KEY=VALUE")
    return key, value


def add_render_parser(commands: Any) -> None:
    render = commands.add_parser(
        "render",
        help="Envoy or Istio manifests generated from a policy",
        description="Prints manifests built from the policy's models, tiers, routes and canaries, with the "
        "reference Envoy config's filter settings, retries and outlier detection.",
    )
    targets = render.add_subparsers(dest="target", required=True, metavar="TARGET")
    istio = targets.add_parser("istio", help="DestinationRules, VirtualServices and EnvoyFilters (istio/README.md)")
    envoy = targets.add_parser("envoy", help="an Envoy bootstrap (envoy/README.md)")
    for target in (istio, envoy):
        target.add_argument("--policy", required=True, metavar="FILE", help="the policy file (YAML)")
        target.add_argument("--out", type=Path, metavar="FILE", help="write here instead of stdout")
        target.add_argument(
            "--replicas",
            type=_replicas,
            default=REPLICAS,
            help=f"hosts per tier route, for outlier ejection ({REPLICAS})",
        )
        target.add_argument(
            "--canary-replicas",
            type=_replicas,
            default=CANARY_REPLICAS,
            help=f"hosts of a canary route ({CANARY_REPLICAS})",
        )
    istio.add_argument(
        "--namespace",
        type=_namespace,
        default=_ISTIO.namespace,
        help=f"the model Services' namespace ({_ISTIO.namespace})",
    )
    istio.add_argument("--port", type=_port, default=_ISTIO.port, help=f"the model Services' port ({_ISTIO.port})")
    istio.add_argument(
        "--modelguard-host", type=_host, default=_ISTIO.modelguard_host, help=f"({_ISTIO.modelguard_host})"
    )
    istio.add_argument(
        "--modelguard-port", type=_port, default=_ISTIO.modelguard_port, help=f"({_ISTIO.modelguard_port})"
    )
    istio.add_argument(
        "--filter-namespace",
        type=_namespace,
        default=_ISTIO.filter_namespace,
        help=f"where the sidecar EnvoyFilter goes: the root namespace for every namespace ({_ISTIO.filter_namespace}), "
        "or one namespace to protect only its clients",
    )
    istio.add_argument(
        "--gateway", type=_gateway, metavar="NAMESPACE/NAME", help="also route and protect at this Gateway"
    )
    istio.add_argument(
        "--gateway-host", type=_host, default=_ISTIO.gateway_host, help=f"the Gateway's host ({_ISTIO.gateway_host})"
    )
    istio.add_argument("--gateway-port", type=_port, default=_ISTIO.gateway_port, help=f"({_ISTIO.gateway_port})")
    istio.add_argument(
        "--gateway-selector",
        type=_selector,
        action="append",
        metavar="KEY=VALUE",
        help="the gateway pods' labels (istio=ingressgateway)",
    )
    envoy.add_argument(
        "--upstream",
        default=_ENVOY.upstream,
        help=f"HOST:PORT of a route's servers, {{route}} replaced ({_ENVOY.upstream})",
    )
    envoy.add_argument("--modelguard", default=_ENVOY.modelguard, metavar="HOST:PORT", help=f"({_ENVOY.modelguard})")


def run_render(args: argparse.Namespace, argv: list[str]) -> int:
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        for line in error_lines(exc):
            print(line, file=sys.stderr)
        return 1
    command = shlex.join(["modelguard", *argv])
    replicas = {"replicas": args.replicas, "canary_replicas": args.canary_replicas}
    try:
        if args.target == "istio":
            options = IstioOptions(
                namespace=args.namespace,
                port=args.port,
                modelguard_host=args.modelguard_host,
                modelguard_port=args.modelguard_port,
                filter_namespace=args.filter_namespace,
                gateway=args.gateway,
                gateway_host=args.gateway_host,
                gateway_port=args.gateway_port,
                gateway_selector=tuple(args.gateway_selector or _ISTIO.gateway_selector),
                **replicas,
            )
            text = render_istio(policy, options, command)
        else:
            text = render_envoy(
                policy, EnvoyOptions(upstream=args.upstream, modelguard=args.modelguard, **replicas), command
            )
    except RenderError as exc:
        for line in exc.errors:
            print(f"{args.policy}: {line}", file=sys.stderr)
        return 1
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        args.out.write_text(text)
    except OSError as exc:
        print(f"modelguard render: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
