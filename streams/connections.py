"""Where the worker's services are, from configuration: the one place Kafka endpoints are resolved.

Kafka is ``CROSSROUTE_KAFKA__BOOTSTRAP_SERVERS`` / ``KAFKA_BOOTSTRAP_SERVERS`` when set, Redis is
``CROSSROUTE_REDIS__URL`` / ``REDIS_URL`` when set (:func:`router.connection.redis_url`); a service
left unset is the embedded dev stack's, on 127.0.0.1 at the ports of ``CROSSROUTE_STACK__*``.
Resolving an endpoint never starts or touches the dev stack: only :func:`start_dev_stack` does, and
only for services that are not configured. ``DevStack`` resolves its endpoints here too.
"""

from __future__ import annotations

from typing import Any

from models.progress import Progress, no_progress
from router.connection import redis_client, redis_url
from streams.settings import KafkaSettings, StackSettings, WorkerSettings

__all__ = [
    "dev_services",
    "kafka_bootstrap",
    "kafka_config",
    "redis_client",
    "redis_url",
    "start_dev_stack",
]


def kafka_bootstrap(kafka: KafkaSettings, stack: StackSettings) -> str:
    """The bootstrap servers: configured, else the dev stack's broker."""
    if kafka.bootstrap_servers is not None:
        return kafka.bootstrap_servers
    return f"{stack.host}:{stack.kafka_port}"


def kafka_config(settings: WorkerSettings, **extra: Any) -> dict[str, Any]:
    """A confluent-kafka config (admin, producer, consumer) for the configured broker, with the
    security settings; ``extra`` adds librdkafka keys (``**{"group.id": …}``)."""
    return settings.kafka.as_librdkafka(kafka_bootstrap(settings.kafka, settings.stack), **extra)


def dev_services(settings: WorkerSettings) -> list[str]:
    """The services the dev stack provides because no external one is configured."""
    services = []
    if settings.kafka.bootstrap_servers is None:
        services.append("kafka")
    if settings.redis.url is None:
        services.append("redis")
    return services


def start_dev_stack(settings: WorkerSettings, progress: Progress = no_progress) -> bool:
    """Start the dev stack's services that are not running, if any service is not configured
    (external ones are only checked for reachability). Returns whether the dev stack is used; with
    Kafka and Redis both configured it is not, and nothing here touches it."""
    if not dev_services(settings):
        return False
    from streams.devstack import DevStack

    DevStack.from_settings(settings, progress=progress).up()
    return True
