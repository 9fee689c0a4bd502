"""Kafka ACLs for crossroute's users: what a worker or a publisher may do, and nothing more.

On a cluster that authorizes requests (KRaft ``StandardAuthorizer``, ``allow.everyone.if.no.acl.
found=false``), a SASL user can use only what an ACL grants it. The bindings here are the least a
role needs, scoped to the deployment's topic prefix (``CROSSROUTE_TOPICS__PREFIX``) and consumer
group (``CROSSROUTE_WORKER__GROUP_ID``):

- ``worker``: its topics (by prefix): read, write, describe, describe configs, create (it declares
  missing topics at start); its consumer group (by prefix, which covers ``crossroute reindex``'s
  groups named after it): read, describe.
- ``publisher`` (catalog, knowledge base, ticket producers, ``crossroute publish``): write and
  describe on the topics only: it cannot read tickets, decisions or dead letters.
- ``api`` (``crossroute api``): what a publisher may (it publishes the human queue's answers to
  the feedback topic), and read on the dead-letter topic only (the console browses it without a
  consumer group, so it needs no group ACL).

``crossroute topics acl USER --role ROLE`` prints them, ``--apply`` creates them through the
configured (admin) connection.
"""

from __future__ import annotations

from typing import Literal

from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

__all__ = ["ACL_ROLES", "AclRole", "acl_bindings", "apply_acls", "describe_acls"]

AclRole = Literal["worker", "publisher", "api"]
ACL_ROLES: tuple[AclRole, ...] = ("worker", "publisher", "api")

_TOPIC_OPS: dict[AclRole, tuple[AclOperation, ...]] = {
    "worker": (
        AclOperation.READ,
        AclOperation.WRITE,
        AclOperation.DESCRIBE,
        AclOperation.DESCRIBE_CONFIGS,
        AclOperation.CREATE,
    ),
    "publisher": (AclOperation.WRITE, AclOperation.DESCRIBE),
    "api": (AclOperation.WRITE, AclOperation.DESCRIBE),
}


def _grants(
    role: AclRole, topic_prefix: str, group_id: str, dead_letters: str | None = None
) -> list[tuple[ResourceType, str, AclOperation]]:
    if not topic_prefix:
        raise ValueError(
            "an empty topic prefix would grant every topic: set CROSSROUTE_TOPICS__PREFIX"
        )
    grants = [(ResourceType.TOPIC, topic_prefix, op) for op in _TOPIC_OPS[role]]
    if role == "worker":
        grants += [(ResourceType.GROUP, group_id, op)
                   for op in (AclOperation.READ, AclOperation.DESCRIBE)]  # fmt: skip
    if role == "api":
        grants.append((ResourceType.TOPIC, dead_letters or f"{topic_prefix}dead_letters",
                       AclOperation.READ))  # fmt: skip
    return grants


def acl_bindings(
    user: str, role: AclRole, topic_prefix: str, group_id: str, dead_letters: str | None = None
) -> list[AclBinding]:
    """The ALLOW bindings of ``role`` for ``User:user``, from any host, by resource prefix
    (``dead_letters``: the dead-letter topic's name, for the api role; default the prefix's).

    Raises:
        ValueError: an empty topic prefix (it would grant every topic of the cluster).
    """
    return [
        AclBinding(
            kind,
            name,
            ResourcePatternType.PREFIXED,
            f"User:{user}",
            "*",
            op,
            AclPermissionType.ALLOW,
        )
        for kind, name, op in _grants(role, topic_prefix, group_id, dead_letters)
    ]


def describe_acls(
    user: str, role: AclRole, topic_prefix: str, group_id: str, dead_letters: str | None = None
) -> list[str]:
    """One line per binding of :func:`acl_bindings`: ``ALLOW User:u READ TOPIC PREFIXED 'p.'``."""
    return [
        f"ALLOW User:{user} {op.name} {kind.name} PREFIXED {name!r}"
        for kind, name, op in _grants(role, topic_prefix, group_id, dead_letters)
    ]


def apply_acls(admin: AdminClient, bindings: list[AclBinding], timeout_s: float = 30) -> None:
    """Create the bindings (idempotent: an existing ACL is left as it is).

    Raises:
        KafkaException: the connection may not alter ACLs, or the cluster has no authorizer.
    """
    for future in admin.create_acls(bindings, request_timeout=timeout_s).values():
        future.result(timeout=timeout_s)
