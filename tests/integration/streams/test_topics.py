"""Topics on the real broker: created with explicit configs, idempotent, contradictions refused."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from streams.devstack import DevStack
from streams.exceptions import ConfigurationError
from streams.settings import TopicSettings
from streams.topics import ensure_topics, topic_specs
from tests.unit.test_cli import run_cli


@pytest.fixture
def settings(kafka_config: Callable[..., dict[str, Any]]) -> Iterator[TopicSettings]:
    topics = TopicSettings(prefix=f"t{uuid.uuid4().hex[:8]}.", partitions=2)
    yield topics
    admin = AdminClient(kafka_config())
    names = [s.name for s in topic_specs(topics)]
    existing = set(admin.list_topics(timeout=30).topics)
    doomed = [n for n in names if n in existing]
    if doomed:
        for future in admin.delete_topics(doomed).values():
            future.result(timeout=30)


def test_topics_are_created_with_their_configs(
    kafka_config: Callable[..., dict[str, Any]], settings: TopicSettings
) -> None:
    admin = AdminClient(kafka_config())
    specs = topic_specs(settings)
    first = ensure_topics(admin, specs)
    assert sorted(first.created) == sorted(s.name for s in specs) and first.existing == []
    again = ensure_topics(admin, specs)
    assert again.created == [] and len(again.existing) == len(specs)
    metadata = admin.list_topics(timeout=30)
    resources = {s.name: ConfigResource(ResourceType.TOPIC, s.name) for s in specs}
    configs = admin.describe_configs(list(resources.values()))
    for spec in specs:
        assert len(metadata.topics[spec.name].partitions) == 2
        entries = configs[resources[spec.name]].result(timeout=30)
        expected = (
            "compact" if spec.role in ("products", "articles", "warranty_policies") else "delete"
        )
        assert entries["cleanup.policy"].value == expected, spec.name


def test_a_contradicting_topic_is_refused(
    kafka_config: Callable[..., dict[str, Any]], settings: TopicSettings
) -> None:
    admin = AdminClient(kafka_config())
    name = settings.name("products")  # declared compacted: create it as a plain delete topic
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)
    with pytest.raises(ConfigurationError) as err:
        ensure_topics(admin, topic_specs(settings))
    assert "cleanup.policy=delete, declared compact" in str(err.value)
    assert "1 partitions, declared 2" in str(err.value)


def test_topics_ensure_from_the_cli(dev_stack: DevStack, settings: TopicSettings) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": dev_stack.kafka_bootstrap(),
        "CROSSROUTE_TOPICS__PREFIX": settings.prefix,
        "CROSSROUTE_TOPICS__PARTITIONS": "2",
    }
    out = run_cli("topics", "ensure", env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("created") == 9 and "cleanup.policy=compact" in out.stdout
    again = run_cli("topics", "ensure", env=env, timeout=120)
    assert again.returncode == 0 and "created" not in again.stdout
