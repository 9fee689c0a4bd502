"""Kafka ACLs on a real broker that authorizes requests (KRaft StandardAuthorizer): a SASL/SCRAM user
without ACLs is refused, the worker's user granted by ``crossroute topics acl --apply`` (its topic
prefix and group only) declares its topics, indexes what is published and routes a ticket."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import KafkaError, Producer
from pydantic import SecretStr

from router.settings import RedisSettings
from streams.devstack import DevStack
from streams.producer import Publisher
from streams.settings import KafkaSettings, StackSettings
from tests.integration.conftest import free_port, running
from tests.integration.streams.test_sasl import sasl_env
from tests.integration.streams.test_worker import (
    WorkerEnv,
    consume,
    indexes_and_routes,
    wait_for,
)
from tests.unit.test_cli import run_cli

WORKER, INTRUDER = "crossroute-worker", "intruder"
PASSWORD = SecretStr(f"scram-{uuid.uuid4().hex}")


@pytest.fixture(scope="module")
def acl_broker(
    dev_stack: DevStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DevStack, KafkaSettings, KafkaSettings]]:
    """A broker with a SASL listener and the authorizer on; the worker's and an intruder's users."""
    settings = StackSettings(
        state_dir=tmp_path_factory.mktemp("acl-stack"),
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        kafka_sasl_port=free_port(),
        kafka_acls=True,
        redis_port=free_port(),
        start_timeout_s=120,
    )
    session_redis = RedisSettings(url=SecretStr(dev_stack.redis_url()))
    with running(DevStack(settings, KafkaSettings(), session_redis)) as broker:
        yield (
            broker,
            broker.add_scram_user(WORKER, PASSWORD),
            broker.add_scram_user(INTRUDER, PASSWORD),
        )


def test_only_granted_users_reach_the_topics_and_the_worker_works(
    acl_broker: tuple[DevStack, KafkaSettings, KafkaSettings],
    dev_stack: DevStack,
    default_bundle: Path,
    tmp_path: Path,
    redis_client: redis.Redis,
    embedder: Any,
) -> None:
    broker, worker_kafka, intruder_kafka = acl_broker
    clients = DevStack(StackSettings(state_dir=tmp_path / "clients"), worker_kafka,
                       RedisSettings(url=SecretStr(dev_stack.redis_url())))  # fmt: skip
    env = WorkerEnv(clients, default_bundle, tmp_path)
    env.env.update(sasl_env(worker_kafka, PASSWORD.get_secret_value()))
    try:
        # the operator grants the worker's user its prefix and group, over the admin listener
        grant = run_cli("topics", "acl", WORKER, "--apply", env={
            "KAFKA_BOOTSTRAP_SERVERS": broker.kafka_bootstrap(),
            "CROSSROUTE_TOPICS__PREFIX": env.topics.prefix,
            "CROSSROUTE_WORKER__GROUP_ID": env.env["CROSSROUTE_WORKER__GROUP_ID"],
            "CROSSROUTE_STACK__STATE_DIR": str(tmp_path / "state"),
        }, timeout=120)  # fmt: skip
        assert grant.returncode == 0, grant.stderr
        assert f"ALLOW User:{WORKER} READ TOPIC PREFIXED '{env.topics.prefix}'" in grant.stdout
        assert "created 7 ACLs" in grant.stderr

        # (an idempotent producer made before the grant failed for good: make the publisher now)
        env.publisher = Publisher(env.stack.kafka_config(), env.topics)
        env.start()
        group = env.env["CROSSROUTE_WORKER__GROUP_ID"]
        wait_for(
            lambda: f"worker {group}:" in env.log(), "the worker declared its topics", 180, env
        )
        index = env.index(redis_client, embedder)
        indexes_and_routes(env, index, 180)

        # the intruder authenticates, but may neither write nor read the deployment's topics
        errors: list[Any] = []
        intruder = Producer(intruder_kafka.as_librdkafka(
            intruder_kafka.bootstrap_servers, **{"message.timeout.ms": 10_000}))  # fmt: skip
        intruder.produce(env.topics.name("articles"), b"{}", b"k",
                         on_delivery=lambda err, _: errors.append(err))  # fmt: skip
        intruder.flush(30)
        assert errors and errors[0] is not None
        assert errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, errors[0]
        intruder_clients = DevStack(StackSettings(state_dir=tmp_path / "intruder"), intruder_kafka,
                                    RedisSettings(url=SecretStr(dev_stack.redis_url())))  # fmt: skip
        assert consume(intruder_clients, env.topics.name("tickets"), 1, timeout=5) == []
        assert index.count("acme") == 5
    finally:
        env.stop()
