"""The embedded broker's side of Kafka: its ``server.properties`` (PLAINTEXT for clients and the
controller, optionally a SASL listener with SCRAM users, over TLS with a certificate the stack makes),
the KRaft cluster id, and the reachability probe every client configuration is checked with.
"""

from __future__ import annotations

import base64
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from pydantic import SecretStr

from streams.exceptions import StackError
from streams.settings import KafkaSettings, StackSettings

__all__ = [
    "AUTHORIZER_PROPERTIES",
    "BROKER_PROPERTIES",
    "SASL_PROPERTIES",
    "SCRAM_LOGIN",
    "TLS_PROPERTIES",
    "ScramMechanismName",
    "create_scram_user",
    "ensure_keystore",
    "kafka_reachable",
    "new_cluster_id",
    "sasl_protocol",
    "server_properties",
    "tls_dir",
]

ScramMechanismName = Literal["SCRAM-SHA-256", "SCRAM-SHA-512"]
_FATAL_CONNECT_ERRORS = {"_AUTHENTICATION", "_SSL"}
"""librdkafka errors that a retry with the same settings cannot fix (bad credentials, TLS)."""

_SERVER_PROPERTIES = """\
# Written by `crossroute stack up` on every start; edit StackSettings, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller_port}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}{sasl_listener}
advertised.listeners=PLAINTEXT://{host}:{port}{sasl_listener}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT{sasl_protocol}
inter.broker.listener.name=PLAINTEXT
"""
# What every single-node broker of ours shares (the dev stack's, docker-compose.yml's).
BROKER_PROPERTIES = """\
log.dirs={data_dir}
# Topics are created explicitly through the admin API, with their configs.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
# One node: internal topics cannot have more than one replica; fewer partitions start faster.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Let the first consumer of a group start at once instead of waiting 3 s for others.
group.initial.rebalance.delay.ms=0
log.cleaner.enable=true
"""

# The SASL listener (StackSettings.kafka_sasl_port) takes SCRAM users kept in the cluster metadata;
# the broker and the controller keep talking PLAINTEXT among themselves.
SASL_PROPERTIES = """\
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.{listener}.scram-sha-256.sasl.jaas.config={jaas}
listener.name.{listener}.scram-sha-512.sasl.jaas.config={jaas}
"""
# With kafka_acls, KRaft's StandardAuthorizer checks every request: SASL users get only what ACLs
# grant them (streams.acls); the loopback PLAINTEXT listener, the controller and the broker itself
# authenticate as ANONYMOUS, the stack's admin channel, which stays a super user.
AUTHORIZER_PROPERTIES = """\
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users={super_users}
allow.everyone.if.no.acl.found=false
"""
TLS_PROPERTIES = """\
ssl.keystore.type=PKCS12
ssl.keystore.location={keystore}
ssl.keystore.password={password}
ssl.key.password={password}
"""
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
_SCRAM_ITERATIONS = 8192
# Fixed, not secret: the keystore serves a loopback dev listener and sits in the state dir next to
# the server.properties that has to name its password anyway.
_KEYSTORE_PASSWORD = "crossroute-dev-stack"  # noqa: S105


def sasl_protocol(settings: StackSettings) -> Literal["SASL_PLAINTEXT", "SASL_SSL"]:
    """The security protocol of the stack's SASL listener."""
    return "SASL_SSL" if settings.kafka_sasl_tls else "SASL_PLAINTEXT"


def tls_dir(settings: StackSettings) -> Path:
    """Where the stack keeps the SASL_SSL listener's keystore and the certificate clients trust."""
    return settings.state_dir / "kafka" / "tls"


def server_properties(settings: StackSettings, data_dir: Path) -> str:
    """The broker's ``server.properties`` for these settings (a SASL listener too when
    ``kafka_sasl_port`` is set; SASL_SSL with the keystore of :func:`tls_dir` when
    ``kafka_sasl_tls``)."""
    sasl_port = settings.kafka_sasl_port
    protocol = sasl_protocol(settings)
    text = _SERVER_PROPERTIES.format(
        host=settings.host,
        port=settings.kafka_port,
        controller_port=settings.kafka_controller_port,
        sasl_listener=f",{protocol}://{settings.host}:{sasl_port}" if sasl_port else "",
        sasl_protocol=f",{protocol}:{protocol}" if sasl_port else "",
    ) + BROKER_PROPERTIES.format(data_dir=data_dir)
    if sasl_port is None:
        return text
    text += SASL_PROPERTIES.format(listener=protocol.lower(), jaas=SCRAM_LOGIN)
    if settings.kafka_acls:
        text += AUTHORIZER_PROPERTIES.format(super_users="User:ANONYMOUS")
    if settings.kafka_sasl_tls:
        keystore = tls_dir(settings) / "broker.p12"
        text += TLS_PROPERTIES.format(keystore=keystore, password=_KEYSTORE_PASSWORD)
    return text


