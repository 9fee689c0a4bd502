"""Endpoints come from configuration; the dev stack is started only for services not configured."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

import streams.devstack
from router.connection import DEV_REDIS_URL
from router.settings import RedisSettings
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
    assert kafka_bootstrap(s) == "broker-1:9092,broker-2:9092"
    assert (
        kafka_config(s, **{"group.id": "g"})["bootstrap.servers"] == "broker-1:9092,broker-2:9092"
    )
    assert kafka_config(s, **{"group.id": "g"})["group.id"] == "g"
    assert redis_url(s) == "redis://:pw@cache:6380/2"
    assert dev_services(s) == []


def test_unset_endpoints_are_the_dev_stacks_ports() -> None:
    s = _settings()
    assert kafka_bootstrap(s) == "127.0.0.1:19092"
    assert redis_url(s) == "redis://127.0.0.1:16379/0"
    assert dev_services(s) == ["kafka", "redis"]
    assert dev_services(_settings(kafka="k:9092")) == ["redis"]


def test_router_default_matches_the_dev_stack_default() -> None:
    """A router process without REDIS_URL finds the dev stack at its default port."""
    assert DEV_REDIS_URL == f"redis://127.0.0.1:{StackSettings().redis_port}/0"


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
