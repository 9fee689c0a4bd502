"""Publishing events: an idempotent confluent-kafka producer, and JSONL files → events.

``Publisher`` routes every event to its topic (entity events by kind, tickets, decisions, feedback),
keyed ``tenant/id`` so updates of one entity stay ordered in one partition, with
``enable.idempotence`` (no duplicates from producer retries, per-partition order kept) and
``acks=all``. ``publish`` waits for every delivery report and returns the failures instead of
dropping them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from pydantic import ValidationError

from router.schemas import Article, Media, Product, Ticket, WarrantyPolicy
from streams.events import (
    AnyEvent,
    ArticleDeleted,
    ArticleUpserted,
    Document,
    FeedbackRecorded,
    MediaUploaded,
    ProductDeleted,
    ProductUpserted,
    TicketCreated,
    WarrantyPolicyDeleted,
    WarrantyPolicyUpserted,
    encode_event,
)
from streams.exceptions import ConfigurationError
from streams.settings import TopicSettings
from streams.topics import COMPACTED_ROLES, ENTITY_ROLES, IMAGE_ROLES, MAX_RECORD_BYTES, topic_role

__all__ = ["KINDS", "KIND_ALIASES", "PublishReport", "Publisher", "read_events"]

KINDS = (*ENTITY_ROLES, "tickets", "feedback")
"""What ``crossroute publish`` reads (one JSON document per line): the role of the topic it goes to."""
KIND_ALIASES = {"policies": "warranty_policies"}
"""Older names of kinds, still accepted."""

_Upserted = ProductUpserted | ArticleUpserted | WarrantyPolicyUpserted | MediaUploaded
_UPSERTS: dict[str, tuple[type[_Upserted], type[Document]]] = {
    "products": (ProductUpserted, Product),
    "articles": (ArticleUpserted, Article),
    "warranty_policies": (WarrantyPolicyUpserted, WarrantyPolicy),
    "media": (MediaUploaded, Media),
}
_DELETES: dict[str, type[ProductDeleted | ArticleDeleted | WarrantyPolicyDeleted]] = {
    "products": ProductDeleted,
    "articles": ArticleDeleted,
    "warranty_policies": WarrantyPolicyDeleted,
}


@dataclass
class PublishReport:
    """Deliveries confirmed by the broker, and the failures (event key, error)."""

    delivered: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


class Publisher:
    """An idempotent producer of crossroute events.

    Args:
        config: confluent-kafka config (bootstrap servers, security) for the cluster.
        topics: topic names.
    """

    def __init__(self, config: dict[str, Any], topics: TopicSettings) -> None:
        self.topics = topics
        self._producer = Producer(
            {
                **config,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 20,
                "compression.type": "lz4",
                "message.max.bytes": MAX_RECORD_BYTES,
            }
        )

    def publish(
        self,
        events: Iterable[AnyEvent],
        progress: Callable[[int], None] | None = None,
        timeout_s: float = 60,
    ) -> PublishReport:
        """Produce ``events`` in order and wait until the broker confirmed (or refused) each."""
        report = PublishReport()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                report.delivered += 1
            else:
                key = msg.key()
                report.failed.append((key.decode() if key else "", str(err)))

        sent = 0
        for event in events:
            while True:
                try:
                    self._producer.produce(
                        self.topics.name(topic_role(event)),
                        key=event.key,
                        value=encode_event(event),
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:  # local queue full: serve delivery reports, then retry
                    self._producer.poll(0.5)
            sent += 1
            self._producer.poll(0)
            if progress is not None:
                progress(sent)
        remaining = self._producer.flush(timeout_s)
        if remaining:
            report.failed.append(("", f"{remaining} message(s) not confirmed within {timeout_s}s"))
        return report


def _version(row: dict[str, Any], default: int, where: str) -> int:
    value = row.pop("source_version", default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigurationError(f"{where}: source_version must be a non-negative integer")
    return value


def _inline(ref: dict[str, Any] | None, base: Path, where: str) -> dict[str, Any] | None:
    """Replace an image ``uri`` that is a local path by the file's bytes (base64)."""
    if not ref or "uri" not in ref or "://" in str(ref["uri"]):
        return ref
    path = base / str(ref["uri"])
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigurationError(f"{where}: cannot read image {path}: {e.strerror or e}") from e
    return {"data": base64.b64encode(data).decode()}


def read_events(
    kind: str, path: Path, *, version: int, delete: bool = False, inline_images: bool = False
) -> Iterator[AnyEvent]:
    """The events of a JSONL file of ``kind`` documents (one per line; blank lines skipped).

    A line may carry ``source_version`` (else ``version``). With ``delete``, lines are
    ``{"tenant", "id", "source_version"?}`` and become deletions. With ``inline_images``, image paths
    (relative to the file) are read and sent as bytes.

    ``kind`` is one of :data:`KINDS` (or an alias in :data:`KIND_ALIASES`).

    Raises:
        ConfigurationError: unknown kind, unreadable file, or an invalid line (file:line and why).
    """
    kind = KIND_ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise ConfigurationError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if delete and kind not in COMPACTED_ROLES:
        raise ConfigurationError(f"--delete applies to {', '.join(COMPACTED_ROLES)}, not {kind}")
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigurationError(f"cannot read {path}: {e.strerror or e}") from e
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ConfigurationError(f"{where}: expected a JSON object")
            yield _event(kind, row, where, version, delete, inline_images, path.parent)
        except ValueError as e:  # JSON and validation errors (ValidationError is a ValueError)
            detail = (
                "; ".join(
                    f"{'.'.join(str(x) for x in err['loc']) or '<root>'}: {err['msg']}"
                    for err in e.errors(include_url=False)[:5]
                )
                if isinstance(e, ValidationError)
                else str(e)
            )
            raise ConfigurationError(f"{where}: {detail}") from e


def _event(
    kind: str,
    row: dict[str, Any],
    where: str,
    version: int,
    delete: bool,
    inline_images: bool,
    base: Path,
) -> AnyEvent:
    if kind == "feedback":
        return FeedbackRecorded.model_validate(row)
    if kind == "tickets":
        if inline_images:
            for name in ("photo", "screenshot"):
                row[name] = _inline(row.get(name), base, where)
        return TicketCreated(ticket=Ticket.model_validate(row))
    v = _version(row, version, where)
    if delete:
        fields = {"tenant_id": row.get("tenant"), "id": row.get("id"), "source_version": v}
        return _DELETES[kind].model_validate(fields)
    if inline_images and kind in IMAGE_ROLES:
        row["image"] = _inline(row.get("image"), base, where)
    event, document = _UPSERTS[kind]
    return event.of(document.model_validate(row), source_version=v)
