"""Which TLS flag combinations mean something, and what a bad file is reported as."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ext_proc.server.tls import TlsError, TlsFiles, load, tls_files
from tests.tls_certs import Pki, make_pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


def test_no_flags_is_plaintext_and_the_flags_round_trip() -> None:
    assert tls_files(None, None, None) is None
    files = tls_files("c.pem", "k.pem", "ca.pem")
    assert files == TlsFiles(Path("c.pem"), Path("k.pem"), Path("ca.pem"))
    assert files is not None and files.mutual
    assert files.flags() == ["--grpc-tls-cert", "c.pem", "--grpc-tls-key", "k.pem", "--grpc-tls-client-ca", "ca.pem"]
    plain = tls_files("c.pem", "k.pem", None)
    assert plain is not None and not plain.mutual
    assert plain.flags() == ["--grpc-tls-cert", "c.pem", "--grpc-tls-key", "k.pem"]


@pytest.mark.parametrize(
    ("cert", "key", "ca", "message"),
    [
        ("c.pem", None, None, "give both or neither"),
        (None, "k.pem", "ca.pem", "give both or neither"),
        (None, None, "ca.pem", "--grpc-tls-client-ca needs --grpc-tls-cert"),
    ],
)
def test_incomplete_flags_are_refused(cert: str | None, key: str | None, ca: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tls_files(cert, key, ca)


def test_good_files_load(pki: Pki) -> None:
    pem = load(TlsFiles(pki.server.cert, pki.server.key, pki.ca_file))
    assert (pem.cert, pem.key, pem.client_ca) == (*pki.server.read(), pki.ca.pem)


def _encrypted_key(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing cert", r"cannot read .*missing\.pem: No such file"),
        ("cert is a key", r"server-key\.pem: not a PEM certificate"),
        ("key is a cert", r"server\.pem: not a PEM private key"),
        ("key of another cert", r"client-key\.pem: private key does not match the certificate in .*server\.pem"),
        ("encrypted key", r"enc\.pem: encrypted private key"),
        ("ca is not pem", r"junk\.pem: not a PEM CA certificate"),
    ],
)
def test_bad_files_are_named_with_what_is_wrong(pki: Pki, tmp_path: Path, case: str, message: str) -> None:
    cert, key, ca = pki.server.cert, pki.server.key, pki.ca_file
    if case == "missing cert":
        cert = tmp_path / "missing.pem"
    elif case == "cert is a key":
        cert = key
    elif case == "key is a cert":
        key = cert
    elif case == "key of another cert":
        key = pki.client.key
    elif case == "encrypted key":
        key = _encrypted_key(tmp_path / "enc.pem")
    else:
        ca = tmp_path / "junk.pem"
        ca.write_bytes(b"\x00\xffnot a certificate")
    with pytest.raises(TlsError, match=message) as info:
        load(TlsFiles(cert, key, ca))
    assert "\n" not in str(info.value)
