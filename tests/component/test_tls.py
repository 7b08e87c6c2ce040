"""TLS and mutual TLS on the ext_proc port: an in-process Service, real gRPC clients over TLS,
certificates rotated on disk underneath the running server."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc

from ext_proc.policy import parse_policy
from ext_proc.server.service import Service
from ext_proc.server.tls import TlsFiles
from tests.component.conftest import POLICY, REC_PATH, request_headers, set_headers
from tests.tls_certs import KeyPair, Pki, make_pki


class Refused(Exception):
    """The RPC failed before modelguard answered: the TLS handshake, most likely."""


async def decide(port: int, trusted_ca: bytes | None, client: KeyPair | None = None, *, plaintext: bool = False) -> str:
    """One request's first exchange on a NEW connection; the tier modelguard picked."""
    # A channel of its own, with a subchannel pool of its own: a fresh TCP connection and TLS handshake.
    options = [("grpc.use_local_subchannel_pool", 1)]
    target = f"127.0.0.1:{port}"
    if plaintext:
        channel = grpc.aio.insecure_channel(target, options=options)
    else:
        cert, key = client.read() if client is not None else (None, None)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=trusted_ca, private_key=key, certificate_chain=cert
        )
        channel = grpc.aio.secure_channel(target, credentials, options=options)
    async with channel:
        call = ext_proc_grpc.ExternalProcessorStub(channel).Process(timeout=5)
        try:
            await call.write(request_headers({":path": REC_PATH, ":authority": "gw"}))
            first = await call.read()
            await call.done_writing()
        except grpc.aio.AioRpcError as exc:
            raise Refused(f"{exc.code().name}: {exc.details()}") from exc
        finally:
            call.cancel()
        assert first is not grpc.aio.EOF
        return set_headers(first)["x-modelguard-tier"]


async def refused(port: int, trusted_ca: bytes | None, client: KeyPair | None = None, **kw: bool) -> str:
    """The reason the request was refused; fails the test when it was answered instead."""
    with pytest.raises(Refused) as info:
        await decide(port, trusted_ca, client, **kw)
    return str(info.value)


def replace(path: Path, data: bytes) -> None:
    """Rotate a file the way cert-manager and Secret volumes do: a whole new file moved into place."""
    staged = path.with_name(path.name + ".new")
    staged.write_bytes(data)
    os.replace(staged, path)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def other(tmp_path: Path) -> Pki:
    """A second, unrelated CA with its own server and client certificates."""
    return make_pki(tmp_path / "other", "other")


async def started(files: TlsFiles) -> tuple[Service, int]:
    service = Service(parse_policy(POLICY), rng=random.Random(7))
    ports = await service.start("127.0.0.1:0", "127.0.0.1:0", files)
    return service, ports.grpc


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[int]:
    service, port = await started(TlsFiles(pki.server.cert, pki.server.key))
    try:
        yield port
    finally:
        await service.stop(0)


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[int]:
    service, port = await started(TlsFiles(pki.server.cert, pki.server.key, pki.ca_file))
    try:
        yield port
    finally:
        await service.stop(0)


async def test_a_client_trusting_the_ca_gets_decisions(tls_server: int, pki: Pki, other: Pki) -> None:
    assert await decide(tls_server, pki.ca.pem) == "primary"
    # The port speaks TLS only, and the client checks whose certificate it is.
    assert "UNAVAILABLE" in await refused(tls_server, None, plaintext=True)
    assert "UNAVAILABLE" in await refused(tls_server, other.ca.pem)


async def test_mutual_tls_lets_in_only_clients_with_a_certificate_from_the_ca(
    mtls_server: int, pki: Pki, other: Pki
) -> None:
    assert "UNAVAILABLE" in await refused(mtls_server, pki.ca.pem)  # no client certificate
    assert "UNAVAILABLE" in await refused(mtls_server, pki.ca.pem, other.client)  # another CA's
    assert "UNAVAILABLE" in await refused(mtls_server, pki.ca.pem, pki.server)  # from the CA, but not for clients
    assert await decide(mtls_server, pki.ca.pem, pki.client) == "primary"


async def test_rotated_files_serve_new_connections_without_a_restart(
    tls_server: int, pki: Pki, other: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    assert "UNAVAILABLE" in await refused(tls_server, other.ca.pem)
    replace(pki.server.key, other.server.key.read_bytes())
    replace(pki.server.cert, other.server.cert.read_bytes())
    with caplog.at_level(logging.INFO, logger="modelguard.tls"):
        assert await decide(tls_server, other.ca.pem) == "primary"
    assert "UNAVAILABLE" in await refused(tls_server, pki.ca.pem)  # the old certificate is gone
    assert [r.event for r in caplog.records if r.name == "modelguard.tls"] == ["tls_reloaded"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("broken", ["garbage certificate", "key of another certificate"])
async def test_broken_new_files_keep_the_old_certificate(
    tls_server: int, pki: Pki, other: Pki, caplog: pytest.LogCaptureFixture, broken: str
) -> None:
    if broken == "garbage certificate":
        replace(pki.server.cert, b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    else:
        replace(pki.server.cert, other.server.cert.read_bytes())  # the key stays the old one
    with caplog.at_level(logging.INFO, logger="modelguard.tls"):
        for _ in range(3):
            assert await decide(tls_server, pki.ca.pem) == "primary"
    assert "UNAVAILABLE" in await refused(tls_server, other.ca.pem)
    (warning,) = [r for r in caplog.records if r.name == "modelguard.tls"]  # once, not once per handshake
    assert warning.levelno == logging.WARNING
    assert warning.event == "tls_reload_failed"  # type: ignore[attr-defined]

    # The next change is tried afresh: a complete, matching pair is taken up.
    replace(pki.server.key, other.server.key.read_bytes())
    replace(pki.server.cert, other.server.cert.read_bytes())
    assert await decide(tls_server, other.ca.pem) == "primary"


async def test_a_rotated_client_ca_admits_the_new_clients(mtls_server: int, pki: Pki, other: Pki) -> None:
    assert "UNAVAILABLE" in await refused(mtls_server, pki.ca.pem, other.client)
    replace(pki.ca_file, other.ca.pem)
    assert await decide(mtls_server, pki.ca.pem, other.client) == "primary"
    assert "UNAVAILABLE" in await refused(mtls_server, pki.ca.pem, pki.client)
