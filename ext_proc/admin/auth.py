"""The admin gRPC API's bearer token: who may change what modelguard does.

Read calls need no token: what they show is on /v1/state too. Mutating calls need
``authorization: Bearer <token>`` matching the configured token, compared in constant time.
With no token configured at all, mutating calls are refused (PERMISSION_DENIED) with a message
saying how to configure one, so that a fresh install is not an open door. The token comes from
``MODELGUARD_ADMIN_TOKEN`` or ``--admin-token-file``; the file is read again whenever it changes
(a rotated Kubernetes Secret), and a rotation that leaves it unreadable, empty or too short keeps
the last good token and logs why. The token never appears in a log line or an error.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("modelguard.admin")

TOKEN_ENV = "MODELGUARD_ADMIN_TOKEN"
TOKEN_FILE_FLAG = "--admin-token-file"
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_BYTES = 4096
HOW_TO_CONFIGURE = (
    f"no admin token is configured, so changes are refused: start modelguard with {TOKEN_ENV} set or with "
    f"{TOKEN_FILE_FLAG} FILE (at least {MIN_TOKEN_LENGTH} characters), and give the same token to the client"
)


class TokenError(ValueError):
    """A token that cannot be used (message safe to show: it never contains the token)."""


@dataclass(frozen=True)
class Refusal:
    code: str
    """``unauthenticated`` or ``permission_denied``."""
    message: str


UNAUTHENTICATED = "unauthenticated"
PERMISSION_DENIED = "permission_denied"


def _checked(raw: bytes, source: str) -> bytes:
    token = raw.strip()
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(f"the admin token from {source} is shorter than {MIN_TOKEN_LENGTH} characters")
    if len(token) > MAX_TOKEN_BYTES or any(byte < 0x21 or byte > 0x7E for byte in token):
        raise TokenError(f"the admin token from {source} must be printable ASCII without spaces, at most 4 KiB")
    return token


class TokenSource:
    """The configured token, if any; ``check`` judges a call's metadata against it."""

    def __init__(self, environ: Mapping[str, str] = os.environ, token_file: Path | None = None) -> None:
        """TokenError if both or an unusable one is given (a mistake to report at start-up)."""
        value = environ.get(TOKEN_ENV)
        if value and token_file is not None:
            raise TokenError(f"give the admin token by {TOKEN_ENV} or by {TOKEN_FILE_FLAG}, not both")
        self._file = token_file
        self._signature: tuple[int, int, int] | None = None
        self._token: bytes | None = None
        if value:
            self._token = _checked(value.encode(), TOKEN_ENV)
        elif token_file is not None:
            self._token = self._read_file(token_file)

    @property
    def configured(self) -> bool:
        return self._token is not None

    @property
    def source(self) -> str:
        """For the start-up log: where the token comes from (never the token)."""
        if self._file is not None:
            return str(self._file)
        return TOKEN_ENV if self._token is not None else "none"

    def check(self, metadata: Sequence[tuple[str, str | bytes]]) -> Refusal | None:
        """None when the call carries the right token; otherwise why not."""
        self._refresh()
        expected = self._token
        if expected is None:
            return Refusal(PERMISSION_DENIED, HOW_TO_CONFIGURE)
        given = _bearer(metadata)
        if given is None:
            return Refusal(UNAUTHENTICATED, "this call changes modelguard and needs 'authorization: Bearer <token>'")
        if not hmac.compare_digest(given, expected):
            return Refusal(UNAUTHENTICATED, "the admin token given is not the one configured")
        return None

    def _read_file(self, path: Path) -> bytes:
        try:
            with open(path, "rb") as file:
                found = os.fstat(file.fileno())
                raw = file.read(MAX_TOKEN_BYTES + 64)
        except OSError as exc:
            raise TokenError(f"cannot read the admin token file {path}: {exc.strerror or exc}") from None
        token = _checked(raw, str(path))
        self._signature = (found.st_ino, found.st_size, found.st_mtime_ns)
        return token

    def _refresh(self) -> None:
        path = self._file
        if path is None:
            return
        try:
            found = os.stat(path)
        except OSError:
            found = None
        if found is not None and (found.st_ino, found.st_size, found.st_mtime_ns) == self._signature:
            return
        try:
            self._token = self._read_file(path)
            log.info("admin token file read again", extra={"event": "admin_token_reloaded", "path": str(path)})
        except TokenError as exc:
            if found is not None:
                self._signature = (found.st_ino, found.st_size, found.st_mtime_ns)  # warn once per change
            log.error(
                "admin token file not usable, the last good token stays: %s",
                exc,
                extra={"event": "admin_token_reload_failed", "path": str(path)},
            )


def _bearer(metadata: Sequence[tuple[str, str | bytes]]) -> bytes | None:
    for key, value in metadata:
        if key == "authorization":
            text = value.encode() if isinstance(value, str) else value
            scheme, _, token = text.partition(b" ")
            if scheme.lower() != b"bearer" or not token.strip():
                return None
            return token.strip()
    return None
