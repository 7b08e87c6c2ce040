"""127.0.0.1 only: free ports to bind, and one HTTP/1.1 request at a time."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ext_proc.processes.errors import StackError

__all__ = [
    "LOCALHOST",
    "HttpResult",
    "consecutive_free_ports",
    "free_ports",
    "http_request",
    "http_status",
]

LOCALHOST = "127.0.0.1"


# --------------------------------------------------------------------------- ports


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (all held open while picking).

    The ports are free when this returns; nothing stops another process from taking one before
    it is bound, so callers bind them soon and treat "address in use" as a startup failure.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOCALHOST, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def consecutive_free_ports(count: int) -> int:
    """A port p with p .. p+count-1 all free on 127.0.0.1 now (for `serve --workers`); bounded search."""
    for _ in range(200):
        base = free_ports(1)[0]
        if base + count > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(sock)
                sock.bind((LOCALHOST, port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise StackError(f"no run of {count} free ports found on {LOCALHOST}")


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 2.0,
) -> HttpResult:
    """One HTTP/1.1 request on a fresh connection. Raises OSError / HTTPException on failure."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"url needs a host and a port: {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read()
        return HttpResult(
            status=resp.status,
            headers={k.lower(): v for k, v in resp.getheaders()},
            body=data,
        )
    finally:
        conn.close()


def http_status(url: str, timeout: float) -> int | None:
    """The status of a GET of `url`; None when nothing answered (refused, reset, timed out)."""
    try:
        return http_request(url, timeout=timeout).status
    except (OSError, http.client.HTTPException):
        return None
