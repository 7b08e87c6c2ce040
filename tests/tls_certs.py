"""Throwaway certificate authorities for the TLS tests (component and e2e).

Every test makes its own CA and certificates in its tmp_path, so nothing depends on files that
expire or on the machine's trust store. EC P-256 keys: fast to generate, and accepted by
gRPC's BoringSSL, Envoy and Python's OpenSSL alike.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The server name the reference mTLS fragment (envoy/modelguard-mtls-cluster.yaml) expects.
SERVER_DNS_NAMES = ("localhost", "modelguard.internal")
SERVER_IPS = ("127.0.0.1",)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as files."""

    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM)."""
        return self.cert.read_bytes(), self.key.read_bytes()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class CertificateAuthority:
    """A self-signed CA that issues server and client certificates valid for a day."""

    def __init__(self, common_name: str) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(common_name)
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.pem)
        return path

    def issue(self, directory: Path, stem: str, common_name: str, *, server: bool) -> KeyPair:
        """A leaf certificate in directory/stem.pem and directory/stem-key.pem. A server
        certificate names localhost, modelguard.internal and 127.0.0.1; a client one only its CN."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            names: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_DNS_NAMES]
            names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        pair = KeyPair(directory / f"{stem}.pem", directory / f"{stem}-key.pem")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pair.key.write_bytes(_key_pem(key))
        pair.key.chmod(0o600)
        return pair


@dataclass(frozen=True)
class Pki:
    """One CA, a server certificate and a client certificate from it, as files in one folder."""

    ca: CertificateAuthority
    ca_file: Path
    server: KeyPair
    client: KeyPair


def make_pki(directory: Path, name: str = "test") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority(f"modelguard {name} CA")
    return Pki(
        ca=ca,
        ca_file=ca.write(directory / "ca.pem"),
        server=ca.issue(directory, "server", "modelguard", server=True),
        client=ca.issue(directory, "client", "envoy", server=False),
    )
