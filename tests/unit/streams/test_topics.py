"""ensure_topics against a broker whose metadata lags behind its controller (a fake admin client:
the real broker's lag is a race the integration tests can only hit by chance)."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaException

from streams.exceptions import ConfigurationError
from streams.settings import TopicSettings
from streams.topics import ensure_topics, topic_specs


class LaggingAdmin:
    """Every declared topic exists; the first ``lag`` metadata listings do not show them yet."""

    def __init__(self, names: list[str], lag: int, policy: str = "compact") -> None:
        self.names, self.lag, self.listings, self.policy = names, lag, 0, policy

    def list_topics(self, timeout: float) -> Any:
        self.listings += 1
        visible = self.names if self.listings > self.lag else []
        partitions = {0: None, 1: None, 2: None}
        return SimpleNamespace(topics={n: SimpleNamespace(partitions=partitions) for n in visible})

    def create_topics(self, topics: list[Any], operation_timeout: float) -> dict[str, Future[None]]:
        futures: dict[str, Future[None]] = {}
        for t in topics:
            future: Future[None] = Future()
            future.set_exception(KafkaException(f"TOPIC_ALREADY_EXISTS: {t.topic}"))
            futures[t.topic] = future
        return futures

    def describe_configs(self, resources: list[Any]) -> dict[Any, Future[dict[str, Any]]]:
        out: dict[Any, Future[dict[str, Any]]] = {}
        for r in resources:
            future: Future[dict[str, Any]] = Future()
            compacted = r.name.endswith(("products", "articles", "warranty-policies"))
            value = self.policy if compacted else "delete"
            future.set_result({"cleanup.policy": SimpleNamespace(value=value)})
            out[r] = future
        return out


def test_topics_created_elsewhere_are_waited_for_not_reported() -> None:
    specs = topic_specs(TopicSettings(prefix="t."))
    admin = LaggingAdmin([s.name for s in specs], lag=3)
    report = ensure_topics(admin, specs, timeout_s=5)  # type: ignore[arg-type]
    assert report.created == [] and report.existing == sorted(s.name for s in specs)
    assert admin.listings == 4


def test_a_contradiction_is_still_found_after_the_wait() -> None:
    specs = topic_specs(TopicSettings(prefix="t."))
    admin = LaggingAdmin([s.name for s in specs], lag=2, policy="delete")
    with pytest.raises(ConfigurationError, match="t.products has cleanup.policy=delete"):
        ensure_topics(admin, specs, timeout_s=5)  # type: ignore[arg-type]


def test_a_topic_that_never_shows_is_reported_after_the_timeout() -> None:
    specs = topic_specs(TopicSettings(prefix="t."))
    admin = LaggingAdmin([s.name for s in specs], lag=10**9)
    with pytest.raises(ConfigurationError, match="not visible in the cluster metadata"):
        ensure_topics(admin, specs, timeout_s=0.3)  # type: ignore[arg-type]


def test_acls_are_the_least_each_role_needs() -> None:
    import pytest
    from confluent_kafka.admin import AclOperation, ResourceType  # type: ignore[attr-defined]

    from streams.acls import acl_bindings, describe_acls

    worker = acl_bindings("w", "worker", "shop.", "shop-worker")
    assert {(b.restype, b.name) for b in worker} == {
        (ResourceType.TOPIC, "shop."), (ResourceType.GROUP, "shop-worker")}  # fmt: skip
    assert all(b.principal == "User:w" and b.host == "*" for b in worker)
    publisher = acl_bindings("p", "publisher", "shop.", "shop-worker")
    assert {b.operation for b in publisher} == {AclOperation.WRITE, AclOperation.DESCRIBE}
    assert all(b.restype == ResourceType.TOPIC for b in publisher)  # no group: cannot consume
    assert describe_acls("p", "publisher", "shop.", "g") == [
        "ALLOW User:p WRITE TOPIC PREFIXED 'shop.'", "ALLOW User:p DESCRIBE TOPIC PREFIXED 'shop.'"]  # fmt: skip
    # the API publishes answers and reads the dead letters, nothing else, with no group
    assert describe_acls("a", "api", "shop.", "g", "shop.dlq") == [
        "ALLOW User:a WRITE TOPIC PREFIXED 'shop.'", "ALLOW User:a DESCRIBE TOPIC PREFIXED 'shop.'",
        "ALLOW User:a READ TOPIC PREFIXED 'shop.dlq'"]  # fmt: skip
    assert acl_bindings("a", "api", "shop.", "g")[-1].name == "shop.dead_letters"
    with pytest.raises(ValueError, match="every topic"):
        acl_bindings("w", "worker", "", "g")
