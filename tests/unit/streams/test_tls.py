"""The dev stack's own CA and server certificate, and the Redis TLS settings."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from pydantic import SecretStr

from router.settings import RedisSettings
from streams.devstack.tls import ensure_tls_files


def test_the_stack_makes_a_ca_and_a_server_certificate_once(tmp_path: Path) -> None:
    files = ensure_tls_files(tmp_path / "tls", "127.0.0.1")
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    # the server certificate verifies against the CA for 127.0.0.1 and localhost
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(str(files.cert), str(files.key))  # the key matches the certificate
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    before = files.cert.read_bytes()
    assert ensure_tls_files(tmp_path / "tls", "127.0.0.1").cert.read_bytes() == before


def test_redis_tls_settings_need_rediss(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    RedisSettings(url=SecretStr("rediss://h:6380/0"), tls_ca_file=ca)
    with pytest.raises(ValueError, match="rediss://"):
        RedisSettings(url=SecretStr("redis://h:6379/0"), tls_ca_file=ca)
    with pytest.raises(ValueError, match="rediss://"):
        RedisSettings(tls_ca_file=ca)
    with pytest.raises(ValueError, match="go together"):
        RedisSettings(url=SecretStr("rediss://h:6380/0"), tls_cert_file=ca)
