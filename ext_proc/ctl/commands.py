"""``modelguard ctl``: the operator's command line over the admin gRPC API.

Global options come before the command. Exit 0 on success, 1 when the server refused (an
unknown model or tier, with the known names; a bad or missing token; a refused policy file), 2
when it could not be reached or the command was misused. No traceback for any of these.

Under ``serve --workers N`` every worker has its own admin port; the one asked names them all
(``GetStateResponse.workers``), and ``state``, ``reset``, ``reload`` and ``watch`` go to every
one. A forced state is given to one worker: it writes the shared state directory, and every
other worker follows it there within a second (server/forced.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ext_proc.api import admin_pb2
from ext_proc.ctl import render
from ext_proc.ctl.canary import run_canary
from ext_proc.ctl.client import (
    REFUSED,
    UNREACHABLE,
    Client,
    Connection,
    CtlError,
    caller_name,
    read_pem,
    read_token,
)
from ext_proc.policy.durations import parse_duration
from ext_proc.server.settings import join_address, split_address

_MODES = {"force-open": admin_pb2.FORCED_OPEN, "force-closed": admin_pb2.FORCED_CLOSED, "auto": admin_pb2.AUTO}


def run_ctl(args: argparse.Namespace) -> int:
    try:
        if not math.isfinite(args.timeout) or args.timeout <= 0:
            raise CtlError("--timeout must be a positive number of seconds", UNREACHABLE)
        try:
            split_address(args.address)
        except ValueError as exc:
            raise CtlError(f"--address: {exc}", UNREACHABLE) from None
        connection = Connection(
            args.address,
            read_token(args.token_file),
            args.timeout,
            read_pem(args.tls_ca, "CA file"),
            read_pem(args.tls_cert, "certificate"),
            read_pem(args.tls_key, "key"),
            args.tls_server_name,
        )
        if (connection.cert is None) != (connection.key is None) or (connection.cert and connection.ca is None):
            raise CtlError("--tls-cert and --tls-key go together, and with --tls-ca", UNREACHABLE)
        return _VERBS[args.verb](connection, args)
    except CtlError as exc:
        print(f"modelguard ctl: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 0


def _with(connection: Connection, address: str | None = None) -> Client:
    return Client(connection if address is None else dataclasses.replace(connection, address=address))


def _others(connection: Connection, answer: Any) -> list[str]:
    """The other workers' admin addresses, reached as the one asked was: the host ctl dialled (a
    worker names the address it listens on, 0.0.0.0 say, which means nothing from here) and each
    worker's port."""
    host = split_address(connection.address)[0]
    return [
        join_address(host, split_address(address)[1])
        for index, address in enumerate(answer.workers)
        if index != answer.worker
    ]


def _workers(connection: Connection) -> tuple[Any, list[str]]:
    """The state of the server asked and the admin addresses of the other workers (if any)."""
    client = _with(connection)
    try:
        answer = client.call("GetState", admin_pb2.GetStateRequest())
    finally:
        client.close()
    return answer, _others(connection, answer)


def _on_others(connection: Connection, others: Sequence[str], act: Callable[[Client], Any]) -> tuple[list[Any], int]:
    answers, failed = [], 0
    for address in others:
        client = _with(connection, address)
        try:
            answers.append(act(client))
        except CtlError as exc:
            print(f"modelguard ctl: worker at {address}: {exc}", file=sys.stderr)
            failed = exc.code if not failed else max(failed, exc.code)
        finally:
            client.close()
    return answers, failed


def _state(connection: Connection, args: argparse.Namespace) -> int:
    request = admin_pb2.GetStateRequest(model=args.model)
    client = _with(connection)
    try:
        first = client.call("GetState", request)
    finally:
        client.close()
    rest, failed = _on_others(connection, _others(connection, first), lambda c: c.call("GetState", request))
    answers = sorted([first, *rest], key=lambda answer: answer.worker)
    print(render.state_json(answers) if args.output == "json" else render.state_table(answers))
    return failed


def _force(connection: Connection, args: argparse.Namespace) -> int:
    request = admin_pb2.ForceStateRequest(
        model=args.model, tier=args.tier, mode=_MODES[args.verb], caller=caller_name()
    )
    if args.verb != "auto":
        request.reason = args.reason
        if args.duration is not None:
            try:
                seconds = parse_duration(args.duration)
            except ValueError as exc:
                raise CtlError(f"--for {exc}", UNREACHABLE) from None
            if seconds <= 0:
                raise CtlError("--for must be longer than 0", UNREACHABLE)
            request.duration.FromNanoseconds(int(seconds * 1e9))
    client = _with(connection)
    try:
        answer = client.call("ForceState", request, mutating=True)
    finally:
        client.close()
    print(f"{render.tier_line(args.model, answer.tier)} (was {answer.previous_state})")
    if answer.warning:
        print(f"modelguard ctl: warning: {answer.warning}", file=sys.stderr)
    return 0


def _reset(connection: Connection, args: argparse.Namespace) -> int:
    request = admin_pb2.ResetBreakerRequest(model=args.model, tier=args.tier, caller=caller_name())
    return _on_every_worker(
        connection, lambda c: c.call("ResetBreaker", request, mutating=True),
        lambda answer: print(render.tier_line(args.model, answer.tier)),
    )  # fmt: skip


def _reload(connection: Connection, args: argparse.Namespace) -> int:
    request = admin_pb2.ReloadPolicyRequest(caller=caller_name())
    refused = False

    def show(answer: Any) -> None:
        nonlocal refused
        print(f"reload: {answer.result} (sha256 {answer.policy_sha256[:12]})")
        for line in answer.errors:
            print(line, file=sys.stderr)
        refused = refused or answer.result == "error"

    code = _on_every_worker(connection, lambda c: c.call("ReloadPolicy", request, mutating=True), show)
    return code or (REFUSED if refused else 0)


def _on_every_worker(connection: Connection, act: Callable[[Client], Any], show: Callable[[Any], None]) -> int:
    client = _with(connection)
    try:
        first = act(client)
        state = client.call("GetState", admin_pb2.GetStateRequest())
    finally:
        client.close()
    show(first)
    rest, failed = _on_others(connection, _others(connection, state), act)
    for answer in rest:
        show(answer)
    return failed


def _watch(connection: Connection, args: argparse.Namespace) -> int:
    _, others = _workers(connection)
    addresses = [connection.address, *others]
    events: queue.Queue[Any] = queue.Queue()
    clients = [_with(connection, address) for address in addresses]

    def pump(client: Client) -> None:
        try:
            for event in client.stream("WatchEvents", admin_pb2.WatchEventsRequest()):
                events.put(event)
            events.put(CtlError(f"{client.connection.address} ended the stream", UNREACHABLE))
        except CtlError as exc:
            events.put(exc)

    for client in clients:
        threading.Thread(target=pump, args=(client,), daemon=True).start()
    shown = 0
    try:
        while not args.count or shown < args.count:
            item = events.get()
            if isinstance(item, CtlError):
                raise item
            print(render.event_json(item) if args.output == "json" else render.event_line(item), flush=True)
            shown += 1
    finally:
        for client in clients:
            client.close()
    return 0


_VERBS: dict[str, Callable[[Connection, argparse.Namespace], int]] = {
    "state": _state,
    "force-open": _force,
    "force-closed": _force,
    "auto": _force,
    "reset": _reset,
    "reload": _reload,
    "watch": _watch,
    "canary": lambda connection, args: run_canary(connection, args, _others),
}
