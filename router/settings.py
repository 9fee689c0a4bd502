"""Settings of the routing layer: the Redis section, the HTTP API section, and the API process.

Env names: ``CROSSROUTE_`` + section + ``__`` + field, e.g. ``CROSSROUTE_REDIS__URL``,
``CROSSROUTE_API__PORT``. ``REDIS_URL`` is honoured too when the prefixed name is unset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from models.config import ImageLimits
from models.settings import ModelSettings, ProcessSettings
from router.schemas import MAX_INLINE_IMAGE_BYTES, MAX_TEXT_CHARS

__all__ = [
    "ApiSettings",
    "DevStackEndpoints",
    "GateSettings",
    "IndexSettings",
    "RedisSettings",
    "RouterSettings",
    "RoutingSettings",
    "redact_url",
]


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
    tls_ca_file: Path | None = None
    """PEM CA bundle that signed the server's certificate (``rediss://``; default: the system's)."""
    tls_cert_file: Path | None = None
    """PEM client certificate, for servers that authenticate clients by TLS (with tls_key_file)."""
    tls_key_file: Path | None = None
    """PEM private key of ``tls_cert_file``."""

    @model_validator(mode="after")
    def _tls_needs_rediss(self) -> RedisSettings:
        files = [self.tls_ca_file, self.tls_cert_file, self.tls_key_file]
        if any(files) and (
            self.url is None or urlsplit(self.url.get_secret_value()).scheme != "rediss"
        ):
            raise ValueError("tls_ca_file, tls_cert_file and tls_key_file need a rediss:// url")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self

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


class IndexSettings(BaseModel):
    """Vector index names and HNSW parameters (``CROSSROUTE_INDEX__*``).

    Dimension, dtype and metric are not here: they come from the model bundle's manifest.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")] = "crossroute"
    """Prefix of every key, index and alias name."""
    alias: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")] = "live"
    """The alias the API and the router read through; promotion flips it."""
    hnsw_m: Annotated[int, Field(ge=2, le=512)] = 16
    hnsw_ef_construction: Annotated[int, Field(ge=1, le=4096)] = 100
    hnsw_ef_runtime: Annotated[int, Field(ge=1, le=4096)] = 100
    tombstone_ttl_s: Annotated[int, Field(gt=0)] = 7 * 24 * 3600
    """How long a delete keeps refusing older upserts of the same entity (replays, late events)."""


Modality = Literal["text", "photo", "screenshot_text", "screenshot_image"]


class RoutingSettings(BaseModel):
    """Ticket routing (``CROSSROUTE_ROUTING__*``): fusion of the modalities and the abstain threshold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    k: Annotated[int, Field(ge=1, le=100)] = 5
    """Targets returned per ticket."""
    weights: dict[Modality, Annotated[float, Field(ge=0)]] = {
        "text": 1.0,
        "photo": 0.5,
        "screenshot_text": 1.0,
        "screenshot_image": 0.25,
    }
    """Fusion: the ticket's query vector is the normalised weighted sum of its modalities' vectors."""
    threshold: Annotated[float, Field(ge=-1, le=1)] | None = None
    """Abstain (human queue) when the best score is below this. Unset: the calibration recorded for
    the serving space by ``crossroute calibrate``, else ``default_threshold``."""
    default_threshold: Annotated[float, Field(ge=-1, le=1)] = 0.3
    product_match: Annotated[float, Field(ge=-1, le=1)] | None = 0.6
    """Routing through the catalog: a ticket photo whose cosine with one of the tenant's product
    documents reaches this identifies that product, and the documents written for its category
    become candidates with the match as their score (evidence ``catalog``). Unset: off. The
    default is the shipped head's precision-first point on public data (``bench/product_match.py``:
    re-photographed Myntra products, the nearest product's category right at every match ≥ 0.6)."""
    exemplar_rule: Literal["max", "prototype"] = "prototype"
    """How resolved tickets (exemplars) score their target: ``prototype``, the cosine with the
    normalised sum of the target's vector and all its exemplars' (a class centroid); ``max``, the
    best of its own cosine and its exemplars'. The rules of ``crossroute eval --exemplar-rule``;
    prototype measured better on every dataset by grouped cross-validation (docs/routing.md)."""
    human_exemplars: bool = True
    """Out-of-scope exemplars (escalated tickets) send a ticket closer to one of them than to any
    target to the human queue; false: they are ignored (the switch to roll them back at once)."""
    deployment_poll_s: Annotated[float, Field(gt=0, le=300)] = 2.0
    """How often a serving process (API, worker) reads the deployment record, to follow a
    promotion, a canary or a rollback without a restart."""
    calibration_dir: Path | None = None
    """Where ``crossroute calibrate`` writes ``{space_id}.json``; default
    ``$XDG_DATA_HOME/crossroute/calibration``."""


