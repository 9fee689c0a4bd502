"""The secrets docker-compose.yml runs with: users, passwords and certificates, made on the host.

``docker compose up`` runs Redis with ACL users only (the default user may PING, nothing else),
Kafka with a SASL_SSL listener whose SCRAM users are created when its storage is formatted and whose
requests KRaft's ``StandardAuthorizer`` checks, the worker and the API each as their own
least-privilege user. Nothing secret is in the image or in the compose file: it reads the files
:func:`write_compose_secrets` makes under ``stack/secrets/`` (git-ignored):

==========================  ==========================================================  =======
file                        what                                                        mode
==========================  ==========================================================  =======
``kafka.env``               cluster id and the SCRAM passwords (the broker's start)     0600
``worker.env``              the worker's Redis URL and SASL user                        0600
``api.env``                 the API's Redis URL (read-only user) and SASL user          0600
``admin.env``               the operators' Redis and Kafka admin users                  0600
``publisher.env``           a SASL user that may only publish (producers, the demo)     0600
``ca.crt``                  the CA clients trust for the broker's TLS                   0644
``kafka/broker.p12``        the broker's key and certificate (PKCS#12)                  0644
``kafka/server.properties`` the broker's configuration (names the keystore password)    0644
``redis/users.acl``         Redis ACL users, passwords as SHA-256 only                  0644
==========================  ==========================================================  =======

The folder itself is ``0700``: the files and sub-folders mounted into containers must be readable
by the containers' own users (``0644``, ``0755``), so the folder is what keeps other users of the
host out. Passwords are 48 hex digits (no quoting needed in URLs, env files or SCRAM's
``[name=…,password=…]`` syntax).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from router.acl import acl_user_line, password_rule
from streams.devstack.envfile import write_env_file
from streams.devstack.kafka import (
    AUTHORIZER_PROPERTIES,
    BROKER_PROPERTIES,
    SASL_PROPERTIES,
    SCRAM_LOGIN,
    TLS_PROPERTIES,
    new_cluster_id,
)
from streams.devstack.tls import new_authority, new_server_certificate
from streams.exceptions import StackError

__all__ = [
    "COMPOSE_USERS",
    "CONTAINER_SECRETS",
    "KAFKA_DATA",
    "KAFKA_ROLES",
    "ComposeNames",
    "compose_server_properties",
    "write_compose_secrets",
]

CONTAINER_SECRETS = "/etc/crossroute"
"""Where the compose services mount what they need of the secrets folder (same layout)."""
KAFKA_DATA = "/var/lib/kafka/data"
SCRAM_MECHANISM = "SCRAM-SHA-512"
KAFKA_ROLES = ("admin", "worker", "publisher", "api")
"""The compose users that are Kafka (SCRAM) users too: the API publishes the queue's answers."""
COMPOSE_USERS = {"worker": "crossroute-worker", "api": "crossroute-api",
                 "publisher": "crossroute-publisher", "admin": "admin"}  # fmt: skip
"""The user each compose role runs as (Redis ACL users and Kafka SCRAM users share names)."""


@dataclass(frozen=True)
class ComposeNames:
    """Host names and ports of the compose services, as the other containers reach them."""

    kafka_host: str = "kafka"
    kafka_port: int = 9094
    """The SASL_SSL listener (the only one other containers reach)."""
    kafka_internal_port: int = 9092
    """PLAINTEXT on the broker container's loopback only: the broker itself, its health check."""
    kafka_controller_port: int = 9093
    redis_host: str = "redis"
    redis_port: int = 6379


def compose_server_properties(names: ComposeNames, keystore_password: str) -> str:
    """The compose broker's ``server.properties``: clients on SASL_SSL with SCRAM users authorized
    by ACLs (``admin`` is the super user); PLAINTEXT on the container's loopback for the broker,
    its controller and its health check."""
    internal, controller = names.kafka_internal_port, names.kafka_controller_port
    head = f"""\
# Written by `crossroute stack compose-secrets`; the broker of docker-compose.yml.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=INTERNAL://127.0.0.1:{internal},CONTROLLER://127.0.0.1:{controller},CLIENTS://0.0.0.0:{names.kafka_port}
advertised.listeners=INTERNAL://127.0.0.1:{internal},CLIENTS://{names.kafka_host}:{names.kafka_port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT,CLIENTS:SASL_SSL
inter.broker.listener.name=INTERNAL
"""
    return (
        head
        + BROKER_PROPERTIES.format(data_dir=KAFKA_DATA)
        + SASL_PROPERTIES.format(listener="clients", jaas=SCRAM_LOGIN)
        + AUTHORIZER_PROPERTIES.format(super_users=f"User:ANONYMOUS;User:{COMPOSE_USERS['admin']}")
        + TLS_PROPERTIES.format(
            keystore=f"{CONTAINER_SECRETS}/kafka/broker.p12", password=keystore_password
        )
    )


