"""Connecting to Redis from configuration, never from the dev stack.

A process connects to ``CROSSROUTE_REDIS__URL`` / ``REDIS_URL`` when set; unset, it connects to where
the embedded dev stack listens by default (:data:`DEV_REDIS_URL`). The streams layer, which owns
the dev stack and its configurable ports, passes its own resolved URL instead.
"""

from __future__ import annotations

import redis

from models.exceptions import UsageError
from router.settings import RedisSettings, redact_url

__all__ = ["DEV_REDIS_URL", "redis_client", "redis_url"]

DEV_REDIS_URL = "redis://127.0.0.1:6379/0"
"""The dev stack's Redis at its default port (``CROSSROUTE_STACK__REDIS_PORT``)."""


def redis_url(settings: RedisSettings, default: str = DEV_REDIS_URL) -> str:
    """The configured Redis URL, else ``default`` (may hold a password: never log it)."""
    return settings.url.get_secret_value() if settings.url is not None else default


def redis_client(settings: RedisSettings, default: str = DEV_REDIS_URL) -> redis.Redis:
    """A client of the configured Redis (else of ``default``), checked with a PING.

    Raises:
        UsageError: Redis cannot be reached there (the message names the URL without password).
    """
    url = redis_url(settings, default)
    client = redis.Redis.from_url(url, socket_timeout=settings.socket_timeout_s)
    try:
        client.ping()
    except redis.RedisError as e:
        client.close()
        raise UsageError(
            f"cannot reach Redis at {redact_url(url)} ({type(e).__name__}): start the dev stack "
            "with `crossroute stack up` or set REDIS_URL"
        ) from e
    return client
