"""Feedback closes the loop: what a routed ticket leaves behind for its later feedback, and the
exemplar a feedback turns it into.

When the worker routes a ticket it records it in the **ticket log** (:class:`TicketLog`): its text,
locale, and the space, queue and top target of its decision, for ``ttl_s`` (30 days by default).
Feedback events carry only the ticket id, so this is where a ``resolved`` or ``escalated`` feedback
finds the text to learn from. Every key carries the tenant (``{namespace}:ticketlog:{tenant}:{id}``),
so a feedback of one tenant can never find another tenant's ticket.

A ticket teaches through one exemplar, :func:`exemplar_id` (``fb-{ticket_id}``): ``resolved`` makes
it an exemplar of the article or policy that resolved it, ``escalated`` an out-of-scope exemplar
(it votes for the human queue), ``reopened``/``wrong_article`` delete it. Its writes are versioned by
the feedback's time, so the latest feedback of a ticket wins, whatever order they arrive in.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Annotated, Literal

import redis
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from router.schemas import (
    MAX_TEXT_CHARS,
    EntityId,
    Exemplar,
    Locale,
    RoutingDecision,
    TenantId,
    Ticket,
)

__all__ = ["LoggedTicket", "TicketLog", "exemplar_id", "feedback_exemplar"]

log = logging.getLogger(__name__)
_MAX_ID = 128  # EntityId's max_length


def exemplar_id(ticket_id: str) -> str:
    """The id of the exemplar a ticket's feedback writes: ``fb-{ticket_id}``; a ticket id too long
    for that keeps its first 108 characters and a digest of the whole id, so it stays unique."""
    ident = f"fb-{ticket_id}"
    if len(ident) <= _MAX_ID:
        return ident
    digest = hashlib.sha256(ticket_id.encode()).hexdigest()[:16]
    return f"fb-{ticket_id[: _MAX_ID - 3 - 1 - 16]}:{digest}"


class LoggedTicket(BaseModel):
    """What the ticket log keeps of a routed ticket."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: TenantId
    ticket_id: EntityId
    text: Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
    """The ticket's text (empty for a ticket of images only: nothing to learn from)."""
    locale: Locale
    space_id: Annotated[str, Field(min_length=1, max_length=128)]
    """The embedding space of the decision."""
    queue: Literal["auto", "human"]
    top_target: EntityId | None = None
    """The best target of the decision (None when there was none)."""
    decided_at: AwareDatetime

    @classmethod
    def of(cls, ticket: Ticket, decision: RoutingDecision) -> LoggedTicket:
        """The log entry of a ticket and its decision."""
        return cls(
            tenant=ticket.tenant,
            ticket_id=ticket.id,
            text=ticket.text,
            locale=ticket.locale,
            space_id=decision.space_id,
            queue=decision.queue,
            top_target=decision.targets[0].doc_id if decision.targets else None,
            decided_at=decision.decided_at,
        )


def feedback_exemplar(
    ticket: LoggedTicket,
    target_id: str | None,
    target_kind: Literal["article", "warranty_policy", "human"],
) -> Exemplar:
    """The exemplar a feedback makes of a logged ticket: of ``target_id`` (resolved), or out of
    scope (``target_kind="human"``, no target: escalated).

    Raises:
        pydantic.ValidationError: the ticket has no text (check :attr:`LoggedTicket.text` first).
    """
    return Exemplar(
        id=exemplar_id(ticket.ticket_id),
        tenant=ticket.tenant,
        locale=ticket.locale,
        text=ticket.text,
        target_id=target_id,
        target_kind=target_kind,
    )


class TicketLog:
    """Routed tickets in Redis, per tenant, for ``ttl_s`` seconds.

    Args:
        client: a redis-py client.
        namespace: key prefix (the index namespace, ``CROSSROUTE_INDEX__NAMESPACE``).
        ttl_s: how long an entry is kept; feedback that comes later finds nothing.
    """

    def __init__(self, client: redis.Redis, namespace: str, ttl_s: int) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self.client = client
        self.prefix = f"{namespace}:ticketlog:"
        self.ttl_s = ttl_s

    def key(self, tenant: str, ticket_id: str) -> str:
        """The Redis key of one ticket (tenant ids have no ``:``, so keys never collide)."""
        return f"{self.prefix}{tenant}:{ticket_id}"

    def record(self, entries: Sequence[LoggedTicket]) -> None:
        """Keep ``entries`` (one pipeline); a ticket routed again replaces its entry and its TTL.

        Raises:
            redis.ConnectionError, redis.TimeoutError: retryable; recording again is harmless.
        """
        if not entries:
            return
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            pipe.set(
                self.key(entry.tenant, entry.ticket_id), entry.model_dump_json(), ex=self.ttl_s
            )
        pipe.execute()

    def lookup(self, refs: Sequence[tuple[str, str]]) -> list[LoggedTicket | None]:
        """The entries of ``(tenant, ticket_id)`` pairs, None where there is none (never routed,
        expired, or routed for another tenant). An entry that no longer parses counts as none."""
        if not refs:
            return []
        raw = self.client.mget([self.key(tenant, ticket) for tenant, ticket in refs])
        out: list[LoggedTicket | None] = []
        for (tenant, ticket), value in zip(refs, raw, strict=True):
            entry = None
            if value is not None:
                try:
                    entry = LoggedTicket.model_validate_json(value)
                except ValidationError as e:
                    log.warning("ignoring unreadable ticket log entry %s/%s: %s", tenant, ticket, e)
            out.append(entry)
        return out
