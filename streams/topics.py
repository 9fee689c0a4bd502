"""Topics, created and checked through the Kafka admin API with explicit configs.

Every topic crossroute uses is declared here (name and partitions from :class:`TopicSettings`), and
which topic each event type belongs on (:data:`EVENT_ROLES`, :func:`topic_role`: the publisher
writes there and the worker refuses an event read anywhere else). Entity topics are compacted (the
latest event per ``tenant/id`` key is kept forever: a reindex replays them), streams of tickets,
decisions, feedback and dead letters are time-retained. ``ensure_topics`` creates what is missing
and refuses to run against a topic whose configuration contradicts the declaration (fewer
partitions, another cleanup policy) instead of silently using it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from streams import events as ev
from streams.exceptions import ConfigurationError, ServiceUnavailableError
from streams.settings import TopicSettings

__all__ = [
    "COMPACTED_ROLES",
    "ENTITY_ROLES",
    "EVENT_ROLES",
    "IMAGE_ROLES",
    "MAX_MESSAGE_BYTES",
    "MAX_RECORD_BYTES",
    "ROLES",
    "TopicSpec",
    "TopicsReport",
    "ensure_topics",
    "topic_role",
    "topic_specs",
]

COMPACTED_ROLES = ("products", "articles", "warranty_policies")
"""Topics of the entities that can be deleted: the latest event per key is kept forever."""
ENTITY_ROLES = (*COMPACTED_ROLES, "media")
"""Topics of the events that carry a document to index (what ``crossroute publish`` calls kinds)."""
IMAGE_ROLES = ("products", "media", "tickets", "dead_letters")
"""Topics whose events may carry inline images (and dead letters, which carry the original bytes)."""
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest event: an inline image of :data:`~router.schemas.MAX_INLINE_IMAGE_BYTES` is ~11 MiB of
base64 JSON."""
MAX_RECORD_BYTES = MAX_MESSAGE_BYTES + 64 * 1024
"""``max.message.bytes`` of the image topics and of every producer (and the most a consumer must
fetch): the largest event plus room for the key, the headers and the record batch framing."""
ROLES = (
    *COMPACTED_ROLES,
    "media",
    "tickets",
    "decisions",
    "human_queue",
    "feedback",
    "dead_letters",
)

EVENT_ROLES: Mapping[type[ev.AnyEvent], str] = {
    ev.ProductUpserted: "products", ev.ProductDeleted: "products",
    ev.ArticleUpserted: "articles", ev.ArticleDeleted: "articles",
    ev.WarrantyPolicyUpserted: "warranty_policies", ev.WarrantyPolicyDeleted: "warranty_policies",
    ev.MediaUploaded: "media", ev.TicketCreated: "tickets", ev.RoutingDecided: "decisions",
    ev.FeedbackRecorded: "feedback",
}  # fmt: skip
"""The topic role (a :class:`TopicSettings` field) every event type belongs on."""


def topic_role(event: ev.AnyEvent) -> str:
    """The topic role (``TopicSettings`` field) an event belongs on."""
    return EVENT_ROLES[type(event)]


@dataclass(frozen=True)
class TopicSpec:
    """One declared topic."""

    role: str
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass
class TopicsReport:
    """What :func:`ensure_topics` found and did."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def topic_specs(settings: TopicSettings) -> list[TopicSpec]:
    """The declared topics."""
    specs = []
    for role in ROLES:
        if role in COMPACTED_ROLES:
            config = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
        else:
            config = {"cleanup.policy": "delete", "retention.ms": str(settings.retention_ms)}
        if role in IMAGE_ROLES:  # inline images: up to ~11 MiB of base64 JSON
            config["max.message.bytes"] = str(MAX_RECORD_BYTES)
        specs.append(
            TopicSpec(
                role=role,
                name=settings.name(role),
                partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                config=config,
            )
        )
    return specs


def _metadata_listing(admin: AdminClient, names: list[str], timeout_s: float) -> Any:
    """Cluster metadata once it lists every topic of ``names`` (they exist: the broker said so when
    asked to create them), or the last metadata after ``timeout_s``.

    A topic another client has just created is known to the controller before the broker's
    metadata cache lists it (KRaft propagates it asynchronously), so one listing may miss it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=timeout_s)
        if all(name in metadata.topics for name in names) or time.monotonic() >= deadline:
            return metadata
        time.sleep(0.1)


def ensure_topics(
    admin: AdminClient, specs: list[TopicSpec], timeout_s: float = 30
) -> TopicsReport:
    """Create missing topics with their configs; check existing ones against the declaration.

    Raises:
        ServiceUnavailableError: the broker cannot be reached.
        ConfigurationError: an existing topic contradicts its declaration (lists every problem).
    """
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as e:
        raise ServiceUnavailableError(f"cannot list Kafka topics: {e}") from e
    report = TopicsReport()
    missing = [s for s in specs if s.name not in metadata.topics]
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(s.name, num_partitions=s.partitions,
                         replication_factor=s.replication_factor, config=s.config)
                for s in missing
            ],
            operation_timeout=timeout_s,
        )  # fmt: skip
        for name, future in futures.items():
            try:
                future.result(timeout=timeout_s)
                report.created.append(name)
            except KafkaException as e:
                if "TOPIC_ALREADY_EXISTS" not in str(e):  # a concurrent worker created it
                    raise ConfigurationError(f"cannot create topic {name}: {e}") from e
                report.existing.append(name)
    problems = []
    if report.existing:  # created concurrently (or not yet in the first metadata): check them too
        metadata = _metadata_listing(admin, report.existing, timeout_s)
    present = [s for s in specs if s.name not in report.created]
    report.existing = []
    for spec in present:
        report.existing.append(spec.name)
        if spec.name not in metadata.topics:
            problems.append(f"{spec.name} is not visible in the cluster metadata")
            continue
        partitions = len(metadata.topics[spec.name].partitions)
        if partitions < spec.partitions:
            problems.append(f"{spec.name} has {partitions} partitions, declared {spec.partitions}")
    present = [s for s in present if s.name in metadata.topics]
    if present:
        resources = [ConfigResource(ResourceType.TOPIC, s.name) for s in present]
        described = admin.describe_configs(resources)
        for spec, resource in zip(present, resources, strict=True):
            entries = described[resource].result(timeout=timeout_s)
            policy = entries["cleanup.policy"].value if "cleanup.policy" in entries else "delete"
            if policy != spec.config["cleanup.policy"]:
                problems.append(
                    f"{spec.name} has cleanup.policy={policy}, declared "
                    f"{spec.config['cleanup.policy']}"
                )
    if problems:
        raise ConfigurationError(
            "existing topics contradict their declaration: "
            + "; ".join(problems)
            + " (fix them with kafka-configs/kafka-topics, or use other names via CROSSROUTE_TOPICS__*)"
        )
    report.created.sort()
    report.existing.sort()
    return report
