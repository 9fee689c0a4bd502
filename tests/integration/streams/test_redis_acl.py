"""Least-privilege Redis users (router.acl) on the real Redis: a worker process that connects as the
``worker`` user indexes, routes and records outcomes; the API connected as the ``api`` user routes
and authenticates keys; neither can run FLUSHALL, CONFIG or KEYS, the API cannot write at all, and
the worker cannot write API keys, drop an index or write outside its namespace."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from fastapi.testclient import TestClient

from router.acl import Role, acl_rules
from router.api import create_app
from router.auth import KeyStore
from router.index import SpaceInfo, VectorIndex
from router.routing import Router
from router.schemas import Ticket, WarrantyPolicy
from router.settings import ApiSettings, RoutingSettings
from streams.events import RoutingDecided, TicketCreated, WarrantyPolicyUpserted, decode_event
from tests.integration.streams.test_worker import WorkerEnv, articles, consume, wait_for
from tests.integration.streams.test_worker import deployment as deployment  # the fixture


@pytest.fixture
def users(redis_client: redis.Redis) -> Iterator[Any]:
    made: list[str] = []

    def create(role: Role, namespace: str) -> str:
        """A user of ``role`` over ``namespace``; returns its redis:// URL."""
        name, password = f"cr-{role}-{secrets.token_hex(4)}", secrets.token_urlsafe(18)
        redis_client.execute_command(
            "ACL", "SETUSER", name, "reset", "on", f">{password}", *acl_rules(namespace, role)
        )
        made.append(name)
        kw = redis_client.connection_pool.connection_kwargs
        return f"redis://{name}:{password}@{kw['host']}:{kw['port']}/0"

    yield create
    for name in made:
        redis_client.execute_command("ACL", "DELUSER", name)


def refused(client: redis.Redis, *command: str) -> bool:
    try:
        client.execute_command(*command)
    except redis.exceptions.NoPermissionError:
        return True
    return False


def test_worker_and_api_run_as_least_privilege_users(
    deployment: WorkerEnv, users: Any, redis_client: redis.Redis, embedder: Any
) -> None:
    env = deployment
    ns = env.index_settings.namespace
    env.env["REDIS_URL"] = users("worker", ns)
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

    worker = redis.Redis.from_url(env.env["REDIS_URL"])
    doc_key = f"{ns}:{embedder.space_id}:doc:acme:wp1"
    for command in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("KEYS", "*"),
                    ("HSET", f"{ns}:apikey:0000000000000000", "tenant", "acme"),
                    ("SET", "elsewhere:x", "1"), ("FT.DROPINDEX", admin_index.name),
                    ("ACL", "LIST"), ("SHUTDOWN",)):  # fmt: skip
        assert refused(worker, *command), command

    # the API as the read-only user: keys are made by an operator (admin), read by the API
    _, token = KeyStore(redis_client, ns).create("acme", ["route", "search"])
    api = redis.Redis.from_url(users("api", ns))
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
    for command in (("HSET", doc_key, "title", "pwned"), ("DEL", doc_key),
                    ("HSET", f"{ns}:apikey:0000000000000000", "tenant", "acme"),
                    ("EVAL", "return 1", "0"), ("FT.DROPINDEX", admin_index.name),
                    ("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("SCAN", "0"),
                    ("GET", "elsewhere:x")):  # fmt: skip
        assert refused(api, *command), command
    assert redis_client.hget(doc_key, "title") != b"pwned"
    assert urlsplit(env.env["REDIS_URL"]).password not in env.log()  # no secret in the logs
