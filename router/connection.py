"""Connecting to Redis from configuration, never from the dev stack's processes.

A process connects to ``CROSSROUTE_REDIS__URL`` / ``REDIS_URL`` when set; unset, to where the
embedded dev stack's Redis listens (``CROSSROUTE_STACK__HOST`` / ``CROSSROUTE_STACK__REDIS_PORT``,
:class:`~router.settings.DevStackEndpoints`). The one place a Redis URL is resolved: the router's
commands, the worker, the supervisor and the dev stack all call :func:`redis_url`.
"""

from __future__ import annotations

import redis

from models.exceptions import UsageError
from router.settings import DevStackEndpoints, RedisSettings, redact_url

__all__ = ["redis_client", "redis_url", "reply_text"]


def reply_text(value: object) -> str:
    """A Redis reply value as text (the client returns bytes unless it decodes responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def redis_url(settings: RedisSettings, stack: DevStackEndpoints) -> str:
    """The configured Redis URL, else the dev stack's (may hold a password: never log it)."""
    return settings.url.get_secret_value() if settings.url is not None else stack.redis_url()


def redis_client(settings: RedisSettings, stack: DevStackEndpoints) -> redis.Redis:
    """A client of :func:`redis_url`, checked with a PING.

    Raises:
        UsageError: Redis cannot be reached there (the message names the URL without password).
    """
    url = redis_url(settings, stack)
    tls: dict[str, str] = {}
    for option, path in (("ssl_ca_certs", settings.tls_ca_file),
                         ("ssl_certfile", settings.tls_cert_file),
                         ("ssl_keyfile", settings.tls_key_file)):  # fmt: skip
        if path is not None:
            tls[option] = str(path)
    client = redis.Redis.from_url(url, socket_timeout=settings.socket_timeout_s, **tls)
    try:
        client.ping()
    except redis.RedisError as e:
        client.close()
        raise UsageError(
            f"cannot reach Redis at {redact_url(url)} ({type(e).__name__}): start the dev stack "
            "with `crossroute stack up` or set REDIS_URL"
        ) from e
    return client
