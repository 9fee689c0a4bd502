"""What the compacted entity topics say the index should hold (for ``crossroute gate``).

:func:`topic_census` reads every entity topic from its first offset to its end (assigned, no
consumer group, nothing committed) and keeps each entity's newest event: an upsert means the
entity is live and must be indexed, a delete that it must not be. Events the live worker could
not index went to the dead letters with their source coordinates; an entity whose newest event is
among them is left out of the comparison (``None``), as are events that do not decode (the
worker dead-letters those too).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streams.events import EntityDeleted, EntityUpserted, decode_event
from streams.exceptions import EventDecodeError
from streams.pipeline import RawMessage
from streams.settings import WorkerSettings

__all__ = ["topic_census"]

Coord = tuple[str, int, int]


def _read_all(
    settings: WorkerSettings, topics: Iterable[str], timeout_s: float
) -> Iterable[tuple[Coord, bytes, list[tuple[str, bytes | None]]]]:
    """Every message of ``topics`` up to their end offsets at the start of the read."""
    from streams.connections import kafka_config

    options = {"group.id": "crossroute-census", "enable.auto.commit": False,
               "auto.offset.reset": "earliest"}  # fmt: skip
    consumer = Consumer(kafka_config(settings, **options))
    try:
        listed = consumer.list_topics(timeout=15).topics
        ends: dict[tuple[str, int], int] = {}
        assign = []
        for topic in topics:
            if topic not in listed:
                continue
            for p in sorted(listed[topic].partitions):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=30, cached=False
                )
                if high > low:
                    ends[(topic, p)] = high
                    assign.append(TopicPartition(topic, p, low))
        consumer.assign(assign)
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"census: topics not read to their end in {timeout_s:.0f} s")
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                if (err := msg.error()) is not None:
                    raise KafkaException(err)
                raw = RawMessage.of_confluent(msg)
                yield (raw.topic, raw.partition, raw.offset), raw.value, list(raw.headers)
                topic, part, offset = raw.topic, raw.partition, raw.offset
                if offset + 1 >= ends.get((topic, part), 0):
                    ends.pop((topic, part), None)
    finally:
        consumer.close()


def topic_census(
    settings: WorkerSettings, *, timeout_s: float = 300.0
) -> dict[tuple[str, str], bool | None]:
    """``(tenant, entity_id) → live`` per the newest event of each entity in the entity topics:
    True (must be indexed), False (deleted), None (its newest event was dead-lettered: not judged)."""
    from streams.topics import ENTITY_ROLES

    t = settings.topics
    newest: dict[tuple[str, str], tuple[Coord, bool]] = {}
    for coord, value, _ in _read_all(settings, [t.name(r) for r in ENTITY_ROLES], timeout_s):
        try:
            event = decode_event(value)
        except EventDecodeError:
            continue
        if isinstance(event, EntityUpserted | EntityDeleted):
            newest[(event.tenant, event.entity_id)] = (coord, isinstance(event, EntityUpserted))
    dead: set[Coord] = set()
    for _, _, headers in _read_all(settings, [t.name("dead_letters")], timeout_s):
        h = {k: (v or b"").decode("utf-8", "replace") for k, v in headers}
        try:
            dead.add(
                (h["crossroute.source.topic"], int(h["crossroute.source.partition"]),
                 int(h["crossroute.source.offset"]))
            )  # fmt: skip
        except (KeyError, ValueError):
            continue
    return {key: (None if coord in dead else live) for key, (coord, live) in newest.items()}
