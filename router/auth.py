"""API keys: who may call the HTTP API, for which tenant, for what, and how often.

A key is bound to one tenant and a set of scopes (``route``, ``search``, ``queue``: list and answer
the human queue, ``admin``: all of them and ``/metrics``). Only its SHA-256 is stored (a key is
256 random bits, so a fast hash is enough: there is nothing to guess a preimage from); the token
itself is shown once, when it is created, and never logged::

    crk_<key id: 16 hex>_<secret: 43 url-safe characters>

Keys live in Redis, one HASH per key, so every API process sees a revocation within
``ApiSettings.key_cache_s``::

    {namespace}:apikey:{key_id}     tenant, scopes, label, created_at, revoked_at, rate_per_s, sha256

The secret is compared in constant time (:func:`hmac.compare_digest`), against a dummy hash when the
key id is unknown, so the time of a refusal does not say whether the id exists. A token bucket per
key answers 429 with ``Retry-After`` when a key calls faster than its rate.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Literal, get_args

import redis
from pydantic import BaseModel, ConfigDict, Field

from router.bounds import Rejected
from router.connection import reply_text
from router.exceptions import RouterError
from router.schemas import TenantId

__all__ = [
    "SCOPES",
    "ApiKey",
    "AuthError",
    "Authenticator",
    "KeyNotFoundError",
    "KeyStore",
    "RateLimiter",
    "Scope",
    "token_hash",
]

Scope = Literal["route", "search", "queue", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
TOKEN_PREFIX = "crk_"  # noqa: S105 (a prefix that says what the token is, not a secret)
_KEY_ID_HEX = 16
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


class AuthError(Rejected):
    """A request the key does not allow: ``status`` 401 (no or a bad key, with the
    ``WWW-Authenticate`` challenge), 403 (not its scope or tenant) or 429 (over its rate;
    ``retry_after_s`` says when to retry)."""

    @property
    def headers(self) -> dict[str, str]:
        headers = super().headers
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="crossroute"'
        return headers


class KeyNotFoundError(RouterError):
    """No key with that id."""


class ApiKey(BaseModel):
    """What a key may do (never its secret nor its hash)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: str
    tenant: TenantId
    scopes: tuple[Scope, ...]
    label: str = ""
    created_at: str
    revoked_at: str | None = None
    rate_per_s: Annotated[float, Field(gt=0)] | None = None
    """This key's own rate limit (requests/s); ``None``: the API's default."""

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: Scope) -> bool:
        """``admin`` allows everything of its tenant."""
        return scope in self.scopes or "admin" in self.scopes


