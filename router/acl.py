"""Least-privilege Redis ACL users for crossroute's processes.

Two roles touch a deployment's namespace (``CROSSROUTE_INDEX__NAMESPACE``) day to day, and neither
may run what could lose or leak the whole database (``FLUSHALL``, ``FLUSHDB``, ``CONFIG``,
``KEYS``, ``DEBUG``, ``SHUTDOWN``: Redis's ``@dangerous`` category) nor touch another namespace:

- ``worker`` (``crossroute worker``, ``reindex``): reads the namespace; writes only the documents
  and metadata of spaces (``{ns}:sp-*``), the deployment record, the ticket log, the human queue and
  the outcome counters; creates indexes and points the ``live`` alias. It cannot write API keys.
- ``api`` (``crossroute api``): reads (documents, the deployment, API keys, the ticket log and
  the human queue, outcome counts) and searches; its one write is ``SET`` of a shared decision
  (``{ns}:decision:*``, :mod:`router.shared`), granted by an ACL selector that allows nothing else.

Operators (``crossroute index``, ``keys``, ``promote``) keep an admin user. The rules are Redis ACL
syntax, for ``ACL SETUSER <name> on >password <rules…>`` or a users.acl file line
(``crossroute index acl ROLE`` prints them).
"""

from __future__ import annotations

import hashlib
from typing import Literal

__all__ = ["ROLES", "Role", "acl_rules", "acl_user_line", "acl_user_rules", "password_rule"]

Role = Literal["worker", "api"]
ROLES: tuple[Role, ...] = ("worker", "api")

_CONNECTION = ("+ping", "+hello", "+auth", "+client|setinfo", "+client|setname")
_SEARCH_READ = ("+FT.SEARCH", "+FT.AGGREGATE", "+FT.INFO", "+FT._LIST")
_SEARCH_WRITE = ("+FT.CREATE", "+FT.ALIASADD", "+FT.ALIASUPDATE", "+FT.ALTER")
_SCRIPTS = ("+evalsha", "+eval", "+script|load", "+script|exists")
_WORKER_WRITES = ("sp-*", "deployment", "spaces", "ticketlog:*", "humanqueue:*", "outcome:*",
                  "outcomes:*", "outcome-spaces")  # fmt: skip


_INDEX_NAME = "sp-" + "[0-9a-f]" * 20
"""Glob of an index name (``{ns}:{space_id}``) but not of the keys under it."""


def acl_rules(namespace: str, role: Role, alias: str = "live") -> list[str]:
    """The ACL rules of ``role`` over ``namespace`` (no user name, no password); ``alias`` is
    ``CROSSROUTE_INDEX__ALIAS``, which the worker points at the first space it serves."""
    rules = ["resetkeys", "resetchannels", "-@all", f"%R~{namespace}:*"]
    # RediSearch declares the index name of FT.SEARCH / FT.INFO / FT.AGGREGATE a read-write key,
    # so searching needs RW on the index names and the alias; without write commands (the api
    # role has none) that grants nothing more than the read.
    rules += [f"~{namespace}:{_INDEX_NAME}", f"~{namespace}:{alias}"]
    commands = ["+@read", *_CONNECTION, *_SEARCH_READ]
    if role == "worker":
        # read-write (a pattern must grant every permission a command needs on a key: FT.CREATE
        # reads and updates its index name)
        rules += [f"~{namespace}:{pattern}" for pattern in _WORKER_WRITES]
        commands += ["+@write", "+@transaction", *_SCRIPTS, *_SEARCH_WRITE]
    # after the grants: whatever a category let in, these stay out
    rules = [*rules, *commands, "-@dangerous", "-@admin", "-keys", "-scan"]
    if role == "api":  # a selector: SET, on shared decisions only (router.shared)
        rules.append(f"(~{namespace}:decision:* +set)")
    return rules


def password_rule(password: str) -> str:
    """A password as an ACL rule: ``#`` and its SHA-256, never the password in clear."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def acl_user_rules(
    role: Role, namespace: str, alias: str = "live", password: str | None = None
) -> list[str]:
    """The rules of an enabled user of ``role`` (the arguments of ``ACL SETUSER`` after the
    name), its password as :func:`password_rule`."""
    secret = [password_rule(password)] if password else []
    return ["on", *secret, *acl_rules(namespace, role, alias)]


def acl_user_line(
    user: str, role: Role, namespace: str, alias: str = "live", password: str | None = None
) -> str:
    """A users.acl line for ``user`` with the rules of :func:`acl_user_rules`."""
    return " ".join(["user", user, *acl_user_rules(role, namespace, alias, password)])
