"""A private certificate authority and a server certificate for the dev stack's TLS listeners.

Made once per state dir (``<state_dir>/<service>/tls/``) with ``cryptography``: an EC P-256 CA valid
for ten years, and a server certificate it signs for ``localhost``, the bind address and
``127.0.0.1``. Clients trust ``ca.crt`` (``CROSSROUTE_REDIS__TLS_CA_FILE``); the key files are
written ``0600``. Never for production: it is a development stack's self-made trust.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "TlsFiles",
    "ensure_tls_files",
    "new_authority",
    "new_server_certificate",
    "write_private",
]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS listener."""

    ca: Path
    cert: Path
    key: Path


def _ca_usage() -> x509.KeyUsage:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def new_authority(
    name: str = "crossroute dev stack CA",
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed EC P-256 CA valid for ten years, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC) - timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .sign(key, hashes.SHA256())
    )
    return ca, key


def new_server_certificate(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, hosts: list[str]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server certificate signed by ``ca`` for ``hosts`` (DNS names or IP addresses; the first
    is the subject), valid for 825 days, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC) - timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file only its owner may read (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_tls_files(folder: Path, host: str) -> TlsFiles:
    """The CA and server files under ``folder``, made when missing (idempotent)."""
    files = TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")
    if all(p.is_file() for p in (files.ca, files.cert, files.key)):
        return files
    from cryptography.hazmat.primitives import serialization

    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = new_authority()
    cert, key = new_server_certificate(ca, ca_key, ["localhost", *sorted({host, "127.0.0.1"})])
    pem = serialization.Encoding.PEM
    write_private(
        files.key,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    files.cert.write_bytes(cert.public_bytes(pem))
    files.ca.write_bytes(ca.public_bytes(pem))
    return files
