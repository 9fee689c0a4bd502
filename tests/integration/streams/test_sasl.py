"""The worker on a broker that requires SASL/SCRAM: a second real broker of the dev stack with a
SASL listener (SASL_PLAINTEXT with SCRAM-SHA-256, then SASL_SSL with SCRAM-SHA-512 and the stack's
own certificate; the user is created through the admin API), the worker configured only through
``CROSSROUTE_KAFKA__*`` — it indexes what is published over SASL and routes a ticket to the decisions
topic; a wrong password fails at once with an authentication error."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from router.schemas import Ticket, WarrantyPolicy
from router.settings import RedisSettings
from streams.devstack import DevStack
from streams.devstack.kafka import kafka_reachable
from streams.devstack.process import port_in_use
from streams.events import RoutingDecided, TicketCreated, WarrantyPolicyUpserted, decode_event
from streams.settings import KafkaSettings, StackSettings
from tests.integration.conftest import free_port, running
from tests.integration.streams.test_worker import WorkerEnv, articles, consume, wait_for
from tests.unit.test_cli import run_cli

USER = "crossroute-worker"
PASSWORD = SecretStr(f"scram-{uuid.uuid4().hex}")


@pytest.fixture(
    scope="module",
    params=[("SASL_PLAINTEXT", "SCRAM-SHA-256"), ("SASL_SSL", "SCRAM-SHA-512")],
    ids=lambda p: "-".join(p),
)
def scram_kafka(
    request: pytest.FixtureRequest, dev_stack: DevStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaSettings]:
    """Client settings of a broker started for this module with a SASL listener (of the param's
    protocol) and one SCRAM user; the broker is stopped (and its ports free) afterwards."""
    protocol, mechanism = request.param
    settings = StackSettings(
        state_dir=tmp_path_factory.mktemp("scram-stack"),
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        kafka_sasl_port=free_port(),
        kafka_sasl_tls=protocol == "SASL_SSL",
        redis_port=free_port(),
        start_timeout_s=120,
    )
    session_redis = RedisSettings(url=SecretStr(dev_stack.redis_url()))  # not started twice
    with running(DevStack(settings, KafkaSettings(), session_redis)) as broker:
        kafka = broker.add_scram_user(USER, PASSWORD, mechanism)
        assert kafka.security_protocol == protocol
        yield kafka
    assert settings.kafka_sasl_port is not None
    assert not port_in_use(settings.host, settings.kafka_sasl_port), "the broker was not stopped"


def sasl_env(kafka: KafkaSettings, password: str) -> dict[str, str]:
    """The worker's environment for the SASL listener: nothing but ``CROSSROUTE_KAFKA__*``."""
    assert kafka.bootstrap_servers is not None and kafka.sasl_mechanism is not None
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "CROSSROUTE_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "CROSSROUTE_KAFKA__SECURITY_PROTOCOL": kafka.security_protocol,
        "CROSSROUTE_KAFKA__SASL_MECHANISM": kafka.sasl_mechanism,
        "CROSSROUTE_KAFKA__SASL_USERNAME": USER,
        "CROSSROUTE_KAFKA__SASL_PASSWORD": password,
    }
    if kafka.ssl_ca_file is not None:  # the stack's own certificate (SASL_SSL)
        env["CROSSROUTE_KAFKA__SSL_CA_FILE"] = str(kafka.ssl_ca_file)
    return env


@pytest.fixture
def sasl_deployment(
    scram_kafka: KafkaSettings, dev_stack: DevStack, default_bundle: Path, tmp_path: Path
) -> Iterator[WorkerEnv]:
    """A worker deployment whose Kafka is the SCRAM broker: the worker, the test's publisher and
    consumers all connect over SASL."""
    clients = DevStack(
        StackSettings(state_dir=tmp_path / "clients"),
        scram_kafka,
        RedisSettings(url=SecretStr(dev_stack.redis_url())),
    )
    env = WorkerEnv(clients, default_bundle, tmp_path)
    env.env.update(sasl_env(scram_kafka, PASSWORD.get_secret_value()))
    yield env
    env.stop()


def test_worker_indexes_and_routes_over_sasl_scram(
    sasl_deployment: WorkerEnv, redis_client: redis.Redis, embedder: Any
) -> None:
    env = sasl_deployment
    env.start()
    # the worker has connected over SASL and declared its topics once it announces itself
    wait_for(
        lambda: f"worker {env.env['CROSSROUTE_WORKER__GROUP_ID']}:" in env.log(), "start", 180, env
    )
    policy = WarrantyPolicyUpserted(
        source_version=1,
        policy=WarrantyPolicy(
            id="wp1", tenant="acme", title="Payment failed", body="Card declined at checkout"
        ),
    )
    report = env.publisher.publish([*articles(5), policy])
    assert report.failed == [] and report.delivered == 6
    index = env.index(redis_client, embedder)
    wait_for(lambda: index.exists() and index.count("acme") == 6, "6 documents", 180, env)
    assert index.get("acme", "a3") is not None

    ticket = TicketCreated(ticket=Ticket(id="t1", tenant="acme", text="my card was declined"))
    assert env.publisher.publish([ticket]).failed == []
    (msg,) = consume(env.stack, env.topics.name("decisions"), 1, timeout=120)
    decided = decode_event(msg.value())
    assert isinstance(decided, RoutingDecided) and msg.key() == b"acme/t1"
    assert decided.decision.targets[0].doc_id == "wp1"
    assert PASSWORD.get_secret_value() not in env.log()


def test_a_wrong_password_fails_fast_with_an_authentication_error(
    scram_kafka: KafkaSettings, tmp_path: Path
) -> None:
    wrong = scram_kafka.model_copy(update={"sasl_password": SecretStr("not-the-password")})
    started = time.monotonic()
    healthy, detail = kafka_reachable(wrong, 10.0)
    assert not healthy and "Authentication failed" in detail, detail
    assert time.monotonic() - started < 5  # the first refusal ends it, not the timeout

    env = {
        **sasl_env(scram_kafka, "not-the-password"),
        "CROSSROUTE_STACK__STATE_DIR": str(tmp_path / "state"),
        "HF_HUB_OFFLINE": "1",
    }
    out = run_cli("worker", env=env, timeout=60)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "kafka: external service at" in out.stderr and "Authentication failed" in out.stderr
    assert "not-the-password" not in out.stderr + out.stdout
