"""Endpoints come from configuration; the dev stack is started only for services not configured."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

import streams.devstack
from router.settings import DevStackEndpoints, RedisSettings, RouterSettings
from streams.connections import (
    dev_services,
    kafka_bootstrap,
    kafka_config,
    redis_url,
    start_dev_stack,
)
from streams.settings import KafkaSettings, StackSettings, WorkerSettings


def _settings(kafka: str | None = None, redis: str | None = None) -> WorkerSettings:
    return WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers=kafka),
        redis=RedisSettings(url=SecretStr(redis) if redis else None),
        stack=StackSettings(kafka_port=19092, kafka_controller_port=19093, redis_port=16379),
    )


def test_configured_endpoints_win() -> None:
    s = _settings("broker-1:9092,broker-2:9092", "redis://:pw@cache:6380/2")
    assert kafka_bootstrap(s.kafka, s.stack) == "broker-1:9092,broker-2:9092"
    assert (
        kafka_config(s, **{"group.id": "g"})["bootstrap.servers"] == "broker-1:9092,broker-2:9092"
    )
    assert kafka_config(s, **{"group.id": "g"})["group.id"] == "g"
    assert redis_url(s.redis, s.stack) == "redis://:pw@cache:6380/2"
    assert dev_services(s) == []


def test_unset_endpoints_are_the_dev_stacks_ports() -> None:
    s = _settings()
    assert kafka_bootstrap(s.kafka, s.stack) == "127.0.0.1:19092"
    assert redis_url(s.redis, s.stack) == "redis://127.0.0.1:16379/0"
    assert dev_services(s) == ["kafka", "redis"]
    assert dev_services(_settings(kafka="k:9092")) == ["redis"]


def test_router_processes_find_the_dev_stack_where_the_worker_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without REDIS_URL, a router process (RouterSettings) reads the dev stack's Redis endpoint
    from the same CROSSROUTE_STACK__* names as the worker, ignoring the stack's other fields."""
    monkeypatch.setenv("CROSSROUTE_STACK__REDIS_PORT", "16380")
    monkeypatch.setenv("CROSSROUTE_STACK__KAFKA_PORT", "19095")  # not the router's concern
    router, worker = RouterSettings(), WorkerSettings()
    assert redis_url(router.redis, router.stack) == "redis://127.0.0.1:16380/0"
    assert redis_url(worker.redis, worker.stack) == "redis://127.0.0.1:16380/0"
    assert isinstance(worker.stack, DevStackEndpoints)


class _Refused:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("DevStack touched although Kafka and Redis are both configured")

    @classmethod
    def from_settings(cls, *args: object, **kwargs: object) -> None:
        cls()


def test_external_services_never_touch_the_dev_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams.devstack, "DevStack", _Refused)
    assert start_dev_stack(_settings("k:9092", "redis://r:6379/0")) is False


def test_a_missing_service_starts_the_dev_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[WorkerSettings] = []

    class Stack:
        def __init__(self, settings: WorkerSettings) -> None:
            self.settings = settings

        @classmethod
        def from_settings(cls, settings: WorkerSettings, **_: object) -> Stack:
            return cls(settings)

        def up(self) -> None:
            started.append(self.settings)

    monkeypatch.setattr(streams.devstack, "DevStack", Stack)
    settings = _settings(kafka="k:9092")
    assert start_dev_stack(settings) is True
    assert started == [settings]
