"""Least-privilege Redis users (router.acl, made by the dev stack: CROSSROUTE_STACK__REDIS_USERS) over
TLS on the real Redis: a worker process that connects
as the ``worker`` user to the dev stack's TLS port (``rediss://``, trusting the stack's CA) indexes,
routes and records outcomes; the API connected the same way as the ``api`` user routes and
authenticates keys; neither can run FLUSHALL, CONFIG or KEYS, the API cannot write at all, and the
worker cannot write API keys, drop an index or write outside its namespace. Without the CA the TLS
connection is refused with a clear error."""

from __future__ import annotations

import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from models.exceptions import UsageError
from router.acl import Role
from router.api import create_app
from router.auth import KeyStore
from router.connection import redis_client as redis_client_of
from router.index import SpaceInfo, VectorIndex
from router.routing import Router
from router.schemas import Ticket, WarrantyPolicy
from router.settings import ApiSettings, DevStackEndpoints, RedisSettings, RoutingSettings
from streams.devstack import DevStack
from streams.devstack.envfile import read_env_file
from streams.events import RoutingDecided, TicketCreated, WarrantyPolicyUpserted, decode_event
from tests.integration.streams.test_worker import WorkerEnv, articles, consume, wait_for
from tests.integration.streams.test_worker import deployment as deployment  # the fixture


@pytest.fixture
def tls(dev_stack: DevStack) -> tuple[str, Path]:
    """The embedded Redis's TLS endpoint (host:port) and the CA to trust."""
    if dev_stack.redis_external:
        pytest.skip("REDIS_URL points at an external Redis: the TLS port is the dev stack's")
    split = urlsplit(dev_stack.redis_tls_url())
    return f"{split.hostname}:{split.port}", dev_stack.redis_tls_files().ca


@pytest.fixture
def users(dev_stack: DevStack, redis_client: redis.Redis, tls: tuple[str, Path]) -> Iterator[Any]:
    made: list[str] = []

    def create(role: Role, namespace: str) -> str:
        """A user of ``role`` over ``namespace``; returns its rediss:// URL (the TLS port)."""
        made.append(f"cr-{role}-{secrets.token_hex(4)}")
        url = dev_stack.add_redis_user(role, namespace, user=made[-1])
        assert url.startswith(f"rediss://{made[-1]}:") and url.endswith(f"@{tls[0]}/0")
        return url

    yield create
    for name in made:
        redis_client.execute_command("ACL", "DELUSER", name)


def connect(url: str, ca: Path | None) -> redis.Redis:
    """A client made the way crossroute makes them (router.connection), checked with a PING."""
    settings = RedisSettings(url=SecretStr(url), tls_ca_file=ca)
    return redis_client_of(settings, DevStackEndpoints())


def refused(client: redis.Redis, *command: str) -> bool:
    try:
        client.execute_command(*command)
    except redis.exceptions.NoPermissionError:
        return True
    return False


