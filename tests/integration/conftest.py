"""Integration fixtures: the real Apache Kafka broker and the real Redis Stack server.

Services: started once per session through :meth:`DevStack.up` (the code behind
``crossroute stack up``) in a temporary state dir on free loopback ports, and stopped with
:meth:`DevStack.down` at the end. Set ``KAFKA_BOOTSTRAP_SERVERS`` / ``REDIS_URL`` to use external ones.

Run: ``.venv/bin/python -m pytest tests/integration``. Without the services (no Java, no network for
the first jar download) the tests are skipped with the reason, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka.admin import AdminClient, NewTopic

from models.embedder import Embedder
from models.exceptions import CrossrouteError
from router.settings import RedisSettings
from streams.devstack import DevStack
from streams.settings import KafkaSettings, StackSettings
from tests.conftest import EXTERNAL_ENV, IN_CI

INTEGRATION = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/integration carries the ``integration`` marker, so ``-m "not
    integration"`` selects the unit tests exactly (a module cannot forget it)."""
    for item in items:
        if item.path.is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.integration)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """The running dev stack for the whole session."""
    stack_settings = StackSettings(
        state_dir=tmp_path_factory.mktemp("stack"),
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        redis_port=free_port(),
        redis_tls_port=free_port(),
        start_timeout_s=120,
    )
    from pydantic import SecretStr

    kafka = KafkaSettings(bootstrap_servers=EXTERNAL_ENV.get("KAFKA_BOOTSTRAP_SERVERS"))
    redis_url = EXTERNAL_ENV.get("REDIS_URL")
    redis_settings = RedisSettings(url=SecretStr(redis_url) if redis_url else None)
    with running(DevStack(stack_settings, kafka, redis_settings)) as stack:
        yield stack


@contextmanager
def running(stack: DevStack) -> Iterator[DevStack]:
    """Bring the stack up (skip the test when it cannot start, fail under CI) and down after."""
    try:
        stack.up()
    except CrossrouteError as e:
        stack.down()
        message = f"dev stack unavailable: {e}"
        if IN_CI:
            pytest.fail(message + " (CI=true: integration services are required)")
        pytest.skip(message)
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def default_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default bundle (real pretrained encoders + the shipped head), built once per session
    (about 30 s)."""
    from models.config import load_spec
    from models.export.build import build_bundle

    out = tmp_path_factory.mktemp("bundles") / "default"
    build_bundle(load_spec("default"), out)
    return out


@pytest.fixture(scope="session")
def naive_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untrained bundle (``--config naive``: the same encoders, raw features, no head): the base
    that training starts from, and the encoders' own outputs for parity tests."""
    from models.config import load_spec
    from models.export.build import build_bundle

    out = tmp_path_factory.mktemp("bundles") / "naive"
    build_bundle(load_spec("naive"), out)
    return out


@pytest.fixture(scope="session")
def naive_embedder(naive_bundle: Path) -> Embedder:
    """The serving embedder of the untrained bundle (CPU)."""
    return Embedder.load(naive_bundle, providers="cpu")


@pytest.fixture(scope="session")
def embedder(default_bundle: Path) -> Embedder:
    """The serving embedder of the default bundle (CPU)."""
    return Embedder.load(default_bundle, providers="cpu")


@pytest.fixture
def kafka_config(dev_stack: DevStack) -> Callable[..., dict[str, Any]]:
    """Build a confluent-kafka config for the session broker."""
    return dev_stack.kafka_config


@pytest.fixture
def topic_factory(dev_stack: DevStack) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics through the admin API; delete them after the test."""
    admin = AdminClient(dev_stack.kafka_config())
    created: list[str] = []

    def create(partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})]
        )
        futures[name].result(timeout=30)
        created.append(name)
        return name

    yield create
    if created:
        for future in admin.delete_topics(created).values():
            future.result(timeout=30)


@pytest.fixture
def redis_client(dev_stack: DevStack) -> Iterator[redis.Redis]:
    """A client of the session Redis (bytes responses)."""
    client = redis.Redis.from_url(dev_stack.redis_url())
    yield client
    client.close()


def report_rows(
    rows: list[dict[str, Any]], cols: tuple[str, ...], env_var: str, meta: dict[str, Any]
) -> None:
    """Print a measured table (markdown) and, when ``env_var`` names a file, write it there as
    JSON with ``meta`` (how bench/*.json files of test modules are made)."""
    if not rows:
        return
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    lines += [" | ".join(str(r[c]) for c in cols) for r in rows]
    print("\n" + "\n".join(lines))
    out = os.environ.get(env_var)
    if out:
        Path(out).write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