def token_hash(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _key_id(token: str) -> str | None:
    """The key id a well-formed token names, else ``None``."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    key_id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or not secret or len(key_id) != _KEY_ID_HEX:
        return None
    if any(c not in "0123456789abcdef" for c in key_id):
        return None
    return key_id


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class KeyStore:
    """API keys in Redis (``{namespace}:apikey:{key_id}``)."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def _name(self, key_id: str) -> str:
        return f"{self.namespace}:apikey:{key_id}"

    def create(
        self,
        tenant: str,
        scopes: Iterable[Scope],
        *,
        label: str = "",
        rate_per_s: float | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key; returns it with its token, which is not stored and cannot be shown again.

        Raises:
            ValueError: no scope, an unknown scope, or a bad tenant (pydantic's message).
        """
        wanted = sorted(set(scopes), key=SCOPES.index)
        if not wanted:
            raise ValueError(f"a key needs at least one scope of {', '.join(SCOPES)}")
        key_id = secrets.token_hex(_KEY_ID_HEX // 2)
        token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey(
            key_id=key_id, tenant=tenant, scopes=tuple(wanted), label=label,
            created_at=_now(), rate_per_s=rate_per_s,
        )  # fmt: skip
        self.client.hset(
            self._name(key_id),
            mapping={
                "tenant": key.tenant,
                "scopes": ",".join(key.scopes),
                "label": key.label,
                "created_at": key.created_at,
                "rate_per_s": "" if rate_per_s is None else repr(float(rate_per_s)),
                "sha256": token_hash(token),
            },
        )  # one command: a reader never sees half a key (64 random bits of id: no collision)
        return key, token

    def lookup(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its stored hash, or ``None``."""
        raw = self.client.hgetall(self._name(key_id))
        if not raw or b"sha256" not in raw:
            return None
        f = {reply_text(k): reply_text(v) for k, v in raw.items()}
        scopes = tuple(s for s in f.get("scopes", "").split(",") if s in SCOPES)
        key = ApiKey(
            key_id=key_id,
            tenant=f["tenant"],
            scopes=scopes,
            label=f.get("label", ""),
            created_at=f.get("created_at", ""),
            revoked_at=f.get("revoked_at") or None,
            rate_per_s=float(f["rate_per_s"]) if f.get("rate_per_s") else None,
        )
        return key, f["sha256"]

    def list(self, tenant: str | None = None) -> list[ApiKey]:
        """Every key (of ``tenant``), oldest first."""
        keys = []
        for name in self.client.scan_iter(match=self._name("*"), count=500):
            found = self.lookup(name.decode().rsplit(":", 1)[1])
            if found is not None and (tenant is None or found[0].tenant == tenant):
                keys.append(found[0])
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    def revoke(self, key_id: str) -> ApiKey:
        """Mark the key revoked (kept, so ``list`` shows it); idempotent.

        Raises:
            KeyNotFoundError: no such key.
        """
        found = self.lookup(key_id)
        if found is None:
            raise KeyNotFoundError(f"no API key {key_id!r}")
        if found[0].revoked_at is not None:
            return found[0]
        revoked_at = _now()
        self.client.hsetnx(self._name(key_id), "revoked_at", revoked_at)
        return found[0].model_copy(update={"revoked_at": revoked_at})

    def delete(self, key_id: str) -> None:
        """Forget a key entirely (a temporary key; people's keys are revoked, so ``list`` keeps
        them)."""
        self.client.delete(self._name(key_id))


class RateLimiter:
    """A token bucket per key: ``rate`` requests/s sustained, ``burst`` at once."""

    def __init__(
        self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id → (tokens, at)
        self._lock = threading.Lock()

    def take(self, key_id: str, rate_per_s: float | None = None) -> float:
        """Spend one request of ``key_id``: 0.0 when allowed, else the seconds until it would be."""
        rate = rate_per_s or self.rate
        burst = max(self.burst, 1) if rate_per_s is None else max(math.ceil(rate), 1)
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key_id, (float(burst), now))
            tokens = min(float(burst), tokens + (now - at) * rate)
            if tokens >= 1.0:
                self._buckets[key_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / rate


class Authenticator:
    """Check a request's token: the key it names, its secret, its scope, its rate.

    Keys are read from the store at most once per ``cache_s`` per key id (unknown ids too, in a
    bounded cache), so a revocation reaches every process within ``cache_s``.
    """

    def __init__(
        self,
        store: KeyStore,
        limiter: RateLimiter,
        *,
        cache_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        max_cached: int = 10_000,
    ) -> None:
        self.store = store
        self.limiter = limiter
        self.cache_s = cache_s
        self.clock = clock
        self.max_cached = max_cached
        self._cache: dict[str, tuple[float, tuple[ApiKey, str] | None]] = {}
        self._lock = threading.Lock()

    def _lookup(self, key_id: str) -> tuple[ApiKey, str] | None:
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key_id)
        if hit is not None and now - hit[0] < self.cache_s:
            return hit[1]
        found = self.store.lookup(key_id)
        with self._lock:
            if len(self._cache) >= self.max_cached:
                self._cache.clear()
            self._cache[key_id] = (now, found)
        return found

    def authenticate(self, token: str | None, scope: Scope | None) -> ApiKey:
        """The key of ``token`` if it may use ``scope`` now (None: any valid key).

        Raises:
            AuthError: 401 without a valid active key, 403 outside its scopes, 429 over its rate.
            redis.RedisError: the key store is unreachable (the API answers 503).
        """
        if not token:
            raise AuthError(401, "an API key is required (Authorization: Bearer <key>)")
        key_id = _key_id(token)
        found = self._lookup(key_id) if key_id is not None else None
        stored = found[1] if found is not None else _DUMMY_HASH
        genuine = hmac.compare_digest(token_hash(token), stored)
        if found is None or not genuine or not found[0].active:
            raise AuthError(401, "invalid or revoked API key")
        key = found[0]
        if scope is not None and not key.allows(scope):
            raise AuthError(403, f"this API key has no {scope!r} scope")
        wait = self.limiter.take(key.key_id, key.rate_per_s)
        if wait > 0:
            raise AuthError(429, "rate limit exceeded for this API key", retry_after_s=wait)
        return key


def bearer_token(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer`` or ``X-API-Key`` header."""
    for name, value in headers:
        lower = name.lower()
        if lower == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif lower == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None