def ensure_keystore(java: str, settings: StackSettings) -> Path:
    """Make (once) the SASL_SSL listener's self-signed certificate for the stack's host with the
    JDK's keytool; return the PEM file of the certificate, for clients to trust (``ssl_ca_file``)."""
    home = tls_dir(settings)
    keystore, pem = home / "broker.p12", home / "ca.pem"
    if keystore.is_file() and pem.is_file():
        return pem
    home.mkdir(parents=True, exist_ok=True)
    keystore.unlink(missing_ok=True)
    keytool = str(Path(java).resolve().parent / "keytool")
    store = ["-keystore", str(keystore), "-storetype", "PKCS12", "-storepass", _KEYSTORE_PASSWORD]
    steps = [
        [
            keytool, "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
            "-validity", "3650", "-dname", "CN=crossroute dev stack",
            "-ext", f"SAN=IP:{settings.host}", "-ext", "BC:c=ca:true", *store,
        ],
        [keytool, "-exportcert", "-rfc", "-alias", "broker", "-file", str(pem), *store],
    ]  # fmt: skip
    for argv in steps:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if out.returncode != 0:
            raise StackError(
                f"kafka: keytool failed to make the TLS certificate: {out.stdout}{out.stderr}"
            )
    return pem


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, like Kafka's
    ``Uuid.randomUuid()``, which also never starts one with "-" (the storage tool's argument
    parser would read it as an option)."""
    while True:
        raw = base64.urlsafe_b64encode(random_bytes()).rstrip(b"=").decode()
        if not raw.startswith("-"):
            return raw


def kafka_reachable(
    kafka: KafkaSettings, timeout_s: float, bootstrap: str | None = None
) -> tuple[bool, str]:
    """Whether a client with these settings reaches the cluster, and what it found (or the error).

    Args:
        kafka: the connection (protocol, credentials, TLS files).
        timeout_s: how long to wait for the cluster's metadata.
        bootstrap: the servers, when not the settings' own ``bootstrap_servers``.
    """
    servers = bootstrap or kafka.bootstrap_servers
    if servers is None:
        raise ValueError("kafka_reachable needs bootstrap servers")
    fatal: list[str] = []

    def on_error(error: Any) -> None:
        if error.name() in _FATAL_CONNECT_ERRORS:
            fatal.append(error.str())

    conf = kafka.as_librdkafka(
        servers, log_level=0, error_cb=on_error, **{"socket.timeout.ms": 3000}
    )
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout_s
    while True:  # in short rounds, so that bad credentials fail in a second, not at the deadline
        try:
            meta = admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            break
        except Exception as e:  # confluent raises KafkaException with a librdkafka error
            admin.poll(
                0
            )  # serves error_cb: authentication and TLS failures are reported there only
            if fatal or time.monotonic() >= deadline:
                return False, f"unreachable: {fatal[0] if fatal else e}"
    brokers = ", ".join(f"{b.host}:{b.port}" for b in meta.brokers.values())
    return True, f"{len(meta.brokers)} broker(s) [{brokers}], {len(meta.topics)} topic(s)"


def create_scram_user(
    admin_config: dict[str, Any], username: str, password: SecretStr, mechanism: ScramMechanismName
) -> None:
    """Create (or update) a SCRAM user through the admin API (KRaft keeps it in the metadata).

    Args:
        admin_config: confluent-kafka config of a listener allowed to alter users.
    """
    info = ScramCredentialInfo(
        getattr(ScramMechanism, mechanism.replace("-", "_")), _SCRAM_ITERATIONS
    )
    upsert = UserScramCredentialUpsertion(username, info, password.get_secret_value().encode())
    admin = AdminClient(admin_config)
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=30)
