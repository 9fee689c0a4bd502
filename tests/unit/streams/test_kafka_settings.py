"""One Kafka connection config, two clients: every protocol and SASL mechanism the settings accept
renders a librdkafka dict that confluent-kafka accepts and faust options that reach aiokafka
intact (the protocol, the mechanism, the credentials, the TLS context); bad combinations are
refused with a message naming the fields; secrets never show in repr."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from pydantic import SecretStr, ValidationError

from streams.exceptions import ConfigurationError
from streams.settings import KafkaSettings, WorkerSettings

BOOTSTRAP = "127.0.0.1:1,127.0.0.2:1"  # nothing listens: clients are built, never connected


@dataclass(frozen=True)
class Tls:
    """A self-signed certificate with its key, plain and encrypted (password ``kpw-secret``)."""

    cert: Path
    key: Path
    encrypted_key: Path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    run = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    subprocess.run(
        [*run, "-keyout", d / "key.pem", "-out", d / "cert.pem", "-subj", "/CN=localhost"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            openssl,
            "pkey",
            "-in",
            d / "key.pem",
            "-aes256",
            "-passout",
            "pass:kpw-secret",
            "-out",
            d / "key-enc.pem",
        ],
        check=True,
        capture_output=True,
    )
    return Tls(d / "cert.pem", d / "key.pem", d / "key-enc.pem")


def sasl(protocol: str, mechanism: str, **tls: Any) -> KafkaSettings:
    return KafkaSettings(
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username="svc",
        sasl_password=SecretStr("s3cret"),
        **tls,
    )


def aiokafka_auth(settings: KafkaSettings) -> tuple[Any, dict[str, Any]]:
    """What faust hands aiokafka for these settings, and the faust app's broker list; the auth is
    also given to a real ``AIOKafkaClient``, which validates the protocol/mechanism combination."""
    import aiokafka  # type: ignore[import-untyped]
    import faust
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    app = faust.App("t", **settings.as_faust(BOOTSTRAP), store="memory://")
    auth = dict(credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context))

    async def build() -> None:
        aiokafka.AIOKafkaClient(bootstrap_servers=BOOTSTRAP, **auth)

    asyncio.run(build())
    return app.conf, auth


def librdkafka_accepts(conf: dict[str, Any]) -> None:
    """A real confluent-kafka client takes the dict (it loads the TLS files on construction)."""
    Producer({**conf, "log_level": 0})


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_renders_for_both_clients(mechanism: str) -> None:
    s = sasl("SASL_PLAINTEXT", mechanism)
    conf = s.as_librdkafka(BOOTSTRAP, **{"group.id": "g"})
    assert conf == {
        "bootstrap.servers": BOOTSTRAP,
        "security.protocol": "SASL_PLAINTEXT",
        "client.id": "crossroute",
        "sasl.mechanism": mechanism,
        "sasl.username": "svc",
        "sasl.password": "s3cret",
        "group.id": "g",
    }
    librdkafka_accepts(conf)
    app_conf, auth = aiokafka_auth(s)
    assert [str(u) for u in app_conf.broker] == ["kafka://127.0.0.1:1", "kafka://127.0.0.2:1"]
    assert app_conf.broker_client_id == "crossroute"
    assert auth == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret",
        "ssl_context": None,
    }


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_renders_for_both_clients(mechanism: str, tls: Tls) -> None:
    s = sasl("SASL_SSL", mechanism, ssl_ca_file=tls.cert)
    conf = s.as_librdkafka(BOOTSTRAP)
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanism"] == mechanism
    assert conf["ssl.ca.location"] == str(tls.cert)
    librdkafka_accepts(conf)
    _, auth = aiokafka_auth(s)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == mechanism
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("svc", "s3cret")
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "localhost"),),)]


def test_sasl_ssl_without_a_ca_file_trusts_the_system_cas() -> None:
    s = sasl("SASL_SSL", "SCRAM-SHA-512")
    assert "ssl.ca.location" not in s.as_librdkafka(BOOTSTRAP)
    _, auth = aiokafka_auth(s)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_ssl_with_a_client_certificate_renders_for_both_clients(tls: Tls) -> None:
    s = KafkaSettings(
        security_protocol="SSL",
        ssl_ca_file=tls.cert,
        ssl_cert_file=tls.cert,
        ssl_key_file=tls.encrypted_key,
        ssl_key_password=SecretStr("kpw-secret"),
    )
    conf = s.as_librdkafka(BOOTSTRAP)
    assert conf == {
        "bootstrap.servers": BOOTSTRAP,
        "security.protocol": "SSL",
        "client.id": "crossroute",
        "ssl.ca.location": str(tls.cert),
        "ssl.certificate.location": str(tls.cert),
        "ssl.key.location": str(tls.encrypted_key),
        "ssl.key.password": "kpw-secret",
    }
    librdkafka_accepts(conf)
    _, auth = aiokafka_auth(s)
    assert auth["security_protocol"] == "SSL" and isinstance(auth["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in auth


def test_plaintext_renders_for_both_clients() -> None:
    s = KafkaSettings(client_id="w1")
    conf = s.as_librdkafka("b:9092")
    assert conf == {
        "bootstrap.servers": "b:9092",
        "security.protocol": "PLAINTEXT",
        "client.id": "w1",
    }
    assert s.as_faust("b:9092") == {"broker": ["kafka://b:9092"], "broker_client_id": "w1"}
    _, auth = aiokafka_auth(s)
    assert auth == {"security_protocol": "PLAINTEXT"}


def test_a_wrong_key_password_is_a_clear_error(tls: Tls) -> None:
    s = KafkaSettings(
        security_protocol="SSL",
        ssl_cert_file=tls.cert,
        ssl_key_file=tls.encrypted_key,
        ssl_key_password=SecretStr("wrong-pw"),
    )
    with pytest.raises(ConfigurationError, match="cannot load the TLS files") as e:
        s.as_faust(BOOTSTRAP)
    assert str(tls.encrypted_key) in str(e.value) and "wrong-pw" not in str(e.value)


def test_not_a_pem_file_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigurationError, match=f"ssl_ca_file {junk}"):
        KafkaSettings(security_protocol="SSL", ssl_ca_file=junk).ssl_context()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"security_protocol": "SASL_PLAINTEXT"}, "needs sasl_mechanism, sasl_username"),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
            "needs sasl_mechanism",
        ),
        (
            {"sasl_username": "u", "sasl_password": "p"},
            "sasl_username, sasl_password need security_protocol SASL_PLAINTEXT or SASL_SSL, "
            "not PLAINTEXT",
        ),
        (
            {"security_protocol": "SSL", "sasl_mechanism": "PLAIN"},
            "sasl_mechanism need security_protocol SASL_PLAINTEXT or SASL_SSL, not SSL",
        ),
        (
            {"ssl_ca_file": "CERT"},
            "ssl_ca_file need security_protocol SSL or SASL_SSL, not PLAINTEXT",
        ),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-256",
                "sasl_username": "u",
                "sasl_password": "p",
                "ssl_cert_file": "CERT",
                "ssl_key_file": "CERT",
            },
            "ssl_cert_file, ssl_key_file need security_protocol SSL or SASL_SSL, not SASL_PLAINTEXT",
        ),
        ({"security_protocol": "SSL", "ssl_cert_file": "CERT"}, "set both or neither"),
        ({"security_protocol": "SSL", "ssl_key_file": "CERT"}, "set both or neither"),
        (
            {"security_protocol": "SSL", "ssl_key_password": "p"},
            "ssl_key_password is set but ssl_key_file is not",
        ),
        ({"security_protocol": "SSL", "ssl_ca_file": "MISSING"}, "is not a readable file"),
        ({"security_protocol": "SSL", "ssl_ca_file": "DIR"}, "is not a readable file"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
    ],
)
def test_bad_combinations_are_refused(
    fields: dict[str, Any], message: str, tls: Tls, tmp_path: Path
) -> None:
    files = {"CERT": str(tls.cert), "MISSING": str(tmp_path / "nope.pem"), "DIR": str(tmp_path)}
    values = {k: files.get(v, v) if isinstance(v, str) else v for k, v in fields.items()}
    with pytest.raises(ValidationError, match=message):
        KafkaSettings(**values)


def test_secrets_never_in_repr(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "SECURITY_PROTOCOL": "SASL_SSL",
        "SASL_MECHANISM": "SCRAM-SHA-256",
        "SASL_USERNAME": "svc",
        "SASL_PASSWORD": "s3cret",
        "SSL_CA_FILE": str(tls.cert),
        "SSL_CERT_FILE": str(tls.cert),
        "SSL_KEY_FILE": str(tls.encrypted_key),
        "SSL_KEY_PASSWORD": "kpw-secret",
    }.items():
        monkeypatch.setenv(f"CROSSROUTE_KAFKA__{name}", value)
    s = WorkerSettings().kafka
    assert s.ssl_key_file == tls.encrypted_key and s.sasl_mechanism == "SCRAM-SHA-256"
    options = s.as_faust(BOOTSTRAP)
    text = repr(s) + str(s) + s.model_dump_json() + repr(options) + str(options)
    assert "s3cret" not in text and "kpw-secret" not in text
    credentials = options["broker_credentials"]
    assert (credentials.username, credentials.password) == ("svc", "s3cret")  # given, not shown
