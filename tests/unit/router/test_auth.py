"""API keys without Redis: token parsing, constant-time checks, the key cache, the rate limiter,
and the API's bounded embedding slots."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from router.auth import (
    ApiKey,
    Authenticator,
    AuthError,
    KeyStore,
    RateLimiter,
    bearer_token,
    token_hash,
)
from router.bounds import Rejected


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeStore(KeyStore):
    """The store's seam: ``lookup`` from a dict, counting reads."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[ApiKey, str]] = {}
        self.reads = 0

    def add(self, key_id: str, tenant: str = "acme", **kw: Any) -> str:
        token = f"crk_{key_id}_secret-{key_id}"
        key = ApiKey(key_id=key_id, tenant=tenant, created_at="t", **{"scopes": ("route",)} | kw)
        self.keys[key_id] = (key, token_hash(token))
        return token

    def lookup(self, key_id: str) -> tuple[ApiKey, str] | None:
        self.reads += 1
        return self.keys.get(key_id)


def guard(store: FakeStore, clock: Clock, rate: float = 100.0, burst: int = 100) -> Authenticator:
    return Authenticator(store, RateLimiter(rate, burst, clock=clock), cache_s=5.0, clock=clock)


def test_a_valid_key_passes_and_others_are_401() -> None:
    store, clock = FakeStore(), Clock()
    token = store.add("0123456789abcdef")
    auth = guard(store, clock)
    assert auth.authenticate(token, "route").tenant == "acme"
    for bad in (None, "", "nope", token + "x", token[:-1], "crk_0123456789abcdef_other",
                "crk_0123456789ABCDEF_x", "crk_ffffffffffffffff_x", "crk_" + "a" * 500):  # fmt: skip
        with pytest.raises(AuthError) as e:
            auth.authenticate(bad, "route")
        assert e.value.status == 401


def test_scopes_and_admin() -> None:
    store, clock = FakeStore(), Clock()
    search = store.add("1" * 16, scopes=("search",))
    admin = store.add("2" * 16, scopes=("admin",))
    auth = guard(store, clock)
    with pytest.raises(AuthError) as e:
        auth.authenticate(search, "route")
    assert e.value.status == 403 and "'route'" in e.value.message
    with pytest.raises(AuthError):
        auth.authenticate(search, "admin")
    for scope in ("route", "search", "admin"):
        auth.authenticate(admin, scope)  # type: ignore[arg-type]


def test_keys_are_cached_for_cache_s_then_reread_so_a_revocation_lands() -> None:
    store, clock = FakeStore(), Clock()
    token = store.add("a" * 16)
    auth = guard(store, clock)
    for _ in range(5):
        auth.authenticate(token, "route")
    assert store.reads == 1
    key, digest = store.keys["a" * 16]
    store.keys["a" * 16] = (key.model_copy(update={"revoked_at": "now"}), digest)
    auth.authenticate(token, "route")  # still cached
    clock.now += 5.0
    with pytest.raises(AuthError) as e:
        auth.authenticate(token, "route")
    assert e.value.status == 401 and store.reads == 2


def test_unknown_key_ids_are_cached_too() -> None:
    store, clock = FakeStore(), Clock()
    auth = guard(store, clock)
    for _ in range(3):
        with pytest.raises(AuthError):
            auth.authenticate("crk_" + "b" * 16 + "_x", "route")
    assert store.reads == 1


def test_the_rate_limit_answers_429_with_when_to_retry() -> None:
    store, clock = FakeStore(), Clock()
    token = store.add("c" * 16)
    own = store.add("d" * 16, rate_per_s=1.0)
    auth = guard(store, clock, rate=2.0, burst=3)
    for _ in range(3):
        auth.authenticate(token, "route")
    with pytest.raises(AuthError) as e:
        auth.authenticate(token, "route")
    assert e.value.status == 429 and e.value.retry_after_s == pytest.approx(0.5)
    assert e.value.headers == {"Retry-After": "1"}
    clock.now += 0.5
    auth.authenticate(token, "route")
    auth.authenticate(own, "route")  # a key's own rate: burst of 1
    with pytest.raises(AuthError) as e:
        auth.authenticate(own, "route")
    assert e.value.retry_after_s == pytest.approx(1.0)


def test_a_refused_request_spends_no_rate() -> None:
    store, clock = FakeStore(), Clock()
    store.add("e" * 16)
    auth = guard(store, clock, rate=1.0, burst=1)
    for _ in range(5):
        with pytest.raises(AuthError):
            auth.authenticate("crk_" + "e" * 16 + "_wrong", "route")
    assert auth.limiter.take("e" * 16) == 0.0


def test_bearer_token_from_headers() -> None:
    assert bearer_token([(b"Authorization", b"Bearer abc ")]) == "abc"
    assert bearer_token([(b"authorization", b"bearer abc")]) == "abc"
    assert bearer_token([(b"x-api-key", b"k1")]) == "k1"
    assert bearer_token([(b"authorization", b"Basic Zm9v")]) is None
    assert bearer_token([(b"authorization", b"Bearer ")]) is None
    assert bearer_token([]) is None


def test_embedding_slots_shed_load_with_503_past_the_queue() -> None:
    from router.api import _Metrics, _Slots

    class NoServing:
        class deployment:
            live = canary = None

    registry = CollectorRegistry()
    metrics = _Metrics(registry, NoServing())  # type: ignore[arg-type]
    slots = _Slots(concurrent=1, queued=1, metrics=metrics)
    release = threading.Event()

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(slots.run("/v1/route", release.wait))
        second = asyncio.ensure_future(slots.run("/v1/route", lambda: "queued"))
        await asyncio.sleep(0.05)
        assert registry.get_sample_value("crossroute_api_embedding_requests") == 2.0
        with pytest.raises(Rejected) as e:
            await slots.run("/v1/route", lambda: "never")
        assert e.value.status == 503 and e.value.headers == {"Retry-After": "1"}
        release.set()
        return list(await asyncio.gather(first, second))

    assert asyncio.run(scenario()) == [True, "queued"]
    shed = {"endpoint": "/v1/route", "reason": "capacity"}
    assert registry.get_sample_value("crossroute_api_shed_total", shed) == 1.0
    assert registry.get_sample_value("crossroute_api_embedding_requests") == 0.0