def test_worker_and_api_run_as_least_privilege_users(
    deployment: WorkerEnv,
    dev_stack: DevStack,
    tls: tuple[str, Path],
    redis_client: redis.Redis,
    embedder: Any,
) -> None:
    env = deployment
    ns = env.index_settings.namespace
    # the dev stack's own users (CROSSROUTE_STACK__REDIS_USERS, made on `stack up`), here over
    # this test's namespace: their settings are env files, the same password on every `up`
    stack = DevStack(dev_stack.settings, dev_stack.kafka_settings, dev_stack.redis_settings,
                     index=env.index_settings)  # fmt: skip
    files = stack.ensure_redis_users()
    assert stack.ensure_redis_users() == files
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files.values())
    worker_env = read_env_file(files["worker"])
    assert read_env_file(files["worker"]) == worker_env  # unchanged by the second `up`
    assert worker_env["CROSSROUTE_REDIS__TLS_CA_FILE"] == str(tls[1])
    env.env.pop("REDIS_URL")
    env.env.update(worker_env)
    env.start()
    policy = WarrantyPolicyUpserted(
        source_version=1,
        policy=WarrantyPolicy(
            id="wp1", tenant="acme", title="Payment failed", body="Card declined at checkout"
        ),
    )
    assert env.publisher.publish([*articles(5), policy]).failed == []
    admin_index = env.index(redis_client, embedder)
    wait_for(lambda: admin_index.exists() and admin_index.count("acme") == 6, "6 docs", 240, env)
    ticket = TicketCreated(ticket=Ticket(id="t1", tenant="acme", text="my card was declined"))
    assert env.publisher.publish([ticket]).failed == []
    (msg,) = consume(env.stack, env.topics.name("decisions"), 1, timeout=120)
    decided = decode_event(msg.value())
    assert isinstance(decided, RoutingDecided) and decided.decision.targets[0].doc_id == "wp1"
    assert "NOPERM" not in env.log() and "NoPermission" not in env.log()

    worker = connect(env.env["CROSSROUTE_REDIS__URL"], tls[1])
    doc_key = f"{ns}:{embedder.space_id}:doc:acme:wp1"
    for command in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("KEYS", "*"),
                    ("HSET", f"{ns}:apikey:0000000000000000", "tenant", "acme"),
                    ("SET", "elsewhere:x", "1"), ("FT.DROPINDEX", admin_index.name),
                    ("ACL", "LIST"), ("SHUTDOWN",)):  # fmt: skip
        assert refused(worker, *command), command

    # the API as the read-only user: keys are made by an operator (admin), read by the API
    _, token = KeyStore(redis_client, ns).create("acme", ["route", "search"])
    api = connect(read_env_file(files["api"])["CROSSROUTE_REDIS__URL"], tls[1])
    router = Router(
        embedder,
        VectorIndex(api, SpaceInfo.from_manifest(embedder.manifest), env.index_settings),
        RoutingSettings(threshold=0.2),
    )
    client = TestClient(
        create_app(router, ApiSettings(), keys=KeyStore(api, ns)),
        raise_server_exceptions=False,
        headers={"Authorization": f"Bearer {token}"},
    )
    res = client.post("/v1/route", json={"ticket": {"id": "t2", "tenant": "acme",
                                                    "text": "my card was declined"}})  # fmt: skip
    assert res.status_code == 200, res.text
    assert res.json()["targets"][0]["doc_id"] == "wp1"
    search = client.post("/v1/search", json={"tenant": "acme", "text": "declined card"})
    assert search.status_code == 200 and search.json()["hits"][0]["id"] == "wp1"
    assert client.get("/healthz").json()["documents"] == 6
    # its one write: a shared decision (SET, on {ns}:decision:* only)
    explained = client.post("/v1/route/explain", json={"ticket": {
        "id": "t3", "tenant": "acme", "text": "my card was declined"}}).json()  # fmt: skip
    shared = f"{ns}:decision:acme:{explained['share_id']}"
    assert client.get(f"/v1/decisions/{explained['share_id']}").json()["text"]
    assert refused(api, "DEL", shared) and refused(api, "SET", f"{ns}:deployment", "x")
    assert refused(api, "HSET", f"{ns}:decision:acme:x", "a", "1")
    for command in (("HSET", doc_key, "title", "pwned"), ("DEL", doc_key),
                    ("HSET", f"{ns}:apikey:0000000000000000", "tenant", "acme"),
                    ("EVAL", "return 1", "0"), ("FT.DROPINDEX", admin_index.name),
                    ("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("SCAN", "0"),
                    ("GET", "elsewhere:x")):  # fmt: skip
        assert refused(api, *command), command
    assert redis_client.hget(doc_key, "title") != b"pwned"
    password = urlsplit(env.env["CROSSROUTE_REDIS__URL"]).password
    assert password is not None and password not in env.log()  # no secret in the logs


def test_tls_without_the_ca_is_refused_clearly(
    users: Any, tls: tuple[str, Path], redis_client: redis.Redis
) -> None:
    url = users("api", "tlsonly")
    assert connect(url, tls[1]).ping()
    with pytest.raises(UsageError, match=r"cannot reach Redis at rediss://cr-api-\w+:\*\*\*@") as e:
        connect(url, None)  # the system's CAs do not know the stack's own
    password = urlsplit(url).password
    assert password is not None and password not in str(e.value)
    with pytest.raises(ValueError, match="need a rediss:// url"):
        RedisSettings(url=SecretStr(url.replace("rediss://", "redis://")), tls_ca_file=tls[1])
