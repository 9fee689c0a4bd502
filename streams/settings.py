"""Settings of the streaming layer: the Kafka and dev-stack sections and the worker process.

Env names: ``CROSSROUTE_`` + section + ``__`` + field, e.g. ``CROSSROUTE_KAFKA__BOOTSTRAP_SERVERS``,
``CROSSROUTE_STACK__REDIS_PORT``. The conventional ``KAFKA_BOOTSTRAP_SERVERS`` and ``REDIS_URL`` are
honoured when the prefixed names are unset; when either is set, the dev stack leaves that service alone.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from models.settings import ModelSettings, ProcessSettings, xdg_dir
from router.settings import (
    ApiSettings,
    DevStackEndpoints,
    GateSettings,
    IndexSettings,
    RedisSettings,
    RoutingSettings,
)
from streams.exceptions import ConfigurationError

__all__ = [
    "ConsumerSettings",
    "KafkaSettings",
    "StackSettings",
    "TopicSettings",
    "WorkerSettings",
]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(BaseModel):
    """Kafka connection (``CROSSROUTE_KAFKA__*``, or ``KAFKA_BOOTSTRAP_SERVERS``).

    One description of the connection, rendered for both clients: :meth:`as_librdkafka` for
    confluent-kafka (admin, producers, consumers) and :meth:`as_faust` for the worker's faust app
    (aiokafka underneath). Secrets are :class:`~pydantic.SecretStr`: they appear in plaintext only in
    what those two methods return, never in ``repr`` or logs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str | None = None
    """``host:port[,host:port]``; unset means the embedded dev stack's broker."""
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_file: Path | None = None
    """PEM bundle of the CAs that sign the brokers' certificates; unset: the system's CAs."""
    ssl_cert_file: Path | None = None
    """PEM client certificate, for brokers that authenticate clients by TLS (needs ssl_key_file)."""
    ssl_key_file: Path | None = None
    """PEM private key of ``ssl_cert_file``."""
    ssl_key_password: SecretStr | None = None
    """Password of an encrypted ``ssl_key_file``."""
    client_id: str = "crossroute"

    @property
    def uses_sasl(self) -> bool:
        """Whether the protocol authenticates with SASL (SASL_PLAINTEXT, SASL_SSL)."""
        return self.security_protocol.startswith("SASL")

    @property
    def uses_ssl(self) -> bool:
        """Whether the protocol encrypts with TLS (SSL, SASL_SSL)."""
        return self.security_protocol.endswith("SSL")

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        sasl = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_username": self.sasl_username,
            "sasl_password": self.sasl_password,
        }
        if self.uses_sasl and not all(sasl.values()):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, sasl_username "
                "and sasl_password"
            )
        _only_with(self.uses_sasl, sasl, self.security_protocol, "SASL_PLAINTEXT or SASL_SSL")
        return self

    @model_validator(mode="after")
    def _tls_files(self) -> KafkaSettings:
        tls = {
            "ssl_ca_file": self.ssl_ca_file,
            "ssl_cert_file": self.ssl_cert_file,
            "ssl_key_file": self.ssl_key_file,
            "ssl_key_password": self.ssl_key_password,
        }
        _only_with(self.uses_ssl, tls, self.security_protocol, "SSL or SASL_SSL")
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("ssl_cert_file and ssl_key_file go together: set both or neither")
        if self.ssl_key_password is not None and self.ssl_key_file is None:
            raise ValueError("ssl_key_password is set but ssl_key_file is not")
        for name, path in self._tls_paths():
            if not path.is_file():
                raise ValueError(f"{name} {path} is not a readable file")
        return self

    def _tls_paths(self) -> list[tuple[str, Path]]:
        """The TLS files that are set, with their field names."""
        names = ("ssl_ca_file", "ssl_cert_file", "ssl_key_file")
        return [(name, path) for name in names if (path := getattr(self, name)) is not None]

    def as_librdkafka(self, bootstrap_servers: str, **extra: Any) -> dict[str, Any]:
        """Return a confluent-kafka config dict. Secrets appear in plaintext only here.

        Args:
            bootstrap_servers: the resolved servers (settings value or the dev stack's).
            **extra: further librdkafka keys (dots as in librdkafka, e.g. ``{"group.id": ...}``).
        """
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username
            assert self.sasl_password is not None  # noqa: S101  # guaranteed by _sasl_complete
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        tls = {
            "ssl.ca.location": self.ssl_ca_file,
            "ssl.certificate.location": self.ssl_cert_file,
            "ssl.key.location": self.ssl_key_file,
        }
        conf.update({key: str(path) for key, path in tls.items() if path is not None})
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        conf.update(extra)
        return conf

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of an SSL protocol (None for the others): verifies the brokers against
        ``ssl_ca_file`` (or the system's CAs) including their host names, and presents the client
        certificate when one is set.

        Raises:
            ConfigurationError: a TLS file cannot be loaded (not PEM, wrong key password).
        """
        if not self.uses_ssl:
            return None
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH,
                cafile=str(self.ssl_ca_file) if self.ssl_ca_file else None,
            )
            if self.ssl_cert_file is not None:
                password = self.ssl_key_password
                context.load_cert_chain(
                    self.ssl_cert_file,
                    self.ssl_key_file,
                    password.get_secret_value() if password else None,
                )
        except (ssl.SSLError, OSError) as e:
            files = ", ".join(f"{name} {path}" for name, path in self._tls_paths())
            raise ConfigurationError(f"kafka: cannot load the TLS files ({files}): {e}") from e
        return context

    def as_faust(self, bootstrap_servers: str) -> dict[str, Any]:
        """Return the ``faust.App`` keyword arguments of this connection: ``broker``,
        ``broker_client_id`` and, unless PLAINTEXT, ``broker_credentials`` (faust hands the
        protocol, SASL mechanism and credentials, and the TLS context to aiokafka).

        Args:
            bootstrap_servers: the resolved servers (settings value or the dev stack's).

        Raises:
            ConfigurationError: a TLS file cannot be loaded.
        """
        import faust

        servers = [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
        options: dict[str, Any] = {
            "broker": [f"kafka://{server}" for server in servers],
            "broker_client_id": self.client_id,
        }
        context = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_password is not None  # noqa: S101  # guaranteed by _sasl_complete
            # SASLCredentials: SASL_PLAINTEXT, or SASL_SSL when it is given a TLS context
            options["broker_credentials"] = faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.get_secret_value(),
                mechanism=self.sasl_mechanism,
                ssl_context=context,
            )
        elif context is not None:
            options["broker_credentials"] = faust.SSLCredentials(context)
        return options


def _only_with(allowed: bool, fields: Mapping[str, object], protocol: str, protocols: str) -> None:
    """Refuse fields that the security protocol would silently ignore."""
    present = [name for name, value in fields.items() if value is not None]
    if present and not allowed:
        raise ValueError(f"{', '.join(present)} need security_protocol {protocols}, not {protocol}")


class TopicSettings(BaseModel):
    """Topic names, partitions and retention (``CROSSROUTE_TOPICS__*``).

    Entity topics (products, articles, warranty policies) are compacted: keyed by ``tenant/id``, they
    are the source of truth a reindex replays. The others are time-retained streams. Each name
    field is a topic role (``streams.topics.ROLES``, what ``crossroute publish`` calls a kind).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: Annotated[str, Field(pattern=r"^[a-zA-Z0-9._-]{0,100}$")] = "crossroute."
    products: str = "products"
    articles: str = "articles"
    warranty_policies: str = "warranty-policies"
    media: str = "media"
    tickets: str = "tickets"
    decisions: str = "routing-decided"
    human_queue: str = "human-queue"
    feedback: str = "feedback"
    dead_letters: str = "dead-letters"
    partitions: Annotated[int, Field(ge=1, le=1000)] = 3
    replication_factor: Annotated[int, Field(ge=1, le=16)] = 1
    """1 for the single-broker dev stack; 3 in production."""
    retention_ms: Annotated[int, Field(ge=-1)] = 7 * 24 * 3600 * 1000
    """Retention of the non-compacted topics (-1: forever)."""

    def name(self, role: str) -> str:
        """The full topic name of a role (``products``, ``dead_letters``, …)."""
        return self.prefix + str(getattr(self, role))


class ConsumerSettings(BaseModel):
    """The worker's consumption (``CROSSROUTE_WORKER__*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    group_id: Annotated[str, Field(pattern=r"^[a-zA-Z0-9._-]{1,200}$")] = "crossroute-worker"
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 64
    """Events per batch (embedding and Redis writes are batched)."""
    batch_window_s: Annotated[float, Field(gt=0, le=60)] = 0.2
    """A partial batch is processed after this long. The window starts when the previous batch is
    done, so under load a batch cycle is about ``window / (1 - utilisation)``; freshness grows with
    it (docs/performance.md: 0.5 s gave p95 2.8 s at half load, 0.2 s 0.8 s, at the same capacity)."""
    buffer_events: Annotated[int, Field(ge=1, le=100_000)] = 256
    """Events each agent may hold fetched but not yet processed (faust's stream buffer); when
    processing stalls (Redis slow or down) the consumer pauses its partitions at this bound, so the
    worker's memory stays about ``buffer_events`` x the event size (faust's default is 4096;
    docs/reliability.md measures both). At least ``batch_size``."""
    retry_initial_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    retry_max_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    """Backoff bounds for retryable failures (Redis down or timing out, errors marked ``retryable``:
    ``streams.pipeline.is_retryable``); the batch is retried, not committed, for as long as it
    takes."""
    tenants: tuple[str, ...] = ()
    """Tenants this deployment serves; events of any other go to the dead letters. Empty: all."""
    media_root: Path | None = None
    """Folder image URIs (file paths) in events are read from; unset: only inline images."""
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    """Prometheus metrics on METRICS_HOST:PORT; 0: off."""
    metrics_host: str = "127.0.0.1"
    """Where the metrics listen: loopback by default; ``0.0.0.0`` only on a private network (the
    compose file's, for the API's console)."""
    metrics_url: Annotated[str, Field(pattern=r"^https?://")] | None = None
    """Where the API's console reads the worker's metrics (its pipeline page); default
    ``http://127.0.0.1:{metrics_port}/metrics`` when ``metrics_port`` is set."""
    session_timeout_s: Annotated[float, Field(ge=6, le=300)] = 10.0
    """A worker that stops heartbeating (killed, hung) loses its partitions after this long."""
    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object per log line (structured logs for shippers)."""
    ticket_log_ttl_s: Annotated[int, Field(ge=60)] = 30 * 24 * 3600
    """How long a routed ticket's text is kept for its feedback (``router.feedback.TicketLog``); a
    ``resolved``/``escalated`` feedback that comes later is dead-lettered as ``unknown_ticket``."""
    resolved_exemplars: bool = True
    """``resolved`` feedback makes the ticket an exemplar of the article or policy that resolved
    it; false: it is only counted."""
    escalation_exemplars: bool = True
    """``escalated`` feedback makes the ticket an out-of-scope exemplar (it votes for the human
    queue); false: it is only counted (``CROSSROUTE_ROUTING__HUMAN_EXEMPLARS`` ignores those already
    indexed)."""

    @model_validator(mode="after")
    def _buffer_holds_a_batch(self) -> ConsumerSettings:
        if self.buffer_events < self.batch_size:
            raise ValueError(
                f"buffer_events ({self.buffer_events}) must be at least batch_size "
                f"({self.batch_size})"
            )
        return self

    def scrape_url(self) -> str | None:
        """The worker's metrics URL for the console (None: the worker exports none)."""
        if self.metrics_url is not None:
            return self.metrics_url
        return f"http://127.0.0.1:{self.metrics_port}/metrics" if self.metrics_port else None


class StackSettings(DevStackEndpoints):
    """The embedded dev stack (``CROSSROUTE_STACK__*``): where it keeps its files, which ports (its
    host and Redis port are :class:`~router.settings.DevStackEndpoints`', which the router reads)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state_dir: Path = Field(default_factory=lambda: xdg_dir("state") / "stack")
    """Data, logs and PID files of the running services."""
    cache_dir: Path = Field(default_factory=lambda: xdg_dir("cache"))
    """Downloaded artifacts shared by every state dir: Kafka jars, OpenSSL 1.1."""
    kafka_port: Annotated[int, Field(ge=1024, le=65535)] = 9092
    kafka_controller_port: Annotated[int, Field(ge=1024, le=65535)] = 9093
    kafka_sasl_port: Annotated[int, Field(ge=1024, le=65535)] | None = None
    """Also serve SASL (SCRAM-SHA-256/512) here; users: ``DevStack.add_scram_user``."""
    kafka_sasl_tls: bool = False
    """The SASL listener speaks SASL_SSL, with a certificate for the host that the stack makes
    (``<state_dir>/kafka/tls/``); off: SASL_PLAINTEXT."""
    kafka_acls: bool = False
    """Authorize the SASL listener's users by ACLs (KRaft ``StandardAuthorizer``): a user may
    do only what ``crossroute topics acl`` granted it; the loopback PLAINTEXT listener stays the
    stack's admin channel."""
    redis_users: bool = False
    """On ``stack up``, create the least-privilege Redis users ``crossroute-worker`` and
    ``crossroute-api`` over ``CROSSROUTE_INDEX__NAMESPACE`` (``router.acl``); each one's settings
    (``CROSSROUTE_REDIS__URL``, over TLS when ``redis_tls_port`` is set) in
    ``<state_dir>/redis/users/<role>.env`` (0600). The default user stays the admin channel."""
    redis_tls_port: Annotated[int, Field(ge=1024, le=65535)] | None = None
    """Also serve Redis over TLS here, with a certificate the stack makes
    (``<state_dir>/redis/tls/ca.crt`` is the CA to trust: ``CROSSROUTE_REDIS__TLS_CA_FILE``)."""
    kafka_heap: Annotated[str, Field(pattern=r"^[0-9]+[mg]$")] = "512m"
    """JVM heap of the broker (-Xmx); it shares two cores with everything else."""
    start_timeout_s: Annotated[float, Field(gt=0, le=600)] = 60.0
    java: str = "java"
    """Java 17+ executable (name on PATH or absolute path)."""
    mvn: str = "mvn"
    """Maven executable, used once to resolve the pinned Kafka jars."""
    libssl_deb: Path | None = None
    """A local ``libssl1.1`` .deb to use instead of downloading it (checked against the pinned hash)."""

    @model_validator(mode="after")
    def _distinct_ports(self) -> StackSettings:
        given = (self.kafka_port, self.kafka_controller_port, self.redis_port, self.kafka_sasl_port,
                 self.redis_tls_port)  # fmt: skip
        ports = [port for port in given if port is not None]
        if len(set(ports)) != len(ports):
            raise ValueError(
                "kafka_port, kafka_controller_port, redis_port, kafka_sasl_port and redis_tls_port "
                f"must differ: {ports}"
            )
        if self.kafka_sasl_tls and self.kafka_sasl_port is None:
            raise ValueError("kafka_sasl_tls needs kafka_sasl_port (the listener it secures)")
        if self.kafka_acls and self.kafka_sasl_port is None:
            raise ValueError("kafka_acls needs kafka_sasl_port (ACLs apply to its users)")
        return self


class WorkerSettings(ProcessSettings):
    """Settings of the worker process and of ``crossroute stack``, read once at the entry point."""

    well_known_env: ClassVar[dict[str, tuple[str, str]]] = {
        "KAFKA_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
        "REDIS_URL": ("redis", "url"),
    }

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    redis: RedisSettings = RedisSettings()
    model: ModelSettings = Field(default_factory=ModelSettings)
    index: IndexSettings = IndexSettings()
    routing: RoutingSettings = RoutingSettings()
    api: ApiSettings = ApiSettings()
    worker: ConsumerSettings = ConsumerSettings()
    gate: GateSettings = GateSettings()
    stack: StackSettings = Field(default_factory=StackSettings)
