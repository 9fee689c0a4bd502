"""docker-compose.yml's security, run on the real servers without a Docker engine: the Kafka broker
started by the compose file's own ``stack/compose/kafka-start.sh`` with the secrets of
``crossroute stack compose-secrets`` (SASL_SSL, SCRAM users formatted into the storage, ACLs), Redis
started with the compose file's ``REDIS_ARGS`` (ACL users only), the compose ``kafka-acls`` command
as the admin, then a worker with ``worker.env`` and a producer with ``publisher.env``. The worker
indexes and routes; the default Redis user may only PING, the API's user cannot write, a wrong
password and the publisher's reading are refused, and no secret reaches a log.

Only what a container would change is changed: container paths map to the secrets folder (the same
layout), service names and ports to loopback and free ports (``ComposeNames``)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from confluent_kafka import KafkaError, Producer
from pydantic import SecretStr

from router.settings import IndexSettings, RedisSettings
from streams.devstack import DevStack
from streams.devstack.artifacts import ensure_kafka_jars, ensure_libssl, find_redis_stack
from streams.devstack.compose import (
    CONTAINER_SECRETS,
    KAFKA_DATA,
    ComposeNames,
    write_compose_secrets,
)
from streams.devstack.envfile import read_env_file
from streams.devstack.kafka import kafka_reachable
from streams.events import FeedbackRecorded
from streams.operations import DeadLetters
from streams.producer import Publisher
from streams.settings import KafkaSettings, StackSettings, TopicSettings
from tests.conftest import REPO
from tests.integration.conftest import free_port
from tests.integration.streams.test_worker import (
    WorkerEnv,
    consume,
    indexes_and_routes,
    stop_processes,
    wait_for,
)
from tests.unit.test_compose import service_env

COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())


@dataclass
class Compose:
    """The compose services' servers, run here, and how a container of each service sees them."""

    secrets: Path
    names: ComposeNames
    tmp: Path

    def local(self, value: str) -> str:
        """A container's view of a value (paths, service endpoints) mapped onto this machine."""
        n = self.names
        return (
            value.replace(CONTAINER_SECRETS + "/", f"{self.secrets}/")
            .replace(KAFKA_DATA, str(self.tmp / "kafka-data"))
            .replace("kafka:9094", f"{n.kafka_host}:{n.kafka_port}")
        )

    def env(self, service: str) -> dict[str, str]:
        """The environment compose gives ``service``'s container (env files + environment)."""
        env = service_env(COMPOSE["services"][service], self.secrets)
        return {k: self.local(v) for k, v in env.items()}

    def kafka(self, service: str, env_file: str | None = None) -> KafkaSettings:
        """The Kafka connection of ``service``'s container, or of one given ``env_file`` instead
        of its own (``publisher.env``: a producer on the compose network)."""
        env = self.env(service)
        if env_file is not None:
            env |= read_env_file(self.secrets / env_file)
        return KafkaSettings(
            bootstrap_servers=env["CROSSROUTE_KAFKA__BOOTSTRAP_SERVERS"],
            security_protocol="SASL_SSL",
            sasl_mechanism=env["CROSSROUTE_KAFKA__SASL_MECHANISM"],  # type: ignore[arg-type]
            sasl_username=env["CROSSROUTE_KAFKA__SASL_USERNAME"],
            sasl_password=SecretStr(env["CROSSROUTE_KAFKA__SASL_PASSWORD"]),
            ssl_ca_file=Path(env["CROSSROUTE_KAFKA__SSL_CA_FILE"]),
        )

    def redis_url(self, env_file: str) -> str:
        return read_env_file(self.secrets / env_file)["CROSSROUTE_REDIS__URL"]


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    tmp = tmp_path_factory.mktemp("compose")
    names = ComposeNames(
        kafka_host="localhost",
        kafka_port=free_port(),
        kafka_internal_port=free_port(),
        kafka_controller_port=free_port(),
        redis_host="127.0.0.1",
        redis_port=free_port(),
    )
    secrets = tmp / "stack" / "secrets"
    write_compose_secrets(secrets, namespace="crossroute", alias="live", names=names)
    c = Compose(secrets, names, tmp)
    stack = StackSettings()
    procs: list[subprocess.Popen[bytes]] = []

    # Kafka: the compose entrypoint script, with KAFKA_HOME's two scripts run on our pinned jars
    libs = ensure_kafka_jars(stack.cache_dir, stack.mvn)
    home = tmp / "kafka-home"
    (home / "bin").mkdir(parents=True)
    for script, main in (("kafka-storage.sh", "kafka.tools.StorageTool"),
                         ("kafka-server-start.sh", "kafka.Kafka")):  # fmt: skip
        path = home / "bin" / script
        path.write_text(f'#!/bin/sh\nexec {stack.java} -Xmx512m -cp "{libs}/*" {main} "$@"\n')
        path.chmod(0o755)
    props = tmp / "server.properties"
    props.write_text(c.local((secrets / "kafka" / "server.properties").read_text()))
    kafka_svc = COMPOSE["services"]["kafka"]
    script = next(v.split(":")[0] for v in kafka_svc["volumes"] if "kafka-start.sh" in v)
    kafka_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CROSSROUTE_", "KAFKA_"))},
        **c.env("kafka"),
        "KAFKA_HOME": str(home),
        "CROSSROUTE_KAFKA_PROPERTIES": str(props),
    }
    with (tmp / "kafka.log").open("wb") as log:
        argv = [*kafka_svc["entrypoint"][:1], str(REPO / script)]
        procs.append(subprocess.Popen(argv, env=kafka_env, stdout=log, stderr=log, cwd=tmp))

    # Redis: redis-stack-server with the compose REDIS_ARGS (the image adds its modules)
    files = find_redis_stack()
    libssl = ensure_libssl(stack.cache_dir, stack.libssl_deb)
    args = shlex.split(c.local(COMPOSE["services"]["redis"]["environment"]["REDIS_ARGS"]))
    (tmp / "redis").mkdir()
    argv = [str(files.redis_server), "--bind", "127.0.0.1", "--port", str(names.redis_port),
            "--dir", str(tmp / "redis"), *args]  # fmt: skip
    for module in files.modules:
        argv += ["--loadmodule", str(module)]
    redis_env = {**os.environ, "LD_LIBRARY_PATH": str(libssl)}
    with (tmp / "redis.log").open("wb") as log:
        procs.append(subprocess.Popen(argv, env=redis_env, stdout=log, stderr=log, cwd=tmp))
    try:
        up, detail = kafka_reachable(c.kafka("admin"), 120)
        assert up, f"{detail}\n{(tmp / 'kafka.log').read_text()[-3000:]}"
        yield c
    finally:
        stop_processes(procs)