class GateSettings(BaseModel):
    """What the deployment gate tolerates (``CROSSROUTE_GATE__*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tolerance: Annotated[float, Field(ge=0, le=1)] = 0.03
    """Largest drop of recall@1 or recall@10, overall or in any judged slice, against the
    baseline."""
    significance: Annotated[float, Field(gt=0, le=1)] = 0.05
    """A slice's drop blocks only when a one-sided exact McNemar test on its queries gives p below
    this (1: any drop beyond tolerance blocks)."""
    min_slice_queries: Annotated[int, Field(ge=1)] = 20
    """A slice with fewer queries is listed as too small to judge (its noise exceeds tolerance)."""
    p95_budget_ms: Annotated[float, Field(gt=0)] = 500.0
    """Routing p95 on the candidate's index (embedding included; measured on this machine)."""
    latency_queries: Annotated[int, Field(ge=10)] = 100
    """Tickets routed to measure latency (the first of each eval dataset, in order)."""
    min_outcome_decisions: Annotated[int, Field(ge=1)] = 200
    """Decisions each space needs before its outcome rates can block or pass."""
    outcome_tolerance: Annotated[float, Field(ge=0, le=1)] = 0.05
    """Largest drop of resolution rate (or rise of escalation rate) against the baseline."""


class ApiSettings(BaseModel):
    """HTTP API process (``CROSSROUTE_API__*``). Limits apply to every request.

    A limit can be lowered freely; one above what the rest of crossroute accepts would not take
    effect and is refused: ``max_image_bytes`` above :data:`~router.schemas.MAX_INLINE_IMAGE_BYTES`
    or ``max_text_chars`` above :data:`~router.schemas.MAX_TEXT_CHARS` here, and image limits above
    the served bundle's decode limits when the API starts (``router.api.create_app``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    """Bind address; loopback by default, set ``0.0.0.0`` only behind a proxy or in a container."""
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    max_body_bytes: Annotated[int, Field(gt=0)] = 12 * 1024 * 1024
    """Largest request body (a JSON body carries its image base64: 4/3 of its bytes)."""
    max_image_bytes: Annotated[int, Field(gt=0)] = MAX_INLINE_IMAGE_BYTES
    """Largest image (a ticket's photo or screenshot, a search image)."""
    max_image_pixels: Annotated[int, Field(gt=0)] = ImageLimits().max_pixels
    """Largest width x height of an image, read from its header."""
    max_text_chars: Annotated[int, Field(gt=0)] = MAX_TEXT_CHARS
    """Longest ticket or search text."""
    auth: Literal["keys", "off"] = "keys"
    """``keys``: every call but ``/healthz`` needs an API key (``crossroute keys create``);
    ``off`` only for local development (the server warns at start)."""
    key_cache_s: Annotated[float, Field(ge=0, le=300)] = 5.0
    """How long a process trusts a key it read: a revocation takes effect within this."""
    rate_per_s: Annotated[float, Field(gt=0)] = 20.0
    """Requests per second a key may make (sustained; a key can carry its own)."""
    rate_burst: Annotated[int, Field(ge=1)] = 40
    """Requests a key may make at once before its rate applies."""
    max_concurrent: Annotated[int, Field(ge=1, le=256)] = 4
    """Requests embedding at once (each uses the encoders' threads)."""
    max_queued: Annotated[int, Field(ge=0, le=10_000)] = 32
    """Requests waiting for an embedding slot; one more is refused with 503 and Retry-After."""

    @model_validator(mode="after")
    def _within_what_crossroute_accepts(self) -> ApiSettings:
        problems = [
            f"{name} is {value}, over the {cap} {what}"
            for name, value, cap, what in (
                ("max_image_bytes", self.max_image_bytes, MAX_INLINE_IMAGE_BYTES,
                 "bytes a ticket can carry inline (MAX_INLINE_IMAGE_BYTES)"),
                ("max_text_chars", self.max_text_chars, MAX_TEXT_CHARS,
                 "characters of a ticket's text (MAX_TEXT_CHARS)"),
            )
            if value > cap
        ]  # fmt: skip
        if problems:
            raise ValueError("; ".join(problems) + ": a higher limit would not take effect")
        return self


class DevStackEndpoints(BaseModel):
    """Where the embedded dev stack's Redis listens (``CROSSROUTE_STACK__HOST``,
    ``CROSSROUTE_STACK__REDIS_PORT``): what a process connects to when no Redis URL is configured.

    The router reads only these fields of the ``stack`` section; ``streams.settings.StackSettings``
    extends this class with the rest of the dev stack's settings, so both read the same names.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    host: Literal["127.0.0.1"] = "127.0.0.1"
    """The dev stack binds loopback only."""
    redis_port: Annotated[int, Field(ge=1024, le=65535)] = 6379

    def redis_url(self) -> str:
        """The dev stack's Redis URL."""
        return f"redis://{self.host}:{self.redis_port}/0"


class RouterSettings(ProcessSettings):
    """Settings of the HTTP API process (``crossroute api``), read once at its entry point."""

    well_known_env: ClassVar[dict[str, tuple[str, str]]] = {"REDIS_URL": ("redis", "url")}

    redis: RedisSettings = RedisSettings()
    model: ModelSettings = Field(default_factory=ModelSettings)
    index: IndexSettings = IndexSettings()
    routing: RoutingSettings = RoutingSettings()
    api: ApiSettings = ApiSettings()
    stack: DevStackEndpoints = DevStackEndpoints()
    """Only where the dev stack's Redis listens: the default when ``REDIS_URL`` is unset."""
