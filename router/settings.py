"""Settings of the routing layer: the Redis section, the HTTP API section, and the API process.

Env names: ``CROSSROUTE_`` + section + ``__`` + field, e.g. ``CROSSROUTE_REDIS__URL``,
``CROSSROUTE_API__PORT``. ``REDIS_URL`` is honoured too when the prefixed name is unset.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from models.settings import ModelSettings, WellKnownEnvSource

__all__ = ["ApiSettings", "RedisSettings", "RouterSettings", "redact_url"]

ENV_PREFIX = "CROSSROUTE_"


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


class RouterSettings(BaseSettings):
    """Settings of the HTTP API process (``crossroute api``), read once at its entry point."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore", frozen=True
    )

    redis: RedisSettings = RedisSettings()
    model: ModelSettings = ModelSettings()
    api: ApiSettings = ApiSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        well_known = WellKnownEnvSource(settings_cls, {"REDIS_URL": ("redis", "url")})
        return init_settings, env_settings, well_known, file_secret_settings
