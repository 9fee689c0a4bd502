"""API keys on the real Redis and the real API: 401 without a key, the tenant comes from the key
(a body naming another is 403), scopes, revocation, the per-key rate limit (429 + Retry-After),
only a hash at rest, and auth switched off only explicitly and loudly."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from router.api import create_app
from router.auth import KeyStore, token_hash
from router.routing import Router
from router.settings import ApiSettings

TICKET = {"id": "t1", "tenant": "acme", "text": "I forgot my password, how do I log in?"}


@pytest.fixture
def store(router: Router) -> KeyStore:
    return KeyStore(router.index.client, router.index.settings.namespace)


def app_client(router: Router, store: KeyStore, **settings: object) -> TestClient:
    return TestClient(
        create_app(router, ApiSettings(**settings), keys=store),  # type: ignore[arg-type]
        raise_server_exceptions=False,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_call_but_health_needs_a_key(router: Router, store: KeyStore) -> None:
    client = app_client(router, store)
    for method, path in (("post", "/v1/route"), ("post", "/v1/search"), ("get", "/metrics")):
        res = client.request(method, path, json={"ticket": TICKET})
        assert res.status_code == 401, (path, res.text)
        assert res.headers["WWW-Authenticate"].startswith("Bearer")
    bad = client.post(
        "/v1/route", json={"ticket": TICKET}, headers=bearer("crk_" + "0" * 16 + "_x")
    )
    assert bad.status_code == 401
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_the_tenant_comes_from_the_key(router: Router, store: KeyStore) -> None:
    _, acme = store.create("acme", ["route", "search"])
    client = app_client(router, store)
    ok = client.post("/v1/route", json={"ticket": TICKET}, headers=bearer(acme))
    assert ok.status_code == 200, ok.text
    assert ok.json()["targets"][0]["doc_id"] == "acme-reset-password"
    for path, body in (
        ("/v1/route", {"ticket": TICKET | {"tenant": "globex"}}),
        ("/v1/search", {"tenant": "globex", "text": "password"}),
    ):
        res = client.post(path, json=body, headers=bearer(acme))
        assert res.status_code == 403, res.text
        assert "tenant 'acme'" in res.json()["detail"]
    multipart = client.post(
        "/v1/route", data={"ticket": '{"id": "m", "tenant": "globex", "text": "password"}'},
        files={"x": ("x", b"", "text/plain")}, headers=bearer(acme),
    )  # fmt: skip
    assert multipart.status_code == 403, multipart.text
    hits = client.post(
        "/v1/search", json={"tenant": "acme", "text": "password", "k": 10}, headers=bearer(acme)
    ).json()["hits"]
    assert hits and all(h["id"].startswith("acme-") or h["id"] == "sku-1" for h in hits)


def test_scopes_decide_the_endpoints(router: Router, store: KeyStore) -> None:
    _, search_only = store.create("acme", ["search"])
    _, admin = store.create("acme", ["admin"])
    client = app_client(router, store)
    assert (
        client.post("/v1/route", json={"ticket": TICKET}, headers=bearer(search_only)).status_code
        == 403
    )
    assert client.get("/metrics", headers=bearer(search_only)).status_code == 403
    body = {"tenant": "acme", "text": "password"}
    assert client.post("/v1/search", json=body, headers=bearer(search_only)).status_code == 200
    metrics = client.get("/metrics", headers=bearer(admin))
    assert metrics.status_code == 200 and "crossroute_api_requests_total" in metrics.text
    assert 'status="403"' in metrics.text and 'status="401"' not in metrics.text


def test_a_revoked_key_is_refused_within_the_cache_time(router: Router, store: KeyStore) -> None:
    key, token = store.create("acme", ["route"], label="ci")
    client = app_client(router, store, key_cache_s=0)
    assert (
        client.post("/v1/route", json={"ticket": TICKET}, headers=bearer(token)).status_code == 200
    )
    revoked = store.revoke(key.key_id)
    assert revoked.revoked_at is not None and store.revoke(key.key_id) == revoked  # idempotent
    res = client.post("/v1/route", json={"ticket": TICKET}, headers=bearer(token))
    assert res.status_code == 401, res.text
    listed = {k.key_id: k for k in store.list("acme")}
    assert listed[key.key_id].revoked_at == revoked.revoked_at and listed[key.key_id].label == "ci"


def test_only_a_hash_is_stored(router: Router, store: KeyStore) -> None:
    key, token = store.create("acme", ["route"])
    stored = router.index.client.hgetall(f"{store.namespace}:apikey:{key.key_id}")
    assert stored[b"sha256"].decode() == token_hash(token)
    secret = token.rsplit("_", 1)[1].encode()
    assert not any(secret in v for v in stored.values())
    assert token not in key.model_dump_json()


def test_a_key_over_its_rate_gets_429_with_retry_after(router: Router, store: KeyStore) -> None:
    _, slow = store.create("acme", ["search"], rate_per_s=0.05)  # one request per 20 s
    _, other = store.create("acme", ["search"])
    client = app_client(router, store)
    body = {"tenant": "acme", "text": "password"}
    assert client.post("/v1/search", json=body, headers=bearer(slow)).status_code == 200
    res = client.post("/v1/search", json=body, headers=bearer(slow))
    assert res.status_code == 429, res.text
    assert 19 <= int(res.headers["Retry-After"]) <= 20
    # the limit is per key: another key of the same tenant is not throttled by it
    assert client.post("/v1/search", json=body, headers=bearer(other)).status_code == 200


def test_auth_off_is_explicit_and_loud(
    router: Router, store: KeyStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="router.api"):
        client = app_client(router, store, auth="off")
    assert "AUTHENTICATION IS OFF" in caplog.text
    res = client.post("/v1/route", json={"ticket": TICKET | {"tenant": "globex"}})
    assert res.status_code == 200, res.text
    assert ApiSettings().auth == "keys"
