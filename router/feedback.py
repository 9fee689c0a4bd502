"""Feedback closes the loop: what a routed ticket leaves behind for its later feedback, and the
exemplar a feedback turns it into.

When the worker routes a ticket it records it in the **ticket log** (:class:`TicketLog`): its text,
locale, and the space, queue and top target of its decision, for ``ttl_s`` (30 days by default).
Feedback events carry only the ticket id, so this is where a ``resolved`` or ``escalated`` feedback
finds the text to learn from. Every key carries the tenant (``{namespace}:ticketlog:{tenant}:{id}``),
so a feedback of one tenant can never find another tenant's ticket.

Tickets the router abstained on wait in the tenant's **human queue**
(``{namespace}:humanqueue:{tenant}``, a sorted set of ticket ids by decision time, newest last), kept
with their log entries: an agent answers them (:meth:`TicketLog.queue` lists them with the
suggestions the router had), and the feedback that answers one (``resolved`` or ``escalated``)
takes it out (:meth:`TicketLog.answered`). The queue holds at most :data:`MAX_QUEUED` tickets per
tenant, none older than the log's TTL.

A ticket teaches through one exemplar, :func:`exemplar_id` (``fb-{ticket_id}``): ``resolved`` makes
it an exemplar of the article or policy that resolved it, ``escalated`` an out-of-scope exemplar
(it votes for the human queue), ``reopened``/``wrong_article`` delete it. Its writes are versioned by
the feedback's time, so the latest feedback of a ticket wins, whatever order they arrive in.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal, Protocol

import redis
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from router.connection import reply_text
from router.schemas import (
    MAX_TEXT_CHARS,
    EntityId,
    Exemplar,
    Locale,
    RoutingDecision,
    TenantId,
    Ticket,
)

__all__ = [
    "MAX_QUEUED",
    "FeedbackSink",
    "LoggedTicket",
    "QueuePage",
    "Suggestion",
    "TicketLog",
    "exemplar_id",
    "feedback_exemplar",
]

log = logging.getLogger(__name__)
_MAX_ID = 128  # EntityId's max_length
MAX_QUEUED = 10_000
"""Most tickets a tenant's human queue keeps (the oldest leave first)."""


def exemplar_id(ticket_id: str) -> str:
    """The id of the exemplar a ticket's feedback writes: ``fb-{ticket_id}``; a ticket id too long
    for that keeps its first 108 characters and a digest of the whole id, so it stays unique."""
    ident = f"fb-{ticket_id}"
    if len(ident) <= _MAX_ID:
        return ident
    digest = hashlib.sha256(ticket_id.encode()).hexdigest()[:16]
    return f"fb-{ticket_id[: _MAX_ID - 3 - 1 - 16]}:{digest}"


class Suggestion(BaseModel):
    """A target the router had for a ticket, as the ticket log keeps it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    doc_id: EntityId
    kind: Literal["article", "warranty_policy"]
    score: float


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
    suggestions: tuple[Suggestion, ...] = ()
    """The decision's targets, best first (what an agent of the human queue starts from)."""
    images: tuple[Literal["photo", "screenshot"], ...] = ()
    """Which images the ticket carried (kept for the queue; the images themselves are not)."""

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
            suggestions=tuple(
                Suggestion(doc_id=t.doc_id, kind=t.kind, score=round(t.score, 6))
                for t in decision.targets
            ),
            images=tuple(
                name
                for name, ref in (("photo", ticket.photo), ("screenshot", ticket.screenshot))
                if ref is not None
            ),
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


class FeedbackSink(Protocol):
    """Where an agent's answer to a ticket of the human queue goes: ``streams`` publishes it as a
    ``feedback.recorded`` event for the worker (the router cannot reach Kafka)."""

    def answer(self, ticket: LoggedTicket, doc_id: str | None) -> str:
        """Publish ``resolved`` with ``doc_id`` (the article or policy that answers ``ticket``),
        or ``escalated`` without one (no answer fits); returns the action published, once the
        broker confirmed it.

        Raises:
            router.exceptions.FeedbackError: not confirmed; nothing was published.
        """
        ...


