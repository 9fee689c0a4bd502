"""The embedded dev stack: a real Apache Kafka broker (KRaft) and a real Redis Stack server.

Both bind 127.0.0.1 only and keep data, logs and PID files under one state folder::

    <state_dir>/kafka/{data/, server.properties, log4j2.yaml, cluster.id, kafka.log, kafka.pid}
    <state_dir>/kafka/tls/{broker.p12, ca.pem}     (only for a SASL_SSL listener)
    <state_dir>/redis/{data/, redis.log, redis.pid}

Clients use the PLAINTEXT listener. ``StackSettings.kafka_sasl_port`` adds a SASL listener
(SASL_PLAINTEXT, or SASL_SSL with ``kafka_sasl_tls``) whose SCRAM users
:meth:`DevStack.add_scram_user` creates, to run clients the way they run against a secured cluster.

When ``KAFKA_BOOTSTRAP_SERVERS`` / ``REDIS_URL`` (or their ``CROSSROUTE_*`` forms) are set, that
service is *external*: ``up`` starts nothing for it and only checks it can be reached.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import redis
from pydantic import SecretStr

from models.progress import Progress, no_progress
from router.acl import ROLES, Role, acl_user_rules
from router.connection import redis_url, reply_text
from router.settings import IndexSettings, RedisSettings, redact_url
from streams.connections import kafka_bootstrap
from streams.devstack.artifacts import (
    check_java,
    ensure_kafka_jars,
    ensure_libssl,
    find_redis_stack,
    kafka_version,
)
from streams.devstack.envfile import read_env_file, write_env_file
from streams.devstack.kafka import (
    ScramMechanismName,
    create_scram_user,
    ensure_keystore,
    kafka_reachable,
    new_cluster_id,
    sasl_protocol,
    server_properties,
    tls_dir,
)
from streams.devstack.process import ManagedProcess, require_free_port
from streams.devstack.tls import TlsFiles, ensure_tls_files
from streams.exceptions import ServiceUnavailableError, StackError
from streams.settings import KafkaSettings, StackSettings, WorkerSettings

__all__ = ["DevStack", "ServiceName", "ServiceStatus"]

ServiceName = Literal["kafka", "redis"]


_LOADING = "loading its dataset from disk"


@dataclass(frozen=True)
class ServiceStatus:
    """Health of one service of the stack, as ``crossroute stack status`` prints it."""

    name: ServiceName
    mode: Literal["embedded", "external"]
    endpoint: str
    """host:port (Kafka) or the URL with any password masked (Redis)."""
    healthy: bool
    pid: int | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class DevStack:
    """Install, start, probe and stop the dev stack.

    Args:
        stack: ports, folders and executables of the embedded services.
        kafka: the Kafka section; a set ``bootstrap_servers`` makes Kafka external.
        redis: the Redis section; a set ``url`` makes Redis external.
        progress: called with a short line before each slow step (downloads, waits).
        index: the namespace and alias the Redis users of ``redis_users`` are confined to.
    """

    def __init__(
        self,
        stack: StackSettings,
        kafka: KafkaSettings,
        redis_settings: RedisSettings,
        *,
        progress: Progress = no_progress,
        index: IndexSettings | None = None,
    ) -> None:
        self.settings = stack
        self.kafka_settings = kafka
        self.redis_settings = redis_settings
        self.index_settings = index or IndexSettings()
        self._progress = progress
        state = stack.state_dir
        self._kafka = ManagedProcess(
            "kafka", state / "kafka" / "kafka.pid", state / "kafka" / "kafka.log"
        )
        self._redis = ManagedProcess(
            "redis", state / "redis" / "redis.pid", state / "redis" / "redis.log"
        )

    @classmethod
    def from_settings(
        cls, settings: WorkerSettings, *, progress: Progress = no_progress
    ) -> DevStack:
        """Build the stack from a process's settings."""
        return cls(
            settings.stack, settings.kafka, settings.redis, progress=progress, index=settings.index
        )

    # -- endpoints -------------------------------------------------------------------------------

    @property
    def kafka_external(self) -> bool:
        """Whether Kafka is provided from outside (``up`` does not start it)."""
        return self.kafka_settings.bootstrap_servers is not None

    @property
    def redis_external(self) -> bool:
        """Whether Redis is provided from outside (``up`` does not start it)."""
        return self.redis_settings.url is not None

    def kafka_bootstrap(self) -> str:
        """Bootstrap servers clients should use (:func:`streams.connections.kafka_bootstrap`)."""
        return kafka_bootstrap(self.kafka_settings, self.settings)

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """A confluent-kafka config for this stack's broker (secrets in plaintext: clients only)."""
        return self.kafka_settings.as_librdkafka(self.kafka_bootstrap(), **extra)

    def kafka_sasl_bootstrap(self) -> str:
        """The embedded broker's SASL listener (``StackSettings.kafka_sasl_port``)."""
        if self.kafka_external or self.settings.kafka_sasl_port is None:
            raise StackError("the embedded broker has no SASL listener (kafka_sasl_port unset)")
        return f"{self.settings.host}:{self.settings.kafka_sasl_port}"

    def add_scram_user(
        self, username: str, password: SecretStr, mechanism: ScramMechanismName = "SCRAM-SHA-256"
    ) -> KafkaSettings:
        """Create (or update) a SCRAM user of the embedded broker's SASL listener, and wait until
        the listener accepts it.

        Returns:
            The Kafka settings a client of the SASL listener uses (its bootstrap and the user).

        Raises:
            StackError: the broker has no SASL listener, or does not accept the user in time.
        """
        tls = self.settings.kafka_sasl_tls
        sasl = KafkaSettings(
            bootstrap_servers=self.kafka_sasl_bootstrap(),
            security_protocol=sasl_protocol(self.settings),
            sasl_mechanism=mechanism,
            sasl_username=username,
            sasl_password=password,
            ssl_ca_file=tls_dir(self.settings) / "ca.pem" if tls else None,
            client_id=self.kafka_settings.client_id,
        )
        create_scram_user(self.kafka_config(), username, password, mechanism)
        deadline = time.monotonic() + self.settings.start_timeout_s
        detail = ""
        while time.monotonic() < deadline:  # the credential reaches the listener asynchronously
            healthy, detail = kafka_reachable(sasl, 2.0)
            if healthy:
                return sasl
            time.sleep(0.25)
        raise StackError(
            f"kafka: SCRAM user {username!r} not accepted by the SASL listener: {detail}"
        )

    def redis_tls_files(self) -> TlsFiles:
        """The CA, certificate and key of the TLS port (made on first use)."""
        return ensure_tls_files(self.settings.state_dir / "redis" / "tls", self.settings.host)

    def redis_tls_url(self) -> str:
        """``rediss://`` URL of the embedded Redis's TLS port (clients trust
        ``redis_tls_files().ca``).

        Raises:
            StackError: the stack has no TLS port (``CROSSROUTE_STACK__REDIS_TLS_PORT``).
        """
        if self.settings.redis_tls_port is None:
            raise StackError("the dev stack serves no Redis TLS port (redis_tls_port unset)")
        return f"rediss://{self.settings.host}:{self.settings.redis_tls_port}/0"

    def add_redis_user(self, role: Role, namespace: str, *, user: str | None = None,
                       password: str | None = None) -> str:  # fmt: skip
        """Create (or reset) a least-privilege Redis user of ``role`` over ``namespace``
        (:mod:`router.acl`) through the admin connection; return its URL (``rediss://`` on the TLS
        port when there is one; it holds the password: never log it).

        Args:
            user: its name (default ``crossroute-<role>``).
            password: its password (default: a new random one).
        """
        name = user or f"crossroute-{role}"
        password = password or secrets.token_hex(24)
        rules = acl_user_rules(role, namespace, self.index_settings.alias, password)
        client = redis.Redis.from_url(self.redis_url(), socket_timeout=10)
        try:
            client.execute_command("ACL", "SETUSER", name, "reset", *rules)  # type: ignore[no-untyped-call]
        finally:
            client.close()
        split = urlsplit(
            self.redis_tls_url() if self.settings.redis_tls_port is not None else self.redis_url()
        )
        return f"{split.scheme}://{name}:{password}@{split.hostname}:{split.port}/0"

    def redis_user_files(self) -> dict[Role, Path]:
        """Where ``redis_users`` keeps each role's settings (an env file)."""
        folder = self.settings.state_dir / "redis" / "users"
        return {role: folder / f"{role}.env" for role in ROLES}

    def ensure_redis_users(self) -> dict[Role, Path]:
        """Create the ``worker`` and ``api`` users over the index namespace with the passwords of
        their env files (made on first use, 0600) and return the files: ACL users live in memory,
        so every ``up`` sets them again."""
        files = self.redis_user_files()
        for role, path in files.items():
            old = read_env_file(path).get("CROSSROUTE_REDIS__URL")
            password = urlsplit(old).password if old else None
            url = self.add_redis_user(role, self.index_settings.namespace, password=password)
            values = {"CROSSROUTE_REDIS__URL": url}
            if self.settings.redis_tls_port is not None:
                values["CROSSROUTE_REDIS__TLS_CA_FILE"] = str(self.redis_tls_files().ca)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_env_file(path, values, f"crossroute stack up: the {role}'s Redis user")
        return files

    def redis_url(self) -> str:
        """Redis URL clients should use (:func:`router.connection.redis_url`; may contain a
        password: do not log it)."""
        return redis_url(self.redis_settings, self.settings)

    # -- lifecycle -------------------------------------------------------------------------------

    def install(self) -> None:
        """Fetch everything the embedded services need (idempotent; cached across state dirs)."""
        if not self.kafka_external:
            check_java(self.settings.java)
            ensure_kafka_jars(self.settings.cache_dir, self.settings.mvn, self._progress)
        if not self.redis_external:
            find_redis_stack()
            ensure_libssl(self.settings.cache_dir, self.settings.libssl_deb, self._progress)

    def up(self) -> list[ServiceStatus]:
        """Start what is not running, wait until every service is healthy, return the statuses.

        Raises:
            ConfigurationError: Java, Maven or the Redis wheel is missing.
            PortInUseError: a port is taken by a process that is not ours.
            StackError: a service did not become healthy in time (the message names its log).
            ServiceUnavailableError: an external service cannot be reached.
        """
        # Fail fast on an unreachable external service, before starting anything.
        services: tuple[ServiceName, ...] = ("kafka", "redis")
        for name in services:
            if self._is_external(name):
                self._require_external(name)
        self.install()
        started: list[ManagedProcess] = []
        try:
            if not self.kafka_external and self._kafka.pid() is None:
                self._start_kafka()
                started.append(self._kafka)
            if not self.redis_external and self._redis.pid() is None:
                self._start_redis()
                started.append(self._redis)
            waiting: tuple[ServiceName, ...] = ("redis", "kafka")
            for service in waiting:  # each its own timeout: Redis may have loaded for minutes
                if not self._is_external(service):
                    self._wait_healthy(service)
            if self.settings.redis_users and not self.redis_external:
                self.ensure_redis_users()
        except BaseException:
            for proc in started:
                proc.stop(timeout_s=10)
            raise
        return self.status()

    def down(self, *, purge: bool = False) -> list[ServiceName]:
        """Stop the processes this stack started; with ``purge`` also delete their data.

        Returns:
            The services that were running and have been stopped.
        """
        stopped: list[ServiceName] = []
        if self._redis.stop():
            stopped.append("redis")
        if self._kafka.stop(timeout_s=60):
            stopped.append("kafka")
        if purge and self.settings.state_dir.exists():
            shutil.rmtree(self.settings.state_dir)
        return stopped

    def restart(self, name: ServiceName, while_down: Callable[[], None] | None = None) -> None:
        """Stop one embedded service and start it again on the same data (for recovery tests).

        Args:
            name: the service.
            while_down: called after the stop and before the start (e.g. to wait until a client
                has noticed the outage).
        """
        if self._is_external(name):
            raise StackError(f"{name} is external: the dev stack cannot restart it")
        self._process(name).stop(timeout_s=60)
        if while_down is not None:
            while_down()
        if name == "kafka":
            self._start_kafka()
        else:
            self._start_redis()
        self._wait_healthy(name)

    def status(self) -> list[ServiceStatus]:
        """Probe both services (a few seconds at most each)."""
        return [self._probe("kafka"), self._probe("redis")]

    # -- kafka -----------------------------------------------------------------------------------

    def _start_kafka(self) -> None:
        s = self.settings
        java = check_java(s.java)
        libs = ensure_kafka_jars(s.cache_dir, s.mvn, self._progress)
        require_free_port("kafka", s.host, s.kafka_port)
        require_free_port("kafka", s.host, s.kafka_controller_port)
        if s.kafka_sasl_port is not None:
            require_free_port("kafka", s.host, s.kafka_sasl_port)
            if s.kafka_sasl_tls:
                ensure_keystore(java, s)
        home = s.state_dir / "kafka"
        data = home / "data"
        home.mkdir(parents=True, exist_ok=True)
        props = home / "server.properties"
        props.write_text(server_properties(s, data))
        log4j = home / "log4j2.yaml"
        log4j.write_bytes(resources.files("streams.devstack").joinpath("log4j2.yaml").read_bytes())
        classpath = f"{libs}/*"
        if not (data / "meta.properties").exists():
            self._format_kafka(java, classpath, props, home)
        self._progress(f"starting Apache Kafka {kafka_version()} on {s.host}:{s.kafka_port}")
        argv = [
            java, f"-Xmx{s.kafka_heap}", "-Xms64m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath, "kafka.Kafka", str(props),
        ]  # fmt: skip
        self._kafka.start(argv, env=os.environ, cwd=home)

    def _format_kafka(self, java: str, classpath: str, props: Path, home: Path) -> None:
        id_file = home / "cluster.id"
        # (storage not formatted yet: an id left by an earlier failed format may be replaced)
        if not id_file.exists() or id_file.read_text().strip().startswith("-"):
            id_file.write_text(new_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        argv = [
            java, "-Xmx256m", f"-Dlog4j2.configurationFile={home / 'log4j2.yaml'}", "-cp", classpath,
            "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
            "--ignore-formatted",
        ]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if out.returncode != 0:
            tail = (out.stdout + out.stderr).strip().splitlines()[-3:]
            raise StackError("kafka: formatting the KRaft storage failed: " + " | ".join(tail))

    def _kafka_healthy(self, timeout_s: float) -> tuple[bool, str]:
        return kafka_reachable(self.kafka_settings, timeout_s, self.kafka_bootstrap())

    # -- redis -----------------------------------------------------------------------------------

    def _start_redis(self) -> None:
        s = self.settings
        files = find_redis_stack()
        libssl = ensure_libssl(s.cache_dir, s.libssl_deb, self._progress)
        require_free_port("redis", s.host, s.redis_port)
        home = s.state_dir / "redis"
        (home / "data").mkdir(parents=True, exist_ok=True)
        self._progress(f"starting Redis Stack on {s.host}:{s.redis_port}")
        argv = [
            str(files.redis_server), "--bind", s.host, "--port", str(s.redis_port),
            "--protected-mode", "yes", "--daemonize", "no", "--dir", str(home / "data"),
            # Append-only file: the index survives a restart (RediSearch re-indexes on load).
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        ]  # fmt: skip
        for module in files.modules:
            argv += ["--loadmodule", str(module)]
        if s.redis_tls_port is not None:
            require_free_port("redis TLS", s.host, s.redis_tls_port)
            tls = self.redis_tls_files()
            argv += [
                "--tls-port", str(s.redis_tls_port), "--tls-cert-file", str(tls.cert),
                "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca),
                "--tls-auth-clients", "optional",  # TLS for privacy; ACL users authenticate
            ]  # fmt: skip
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(libssl), env.get("LD_LIBRARY_PATH", "")) if p
        )
        self._redis.start(argv, env=env, cwd=home)

    def _redis_healthy(self, timeout_s: float) -> tuple[bool, str]:
        client = redis.Redis.from_url(
            self.redis_url(), socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        try:
            client.ping()
            modules = {reply_text(m.get(b"name", m.get("name", ""))) for m in client.module_list()}
            version = client.info("server").get("redis_version", "?")
        except redis.BusyLoadingError:
            return False, _LOADING
        except redis.RedisError as e:
            return False, f"unreachable: {e}"
        finally:
            client.close()
        if "search" not in modules:
            return False, f"Redis {version} is up but has no RediSearch module (FT.* missing)"
        return True, f"Redis {version}, modules: {', '.join(sorted(modules))}"

    # -- shared ----------------------------------------------------------------------------------

    def _endpoint(self, name: ServiceName) -> str:
        if name == "kafka":
            return self.kafka_bootstrap()
        return redact_url(self.redis_url())

    def _probe(self, name: ServiceName) -> ServiceStatus:
        external = self._is_external(name)
        pid = None if external else self._process(name).pid()
        if not external and pid is None:
            healthy, detail = False, "not running (crossroute stack up)"
        else:
            healthy, detail = self._health(name, 3.0)
        return ServiceStatus(
            name=name,
            mode="external" if external else "embedded",
            endpoint=self._endpoint(name),
            healthy=healthy,
            pid=pid,
            detail=detail,
        )

    def _is_external(self, name: ServiceName) -> bool:
        return self.kafka_external if name == "kafka" else self.redis_external

    def _process(self, name: ServiceName) -> ManagedProcess:
        return self._kafka if name == "kafka" else self._redis

    def _health(self, name: ServiceName, timeout_s: float) -> tuple[bool, str]:
        probe = self._kafka_healthy if name == "kafka" else self._redis_healthy
        return probe(timeout_s)

    def _require_external(self, name: ServiceName) -> None:
        healthy, detail = self._health(name, 5.0)
        if not healthy:
            raise ServiceUnavailableError(
                f"{name}: external service at {self._endpoint(name)} is {detail}"
            )

    def _wait_healthy(self, name: ServiceName) -> None:
        """Wait up to ``start_timeout_s`` (restarted while Redis reports it is loading)."""
        deadline = time.monotonic() + self.settings.start_timeout_s
        proc = self._process(name)
        self._progress(f"waiting for {name} to become healthy")
        detail = ""
        said = 0.0
        while time.monotonic() < deadline:
            if proc.exited():
                raise StackError(
                    f"{name} exited during start; see {proc.log_file}: {proc.log_tail(3)}"
                )
            healthy, detail = self._health(name, 2.0)
            if healthy:
                return
            if detail == _LOADING:  # progress, not a hang: a large index takes minutes to load
                deadline = max(deadline, time.monotonic() + self.settings.start_timeout_s)
                if time.monotonic() - said > 15:
                    self._progress(f"{name} is {_LOADING} (a large index takes a while)")
                    said = time.monotonic()
            time.sleep(0.25)
        raise StackError(
            f"{name} not healthy after {self.settings.start_timeout_s:.0f} s ({detail}); "
            f"see {proc.log_file}"
        )
