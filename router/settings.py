"""Settings of the routing layer: the Redis section, the HTTP API section, and the API process.

Env names: ``CROSSROUTE_`` + section + ``__`` + field, e.g. ``CROSSROUTE_REDIS__URL``,
``CROSSROUTE_API__PORT``. ``REDIS_URL`` is honoured too when the prefixed name is unset.
"""

from __future__ import annotations

from typing import Annotated, ClassVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from models.settings import ModelSettings, ProcessSettings

__all__ = ["ApiSettings", "RedisSettings", "RouterSettings", "redact_url"]


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe for logs and status output)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class RedisSettings(BaseModel):
    """Redis Stack connection (``CROSSROUTE_REDIS__*``, or ``REDIS_URL``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: SecretStr | None = None
    """``redis://[user:password@]host:port/db``; unset means the embedded dev stack's server.
    Kept secret because it may embed a password."""
    socket_timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    """Per-command socket timeout."""

    @field_validator("url")
    @classmethod
    def _check_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = urlsplit(value.get_secret_value()).scheme
            if scheme not in {"redis", "rediss", "unix"}:
                raise ValueError(
                    f"must be a redis://, rediss:// or unix:// URL, got scheme {scheme!r}"
                )
        return value


class ApiSettings(BaseModel):
    """HTTP API process (``CROSSROUTE_API__*``). Limits apply to every request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    """Bind address; loopback by default, set ``0.0.0.0`` only behind a proxy or in a container."""
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    max_body_bytes: Annotated[int, Field(gt=0)] = 12 * 1024 * 1024
    max_image_bytes: Annotated[int, Field(gt=0)] = 8 * 1024 * 1024
    max_image_pixels: Annotated[int, Field(gt=0)] = 40_000_000
    max_text_chars: Annotated[int, Field(gt=0)] = 20_000


class RouterSettings(ProcessSettings):
    """Settings of the HTTP API process (``crossroute api``), read once at its entry point."""

    well_known_env: ClassVar[dict[str, tuple[str, str]]] = {"REDIS_URL": ("redis", "url")}

    redis: RedisSettings = RedisSettings()
    model: ModelSettings = ModelSettings()
    api: ApiSettings = ApiSettings()
