"""``modelguard ctl``'s connection to the admin gRPC API: one channel per server, the token on
mutating calls, and every failure turned into a one-line error with the exit code it means."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ext_proc.api import CALLS
from ext_proc.ctl.parser import TOKEN_ENV

REFUSED = 1
"""Exit code: the server answered no (unknown name, bad or missing token, invalid request)."""
UNREACHABLE = 2
"""Exit code: no answer (nothing listening, timeout), or the command was misused."""

_UNREACHABLE_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


class CtlError(Exception):
    """A failure to report in one line and exit with ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Connection:
    address: str
    token: str | None = None
    timeout: float = 10.0
    ca: bytes | None = None
    """PEM CA certificates the server's must chain to: TLS when set."""
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str | None = None


def caller_name() -> str:
    """Who is asking, as the server records it next to its own view of the address."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def read_token(token_file: str | None) -> str | None:
    """The token from ``--token-file``, else from MODELGUARD_ADMIN_TOKEN; CtlError if the file cannot be read."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CtlError(f"cannot read the token file {token_file}: {exc}", UNREACHABLE) from None
        source = token_file
    else:
        token, source = os.environ.get(TOKEN_ENV, "").strip(), TOKEN_ENV
    if token and not all(0x21 <= ord(char) <= 0x7E for char in token):
        raise CtlError(f"the token from {source} must be printable ASCII without spaces", UNREACHABLE)
    return token or None


def read_pem(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CtlError(f"cannot read the {what} {path}: {exc.strerror or exc}", UNREACHABLE) from None


class Client:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        options: list[tuple[str, str | int]] = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        if connection.server_name:
            options.append(("grpc.ssl_target_name_override", connection.server_name))
        if connection.ca is None:
            self._channel = grpc.insecure_channel(connection.address, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(connection.ca, connection.key, connection.cert)
            self._channel = grpc.secure_channel(connection.address, credentials, options=options)

    def close(self) -> None:
        self._channel.close()

    def call(self, name: str, request: Any, mutating: bool = False) -> Any:
        call = CALLS[name]
        stub = self._channel.unary_unary(
            call.path, request_serializer=call.request.SerializeToString, response_deserializer=call.response.FromString
        )
        try:
            return stub(request, timeout=self.connection.timeout, metadata=self._metadata(mutating))
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def stream(self, name: str, request: Any) -> Iterator[Any]:
        """The server's stream, until it ends or the caller stops; CtlError on failure."""
        call = CALLS[name]
        stub = self._channel.unary_stream(
            call.path, request_serializer=call.request.SerializeToString, response_deserializer=call.response.FromString
        )
        try:
            yield from stub(request, metadata=self._metadata(True))  # the token, if any, earns a kept slot
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def _metadata(self, mutating: bool) -> tuple[tuple[str, str], ...]:
        token = self.connection.token
        if mutating and token is not None:
            return (("authorization", f"Bearer {token}"),)
        return ()

    def _error(self, exc: grpc.RpcError) -> CtlError:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(code)
        address = self.connection.address
        if code in _UNREACHABLE_CODES:
            if "http1" in details.lower():
                details += " (an admin HTTP port? under serve --workers N, admin gRPC ports start at admin port + N)"
            return CtlError(f"cannot reach modelguard's admin API at {address}: {details}", UNREACHABLE)
        if code is grpc.StatusCode.UNAUTHENTICATED and self.connection.token is None:
            details += f" (set {TOKEN_ENV} or give --token-file)"
        return CtlError(f"refused by {address} ({code.name}): {details}", REFUSED)
