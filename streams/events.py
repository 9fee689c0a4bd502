"""Wire events: the JSON messages on crossroute's Kafka topics.

One frozen pydantic model per event type, discriminated by ``type``; every event carries
``schema_version`` (bumped on any incompatible change), a unique ``event_id`` and ``occurred_at``.
Events about an entity carry its id and a ``source_version`` that the source system increases with
every change, so a consumer can refuse a stale update that arrives late.

Every event names its ``tenant``; an upsert (:class:`EntityUpserted`) carries its whole ``document``
under the field named like the subject of its type (``warranty_policy`` in
``warranty_policy.upserted``; ``policy``, that field's earlier name, is still read); a deletion
(:class:`EntityDeleted`) the entity's ``tenant_id`` and ``id``. Which topic each event goes on is
``streams.topics.topic_role``.

Decode at the edge with :func:`decode_event`; encode with :func:`encode_event`. Nothing else is
allowed on the wire (no pickle, no faust records).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

from router.schemas import (
    Article,
    EntityId,
    Media,
    Product,
    RoutingDecision,
    TenantId,
    Ticket,
    WarrantyPolicy,
)
from streams.exceptions import EventDecodeError

__all__ = [
    "AnyEvent",
    "ArticleDeleted",
    "ArticleUpserted",
    "Document",
    "EntityDeleted",
    "EntityEvent",
    "EntityUpserted",
    "Event",
    "FeedbackAction",
    "FeedbackRecorded",
    "MediaUploaded",
    "ProductDeleted",
    "ProductUpserted",
    "RoutingDecided",
    "TicketCreated",
    "WarrantyPolicyDeleted",
    "WarrantyPolicyUpserted",
    "decode_event",
    "encode_event",
    "export_json_schemas",
]

SCHEMA_VERSION: Literal[1] = 1

Document = Product | Article | WarrantyPolicy | Media
"""What an upsert event carries: a whole domain document."""


def _event_id() -> str:
    return uuid.uuid4().hex


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Annotated[str, Field(min_length=1, max_length=64)] = Field(default_factory=_event_id)
    occurred_at: AwareDatetime = Field(default_factory=_utcnow)
    """When the change happened at the source (freshness is measured from here)."""

    @property
    def tenant(self) -> str:
        """The tenant the event is about (every event has one)."""
        raise NotImplementedError

    @property
    def key(self) -> bytes:
        """Kafka message key: ``tenant/id`` of what the event is about, so that the events of one
        entity (or one ticket) stay ordered in one partition."""
        raise NotImplementedError


class _EntityEvent(_Event):
    source_version: Annotated[int, Field(ge=0)]
    """Increases with every change of the entity at the source; older versions are refused."""

    @property
    def entity_id(self) -> str:
        """Id of the entity."""
        raise NotImplementedError

    @property
    def key(self) -> bytes:
        """Kafka message key: ``tenant/entity_id``, so updates of one entity stay ordered."""
        return f"{self.tenant}/{self.entity_id}".encode()


class EntityUpserted(_EntityEvent):
    """Base of the events that carry a whole domain document to index (upserts, media uploads).

    The document's field is named like the subject of the event type (``warranty_policy`` in
    ``warranty_policy.upserted``), the one spelling of the document kind.
    """

    @classmethod
    def kind(cls) -> str:
        """The document kind: the subject of the event type, and the name of the document field."""
        return str(cls.model_fields["type"].default).partition(".")[0]

    @classmethod
    def of(cls, document: Document, *, source_version: int) -> Self:
        """The event carrying ``document`` at ``source_version``."""
        return cls.model_validate({cls.kind(): document, "source_version": source_version})

    @property
    def document(self) -> Document:
        """The domain document the event carries."""
        raise NotImplementedError

    @property
    def tenant(self) -> str:
        """Tenant of the document."""
        return self.document.tenant

    @property
    def entity_id(self) -> str:
        """Id of the document."""
        return self.document.id


class EntityDeleted(_EntityEvent):
    """Base of the events that remove an entity (by tenant and id)."""

    tenant_id: TenantId
    id: EntityId

    @property
    def tenant(self) -> str:
        """Tenant of the removed entity."""
        return self.tenant_id

    @property
    def entity_id(self) -> str:
        """Id of the removed entity."""
        return self.id


class ProductUpserted(EntityUpserted):
    """A product was created or changed."""

    type: Literal["product.upserted"] = "product.upserted"
    product: Product

    @property
    def document(self) -> Product:
        """The product."""
        return self.product


class ProductDeleted(EntityDeleted):
    """A product was removed from the catalog."""

    type: Literal["product.deleted"] = "product.deleted"


class ArticleUpserted(EntityUpserted):
    """A knowledge-base article was created or changed."""

    type: Literal["article.upserted"] = "article.upserted"
    article: Article

    @property
    def document(self) -> Article:
        """The article."""
        return self.article


class ArticleDeleted(EntityDeleted):
    """A knowledge-base article was removed."""

    type: Literal["article.deleted"] = "article.deleted"


class WarrantyPolicyUpserted(EntityUpserted):
    """A warranty/return/refund policy was created or changed."""

    type: Literal["warranty_policy.upserted"] = "warranty_policy.upserted"
    warranty_policy: WarrantyPolicy = Field(
        validation_alias=AliasChoices("warranty_policy", "policy")
    )
    """The policy (named like the event type; ``policy``, its name before, is still read)."""

    @property
    def document(self) -> WarrantyPolicy:
        """The policy."""
        return self.warranty_policy


class WarrantyPolicyDeleted(EntityDeleted):
    """A warranty/return/refund policy was removed."""

    type: Literal["warranty_policy.deleted"] = "warranty_policy.deleted"


class MediaUploaded(EntityUpserted):
    """A customer uploaded a screenshot or a photo."""

    type: Literal["media.uploaded"] = "media.uploaded"
    media: Media

    @property
    def document(self) -> Media:
        """The uploaded media."""
        return self.media


class TicketCreated(_Event):
    """A support ticket was opened and needs routing."""

    type: Literal["ticket.created"] = "ticket.created"
    ticket: Ticket

    @property
    def tenant(self) -> str:
        """Tenant of the ticket."""
        return self.ticket.tenant

    @property
    def key(self) -> bytes:
        """Kafka message key: ``tenant/ticket_id``."""
        return f"{self.ticket.tenant}/{self.ticket.id}".encode()


class RoutingDecided(_Event):
    """The router decided where a ticket goes (or that a human must look at it)."""

    type: Literal["routing.decided"] = "routing.decided"
    decision: RoutingDecision

    @property
    def tenant(self) -> str:
        """Tenant of the routed ticket."""
        return self.decision.tenant

    @property
    def key(self) -> bytes:
        """Kafka message key: ``tenant/ticket_id``."""
        return f"{self.decision.tenant}/{self.decision.ticket_id}".encode()


FeedbackAction = Literal["clicked", "resolved", "escalated", "reopened", "wrong_article"]
"""What happened to a routed ticket (the worker learns from it: ``docs/streams.md``)."""


class FeedbackRecorded(_Event):
    """What happened after a routing decision: online evaluation, tied to the space that served it.

    The worker learns from it: ``resolved`` (with ``doc_id``) makes the ticket an exemplar of that
    article or policy, ``escalated`` an out-of-scope exemplar (it votes for the human queue),
    ``reopened`` and ``wrong_article`` take that exemplar back, ``clicked`` is counted. The
    exemplar's writes are versioned by ``occurred_at`` (in ms): the latest feedback of a ticket wins.
    """

    type: Literal["feedback.recorded"] = "feedback.recorded"
    tenant_id: TenantId
    ticket_id: EntityId
    space_id: Annotated[str, Field(min_length=1, max_length=128)]
    """The embedding space of the decision this feedback is about."""
    action: FeedbackAction
    doc_id: EntityId | None = None
    """The article or policy clicked, that resolved the ticket, or that was wrong (none for an
    escalation or a reopening)."""

    @property
    def tenant(self) -> str:
        """Tenant of the ticket."""
        return self.tenant_id

    @property
    def key(self) -> bytes:
        """Kafka message key: ``tenant/ticket_id`` (with the ticket's decisions)."""
        return f"{self.tenant_id}/{self.ticket_id}".encode()


EntityEvent = (
    ProductUpserted
    | ProductDeleted
    | ArticleUpserted
    | ArticleDeleted
    | WarrantyPolicyUpserted
    | WarrantyPolicyDeleted
    | MediaUploaded
)
AnyEvent = EntityEvent | TicketCreated | RoutingDecided | FeedbackRecorded
Event = Annotated[AnyEvent, Field(discriminator="type")]
"""Every event crossroute puts on or reads from a topic."""

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES: tuple[type[_Event], ...] = (
    ProductUpserted,
    ProductDeleted,
    ArticleUpserted,
    ArticleDeleted,
    WarrantyPolicyUpserted,
    WarrantyPolicyDeleted,
    MediaUploaded,
    TicketCreated,
    RoutingDecided,
    FeedbackRecorded,
)


def decode_event(raw: bytes | str) -> Event:
    """Parse one message value into its event model.

    Raises:
        EventDecodeError: not JSON, unknown ``type``, wrong ``schema_version`` or invalid fields; the
            message lists every problem (never retryable).
    """
    try:
        return _EVENT_ADAPTER.validate_json(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in e.errors(include_url=False)[:10]
        )
        raise EventDecodeError(f"invalid event: {problems}") from e


def encode_event(event: _Event) -> bytes:
    """Serialize an event to the JSON bytes put on the wire."""
    return event.model_dump_json(exclude_none=True).encode()


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every event type, keyed by file name; ``event.schema.json`` is the union."""
    out = {"event.schema.json": _EVENT_ADAPTER.json_schema(mode="serialization")}
    for cls in EVENT_TYPES:
        type_name = cls.model_fields["type"].default
        out[f"{type_name}.schema.json"] = cls.model_json_schema(mode="serialization")
    return out


def export_json_schemas(out_dir: Path) -> list[Path]:
    """Write :func:`json_schemas` into ``out_dir`` (sorted keys, stable bytes); return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in sorted(json_schemas().items()):
        path = out_dir / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
