"""TLS and mutual TLS for the ext_proc port, with certificates reloaded when their files change.

The port is an authority: whoever opens a stream can report outcomes and open breakers for
every client. TLS keeps the traffic private; mutual TLS (a client CA) lets only proxies holding
a certificate from that CA in.

Certificates expire and are rotated underneath a running server (cert-manager, Vault, a
Kubernetes Secret volume swapping its symlink). gRPC asks `_Reloader` before every new TLS
handshake; it compares the files' stat signatures and reads them only when one changed, so an
established connection is never touched and a handshake costs two or three stat calls. A change
that does not load (half-written files, a key that belongs to another certificate) keeps the
certificates that work and warns once; the next change is tried afresh.

Files are checked with the standard library's OpenSSL (`ssl`) before gRPC gets them: gRPC
itself only fails at the first handshake, long after start-up said "serving".
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger("modelguard.tls")

GRPC_TLS = "--grpc-tls"
"""The flags of the ext_proc port's files: ``--grpc-tls-cert``, ``-key``, ``-client-ca``."""
ADMIN_GRPC_TLS = "--admin-grpc-tls"
"""The same for the admin gRPC port."""

# A file's identity and version: a rewrite changes size or mtime, a rename or a symlink swap the inode.
_Stat = tuple[int, int, int, int] | None


class TlsError(ValueError):
    """A certificate, key or CA file that cannot be used; the message is one line."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for the gRPC port: the server's certificate chain and key, and optionally the
    CA bundle client certificates must chain to (which makes client certificates mandatory)."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    prefix: str = GRPC_TLS
    """Which port's flags name them (GRPC_TLS or ADMIN_GRPC_TLS)."""

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def flags(self) -> list[str]:
        """The `modelguard serve` flags that name these files (for the workers)."""
        args = [f"{self.prefix}-cert", str(self.cert), f"{self.prefix}-key", str(self.key)]
        if self.client_ca is not None:
            args += [f"{self.prefix}-client-ca", str(self.client_ca)]
        return args


def tls_files(cert: str | None, key: str | None, client_ca: str | None, prefix: str = GRPC_TLS) -> TlsFiles | None:
    """The files named by the three flags; None for plaintext. ValueError for a combination
    that cannot mean anything (a certificate without its key, a client CA without TLS)."""
    cert_flag, key_flag, ca_flag = f"{prefix}-cert", f"{prefix}-key", f"{prefix}-client-ca"
    if cert is None and key is None:
        if client_ca is not None:
            raise ValueError(f"{ca_flag} needs {cert_flag} and {key_flag} (mutual TLS is TLS plus client certs)")
        return None
    if cert is None or key is None:
        raise ValueError(f"{cert_flag} and {key_flag} go together: give both or neither")
    return TlsFiles(Path(cert), Path(key), None if client_ca is None else Path(client_ca), prefix)


@dataclass(frozen=True)
class Pem:
    """The contents of a `TlsFiles`, checked to load."""

    cert: bytes
    key: bytes
    client_ca: bytes | None


def load(files: TlsFiles) -> Pem:
    """Read and check the files; TlsError naming the file and what is wrong with it."""
    cert = _read(files.cert)
    key = _read(files.key)
    client_ca = None if files.client_ca is None else _read(files.client_ca)
    _check_certificates(files.cert, cert, "certificate")
    if files.client_ca is not None and client_ca is not None:
        _check_certificates(files.client_ca, client_ca, "CA certificate")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files.cert, files.key, password=_no_password)
    except _EncryptedKey as exc:
        raise TlsError(f"{files.key}: encrypted private key; gRPC needs it unencrypted") from exc
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsError(f"{files.key}: private key does not match the certificate in {files.cert}") from exc
        raise TlsError(f"{files.key}: not a PEM private key ({exc.reason or exc})") from exc
    except OSError as exc:
        raise TlsError(f"cannot read {exc.filename or files.cert}: {exc.strerror or exc}") from exc
    # OpenSSL read the files by name: had they been replaced since, the pair checked is not the one read.
    if _read(files.cert) != cert or _read(files.key) != key:
        raise TlsError(f"{files.cert} or {files.key} changed while loading")
    return Pem(cert, key, client_ca)


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    # Without a callback OpenSSL would prompt on the terminal, or block a gRPC thread.
    raise _EncryptedKey


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _check_certificates(path: Path, data: bytes, what: str) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii"))
    except (UnicodeDecodeError, ValueError, ssl.SSLError) as exc:
        raise TlsError(f"{path}: not a PEM {what}") from exc


def _configuration(pem: Pem) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(pem.key, pem.cert)], root_certificates=pem.client_ca)


def _stat(path: Path) -> _Stat:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class _Reloader:
    """gRPC's certificate fetcher: a new configuration when the files changed and load, else None.

    Called by gRPC core (with the GIL, from one of its threads) before each TLS handshake: it
    never raises, and while one handshake reloads, the others go on with the current
    certificates instead of queueing behind the lock."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._seen = self._signature()
        self._failed: tuple[_Stat, ...] | None = None  # tried, warned about, not tried again
        self.initial = _configuration(load(files))

    def _signature(self) -> tuple[_Stat, ...]:
        paths = [self.files.cert, self.files.key]
        if self.files.client_ca is not None:
            paths.append(self.files.client_ca)
        return tuple(_stat(p) for p in paths)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        if not self._lock.acquire(blocking=False):
            return None
        try:
            signature = self._signature()
            if signature in (self._seen, self._failed):
                return None
            try:
                config = _configuration(load(self.files))
            except Exception as exc:
                self._failed = signature
                log.warning(
                    "new TLS files do not load; keeping the current certificates",
                    extra={"event": "tls_reload_failed", "error": str(exc)},
                )
                return None
            self._seen = signature
            log.info("TLS certificates reloaded", extra={"event": "tls_reloaded", "cert": str(self.files.cert)})
            return config
        except Exception:  # a fetcher that raises would fail the handshake
            return None
        finally:
            self._lock.release()


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Credentials for `add_secure_port` that follow the files; TlsError when they do not load now."""
    reloader = _Reloader(files)
    return grpc.dynamic_ssl_server_credentials(reloader.initial, reloader, require_client_authentication=files.mutual)


def add_port(server: grpc.aio.Server, address: str, files: TlsFiles | None, what: str) -> int:
    """Bind ``server`` to ``address``, over TLS when ``files`` are given; the port. OSError naming
    ``what`` the port is for when it cannot listen (a taken port, an address not on this host)."""
    try:
        if files is None:
            port: int = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, server_credentials(files))
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address} for {what}: {exc}") from exc
    if port == 0:
        raise OSError(f"cannot listen on {address} for {what} (port taken?)")
    return port