def _public(path: Path, data: bytes) -> None:
    """A file the containers' users must read (the 0700 secrets folder above keeps the host's
    other users out); a sub-folder is mounted whole, so it must be open to them too."""
    if not path.parent.is_dir():
        path.parent.mkdir()
        path.parent.chmod(0o755)
    path.write_bytes(data)
    path.chmod(0o644)


def write_compose_secrets(
    folder: Path,
    *,
    namespace: str,
    alias: str,
    names: ComposeNames | None = None,
    force: bool = False,
) -> list[Path]:
    """Make every secret docker-compose.yml reads under ``folder``; return the files written.

    Args:
        folder: normally ``stack/secrets`` next to docker-compose.yml.
        namespace: ``CROSSROUTE_INDEX__NAMESPACE`` the Redis users are confined to.
        alias: ``CROSSROUTE_INDEX__ALIAS`` the worker may point.
        names: where the containers reach each other (compose's service names by default).
        force: replace existing secrets (new passwords: the compose volumes keep the old SCRAM
            users, so recreate them too).

    Raises:
        StackError: the folder already holds secrets and ``force`` is not given.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    names = names or ComposeNames()
    if (folder / "kafka.env").exists() and not force:
        raise StackError(
            f"{folder} already holds compose secrets; pass --force to replace them (the running "
            "services keep the old passwords until their volumes are recreated)"
        )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    passwords = {role: secrets.token_hex(24) for role in COMPOSE_USERS}
    keystore_password = secrets.token_hex(24)
    written: list[Path] = []

    ca, ca_key = new_authority("crossroute compose CA")
    cert, key = new_server_certificate(ca, ca_key, [names.kafka_host, "localhost", "127.0.0.1"])
    pem = serialization.Encoding.PEM
    _public(folder / "ca.crt", ca.public_bytes(pem))
    keystore = pkcs12.serialize_key_and_certificates(
        b"broker",
        key,
        cert,
        [ca],
        serialization.BestAvailableEncryption(keystore_password.encode()),
    )
    _public(folder / "kafka" / "broker.p12", keystore)
    _public(
        folder / "kafka" / "server.properties",
        compose_server_properties(names, keystore_password).encode(),
    )
    written += [
        folder / "ca.crt",
        folder / "kafka" / "broker.p12",
        folder / "kafka" / "server.properties",
    ]

    users = COMPOSE_USERS
    acl = [
        "user default on nopass resetkeys resetchannels -@all +ping",  # health checks only
        f"user {users['admin']} on {password_rule(passwords['admin'])} ~* &* +@all",
        acl_user_line(users["worker"], "worker", namespace, alias, passwords["worker"]),
        acl_user_line(users["api"], "api", namespace, alias, passwords["api"]),
    ]
    _public(folder / "redis" / "users.acl", ("\n".join(acl) + "\n").encode())
    written.append(folder / "redis" / "users.acl")

    def redis_url(role: str) -> str:
        return f"redis://{users[role]}:{passwords[role]}@{names.redis_host}:{names.redis_port}/0"

    def sasl(role: str) -> dict[str, str]:
        return {
            "CROSSROUTE_KAFKA__SASL_USERNAME": users[role],
            "CROSSROUTE_KAFKA__SASL_PASSWORD": passwords[role],
        }

    env_files = {
        "kafka.env": {
            "KAFKA_CLUSTER_ID": new_cluster_id(),
            "KAFKA_SCRAM_MECHANISM": SCRAM_MECHANISM,
            **{f"KAFKA_{role.upper()}_USER": users[role] for role in KAFKA_ROLES},
            **{f"KAFKA_{role.upper()}_PASSWORD": passwords[role] for role in KAFKA_ROLES},
        },
        "worker.env": {"CROSSROUTE_REDIS__URL": redis_url("worker"), **sasl("worker")},
        "api.env": {"CROSSROUTE_REDIS__URL": redis_url("api"), **sasl("api")},
        "admin.env": {"CROSSROUTE_REDIS__URL": redis_url("admin"), **sasl("admin")},
        "publisher.env": sasl("publisher"),
    }
    for name, values in env_files.items():
        write_env_file(folder / name, values, "Written by `crossroute stack compose-secrets`. "
                       "Secret: keep it out of git and images.")  # fmt: skip
        written.append(folder / name)
    return sorted(written)
