"""Kafka round trip on the real broker: admin-created topic, idempotent produce, group consume,
commit, and resume from the committed offsets after the consumer *and* the broker restarted."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from router.schemas import Product
from streams.devstack import DevStack
from streams.events import ProductUpserted, decode_event, encode_event


def _consume(consumer: Consumer, n: int, timeout_s: float = 60) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        got.append(msg)
    return got


def test_topic_created_with_explicit_config(
    dev_stack: DevStack, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(partitions=3, config={"cleanup.policy": "compact"})
    admin = AdminClient(dev_stack.kafka_config())
    meta = admin.list_topics(topic, timeout=10)
    assert len(meta.topics[topic].partitions) == 3
    resource = ConfigResource("topic", topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"


def test_produce_consume_commit_resume_after_restart(
    dev_stack: DevStack,
    topic_factory: Callable[..., str],
    kafka_config: Callable[..., dict[str, Any]],
) -> None:
    topic = topic_factory(partitions=3)
    events = [
        ProductUpserted(
            source_version=i,
            product=Product(id=f"sku-{i}", tenant="acme", title=f"Product {i}", category="shoes"),
        )
        for i in range(30)
    ]
    producer = Producer(kafka_config(**{"enable.idempotence": True, "acks": "all"}))
    delivered: list[str] = []

    def on_delivery(err: Any, msg: Message) -> None:
        assert err is None, err
        delivered.append(msg.key().decode())

    for event in events:
        producer.produce(topic, key=event.key, value=encode_event(event), on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert len(delivered) == 30

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer_conf = kafka_config(
        **{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    first = Consumer(consumer_conf)
    first.subscribe([topic])
    part1 = _consume(first, 12)
    assert len(part1) == 12
    first.commit(asynchronous=False)  # commits exactly what was consumed
    first.close()

    if not dev_stack.kafka_external:
        dev_stack.restart("kafka")  # committed offsets must survive a broker restart

    second = Consumer(consumer_conf)
    second.subscribe([topic])
    part2 = _consume(second, 18)
    # Nothing more may arrive: the first 12 must not be redelivered.
    extra = _consume(second, 1, timeout_s=3)
    second.close()

    ids1 = [decode_event(m.value()).entity_id for m in part1]
    ids2 = [decode_event(m.value()).entity_id for m in part2 + extra]
    assert not set(ids1) & set(ids2), "committed messages were delivered again"
    assert sorted(ids1 + ids2) == sorted(e.entity_id for e in events)
    # Keyed partitioning: every message of one key sits in one partition.
    by_key = {m.key(): m.partition() for m in part1 + part2}
    assert all(by_key[e.key] == by_key[e.key] for e in events)