def test_compose_secured_stack_runs_the_worker_and_refuses_the_rest(
    compose: Compose, default_bundle: Path, tmp_path: Path, embedder: Any
) -> None:
    c = compose
    # the compose health check of Redis: the default user may PING and nothing else
    anonymous = redis.Redis(host="127.0.0.1", port=c.names.redis_port)
    assert anonymous.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        anonymous.get("crossroute:deployment")
    admin_redis = redis.Redis.from_url(c.redis_url("admin.env"))
    assert admin_redis.acl_whoami() in ("admin", b"admin")

    # the compose kafka-acls job, as the admin
    acls = COMPOSE["services"]["kafka-acls"]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    job_env = {**{k: v for k, v in os.environ.items() if not k.startswith("CROSSROUTE_")},
               **c.env("kafka-acls"), "PATH": path,
               "CROSSROUTE_STACK__STATE_DIR": str(tmp_path / "state")}  # fmt: skip
    job_env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    job = subprocess.run(acls["command"], env=job_env, capture_output=True, text=True,
                         timeout=180, check=False)  # fmt: skip
    assert job.returncode == 0, job.stdout + job.stderr
    assert "created 7 ACLs for User:crossroute-worker" in job.stderr
    assert "created 3 ACLs for User:crossroute-api" in job.stderr

    # the worker as compose runs it: worker.env + its environment
    worker_kafka = c.kafka("worker")
    clients = DevStack(StackSettings(state_dir=tmp_path / "clients"), worker_kafka,
                       RedisSettings(url=SecretStr(c.redis_url("worker.env"))))  # fmt: skip
    env = WorkerEnv(clients, default_bundle, tmp_path)
    env.topics = TopicSettings(partitions=3)  # the prefix the compose ACLs grant
    env.index_settings = IndexSettings()
    for key in ("CROSSROUTE_TOPICS__PREFIX", "CROSSROUTE_INDEX__NAMESPACE",
                "CROSSROUTE_WORKER__GROUP_ID", "KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"):  # fmt: skip
        env.env.pop(key)
    worker_env = c.env("worker")
    worker_env.pop("CROSSROUTE_MODEL__BUNDLE_DIR")  # the host's bundle, not /models/current
    worker_env.pop("CROSSROUTE_WORKER__METRICS_PORT")
    env.env.update(worker_env)
    publisher = c.kafka("worker", "publisher.env")
    env.publisher = Publisher(publisher.as_librdkafka(publisher.bootstrap_servers), env.topics)
    try:
        env.start()
        wait_for(lambda: "worker crossroute-worker:" in env.log(), "declared topics", 240, env)
        index = env.index(admin_redis, embedder)
        indexes_and_routes(env, index, 240)

        # the API's Redis user reads but cannot write; the publisher cannot read
        api = redis.Redis.from_url(c.redis_url("api.env"))
        assert api.exists(f"crossroute:{embedder.space_id}:doc:acme:a1") == 1
        with pytest.raises(redis.exceptions.NoPermissionError):
            api.hset(f"crossroute:{embedder.space_id}:doc:acme:a1", "title", "pwned")
        publisher_clients = DevStack(StackSettings(state_dir=tmp_path / "pub"), publisher,
                                     RedisSettings(url=SecretStr(c.redis_url("api.env"))))  # fmt: skip
        assert consume(publisher_clients, env.topics.name("tickets"), 1, timeout=5) == []

        # the API's Kafka user (api.env): publishes the queue's answers, browses the dead letters,
        # reads nothing else
        api_kafka = c.kafka("api")
        api_config = api_kafka.as_librdkafka(api_kafka.bootstrap_servers)
        answered = FeedbackRecorded(tenant_id="acme", ticket_id="t1", space_id=embedder.space_id,
                                    action="escalated")  # fmt: skip
        assert Publisher(api_config, env.topics).publish([answered]).failed == []
        DeadLetters(api_config, env.topics.name("dead_letters")).newest("acme")  # READ granted
        api_clients = DevStack(StackSettings(state_dir=tmp_path / "api"), api_kafka,
                               RedisSettings(url=SecretStr(c.redis_url("api.env"))))  # fmt: skip
        assert consume(api_clients, env.topics.name("tickets"), 1, timeout=5) == []

        # a wrong password is refused
        bad = publisher.model_copy(update={"sasl_password": SecretStr("wrong")})
        errors: list[Any] = []
        producer = Producer(bad.as_librdkafka(bad.bootstrap_servers, **{
            "message.timeout.ms": 10_000, "error_cb": errors.append}))  # fmt: skip
        producer.produce(env.topics.name("articles"), b"{}", b"k")
        producer.flush(15)
        assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    finally:
        env.stop()
    logs = env.log() + job.stdout + job.stderr + (c.tmp / "kafka.log").read_text(errors="replace")
    for name in ("kafka.env", "worker.env", "api.env", "admin.env", "publisher.env"):
        for key, value in read_env_file(c.secrets / name).items():
            if key.endswith("PASSWORD"):
                assert value not in logs, f"{name} {key} appears in a log"