class QueuePage(BaseModel):
    """A page of a tenant's human queue, newest first."""

    model_config = ConfigDict(frozen=True)

    open: int
    """Tickets waiting in the queue (all pages)."""
    tickets: tuple[LoggedTicket, ...]


class TicketLog:
    """Routed tickets in Redis, per tenant, for ``ttl_s`` seconds, and the human queue.

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
        self.queue_prefix = f"{namespace}:humanqueue:"
        self.ttl_s = ttl_s
        self._enqueue = client.register_script(_ENQUEUE)

    def key(self, tenant: str, ticket_id: str) -> str:
        """The Redis key of one ticket (tenant ids have no ``:``, so keys never collide)."""
        return f"{self.prefix}{tenant}:{ticket_id}"

    def queue_key(self, tenant: str) -> str:
        """The Redis key of a tenant's human queue."""
        return f"{self.queue_prefix}{tenant}"

    def answered_key(self, tenant: str, ticket_id: str) -> str:
        """The marker of an answered ticket (a redelivered ticket event does not queue it again)."""
        return f"{self.queue_prefix}{tenant}:answered:{ticket_id}"

    def record(self, entries: Sequence[LoggedTicket]) -> None:
        """Keep ``entries`` (one pipeline); a ticket routed again replaces its entry and its TTL.
        Abstained tickets join their tenant's human queue, which sheds what is older than the TTL
        and past :data:`MAX_QUEUED`.

        Raises:
            redis.ConnectionError, redis.TimeoutError: retryable; recording again is harmless.
        """
        if not entries:
            return
        pipe = self.client.pipeline(transaction=False)
        queued: set[str] = set()
        for entry in entries:
            pipe.set(
                self.key(entry.tenant, entry.ticket_id), entry.model_dump_json(), ex=self.ttl_s
            )
            if entry.queue == "human":
                queue = self.queue_key(entry.tenant)
                self._enqueue(
                    keys=[queue, self.answered_key(entry.tenant, entry.ticket_id)],
                    args=[_ms(entry.decided_at), entry.ticket_id],
                    client=pipe,
                )
                queued.add(queue)
        oldest = int(time.time() * 1000) - self.ttl_s * 1000
        for queue in sorted(queued):
            pipe.zremrangebyscore(queue, "-inf", f"({oldest}")
            pipe.zremrangebyrank(queue, 0, -MAX_QUEUED - 1)
            pipe.expire(queue, self.ttl_s)
        pipe.execute()

    def answered(self, refs: Sequence[tuple[str, str]]) -> int:
        """Take ``(tenant, ticket_id)`` tickets out of their human queues (an agent answered
        them), for good: the ticket event redelivered later does not queue them again. Returns
        how many were there."""
        if not refs:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for tenant, ticket in refs:
            pipe.zrem(self.queue_key(tenant), ticket)
            pipe.set(self.answered_key(tenant, ticket), 1, ex=self.ttl_s)
        return sum(int(n) for n in pipe.execute()[::2])

    def queue(self, tenant: str, limit: int = 50, before_ms: int | None = None) -> QueuePage:
        """The tenant's human queue, newest first: at most ``limit`` tickets decided before
        ``before_ms`` (ms since the epoch; None: up to now), with their log entries (a ticket
        whose entry expired is left out)."""
        queue = self.queue_key(tenant)
        top = f"({before_ms}" if before_ms is not None else "+inf"
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(queue)
        pipe.zrevrangebyscore(queue, top, "-inf", start=0, num=limit)
        count, ids = pipe.execute()
        found = self.lookup([(tenant, reply_text(i)) for i in ids])
        return QueuePage(open=int(count), tickets=tuple(t for t in found if t is not None))

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


# KEYS[1] the tenant's queue, KEYS[2] the ticket's answered marker; ARGV: decided_at ms, ticket id
_ENQUEUE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
return redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
"""


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)
