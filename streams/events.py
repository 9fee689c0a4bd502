"""Wire events: the JSON messages on crossroute's Kafka topics.

One frozen pydantic model per event type, discriminated by ``type``; every event carries
``schema_version`` (bumped on any incompatible change), a unique ``event_id`` and ``occurred_at``.
Events about an entity carry its id and a ``source_version`` that the source system increases with
every change, so a consumer can refuse a stale update that arrives late.

Decode at the edge with :func:`decode_event`; encode with :func:`encode_event`. Nothing else is
allowed on the wire (no pickle, no faust records).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

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
    "ArticleDeleted",
    "ArticleUpserted",
    "EntityEvent",
    "Event",
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


class _EntityEvent(_Event):
    source_version: Annotated[int, Field(ge=0)]
    """Increases with every change of the entity at the source; older versions are refused."""

    @property
    def tenant(self) -> str:
        """Tenant of the entity."""
        raise NotImplementedError

    @property
    def entity_id(self) -> str:
        """Id of the entity."""
        raise NotImplementedError

    @property
    def key(self) -> bytes:
        """Kafka message key: ``tenant/entity_id``, so updates of one entity stay ordered."""
        return f"{self.tenant}/{self.entity_id}".encode()


class _Upserted(_EntityEvent):
    def _doc(self) -> Product | Article | WarrantyPolicy | Media:
        raise NotImplementedError

    @property
    def tenant(self) -> str:
        return self._doc().tenant

    @property
    def entity_id(self) -> str:
        return self._doc().id


class _Deleted(_EntityEvent):
    tenant_id: TenantId
    id: EntityId

    @property
    def tenant(self) -> str:
        return self.tenant_id

    @property
    def entity_id(self) -> str:
        return self.id


class ProductUpserted(_Upserted):
    """A product was created or changed."""

    type: Literal["product.upserted"] = "product.upserted"
    product: Product

    def _doc(self) -> Product:
        return self.product


class ProductDeleted(_Deleted):
    """A product was removed from the catalog."""

    type: Literal["product.deleted"] = "product.deleted"


class ArticleUpserted(_Upserted):
    """A knowledge-base article was created or changed."""

    type: Literal["article.upserted"] = "article.upserted"
    article: Article

    def _doc(self) -> Article:
        return self.article


class ArticleDeleted(_Deleted):
    """A knowledge-base article was removed."""

    type: Literal["article.deleted"] = "article.deleted"


class WarrantyPolicyUpserted(_Upserted):
    """A warranty/return/refund policy was created or changed."""

    type: Literal["warranty_policy.upserted"] = "warranty_policy.upserted"
    policy: WarrantyPolicy

    def _doc(self) -> WarrantyPolicy:
        return self.policy


class WarrantyPolicyDeleted(_Deleted):
    """A warranty/return/refund policy was removed."""

    type: Literal["warranty_policy.deleted"] = "warranty_policy.deleted"


class MediaUploaded(_Upserted):
    """A customer uploaded a screenshot or a photo."""

    type: Literal["media.uploaded"] = "media.uploaded"
    media: Media

    def _doc(self) -> Media:
        return self.media


class TicketCreated(_Event):
    """A support ticket was opened and needs routing."""

    type: Literal["ticket.created"] = "ticket.created"
    ticket: Ticket

    @property
    def key(self) -> bytes:
        """Kafka message key: ``tenant/ticket_id``."""
        return f"{self.ticket.tenant}/{self.ticket.id}".encode()


class RoutingDecided(_Event):
    """The router decided where a ticket goes (or that a human must look at it)."""

    type: Literal["routing.decided"] = "routing.decided"
    decision: RoutingDecision

    @property
    def key(self) -> bytes:
        """Kafka message key: ``tenant/ticket_id``."""
        return f"{self.decision.tenant}/{self.decision.ticket_id}".encode()


class FeedbackRecorded(_Event):
    """What happened after a routing decision: online evaluation, tied to the space that served it."""

    type: Literal["feedback.recorded"] = "feedback.recorded"
    tenant_id: TenantId
    ticket_id: EntityId
    space_id: Annotated[str, Field(min_length=1, max_length=128)]
    """The embedding space of the decision this feedback is about."""
    action: Literal["clicked", "resolved", "escalated"]
    doc_id: EntityId | None = None
    """The article or policy clicked or that resolved the ticket (none for an escalation)."""

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
Event = Annotated[
    EntityEvent | TicketCreated | RoutingDecided | FeedbackRecorded,
    Field(discriminator="type"),
]
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
