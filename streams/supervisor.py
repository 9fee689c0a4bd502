"""The whole deployment in the background: the engine of ``crossroute up`` and ``crossroute down``.

:func:`up` starts, in this order, what the deployment needs and is not running:

1. the embedded dev stack (:class:`~streams.devstack.DevStack`), only when Kafka or Redis is not
   configured as external (``KAFKA_BOOTSTRAP_SERVERS`` / ``REDIS_URL`` or their ``CROSSROUTE_*``
   forms); with both external the dev stack is never constructed;
2. the worker (``crossroute worker``);
3. the HTTP API (``crossroute api``), once the worker is ready: the API serves the ``live`` alias
   the worker creates, from the bundle the worker builds on its first start.

The worker and the API are detached processes (own session: closing the terminal does not stop them)
whose environment is this process's plus the resolved Kafka and Redis endpoints, so they use the
services ``up`` checked. Everything the supervisor records is in one folder::

    <state_dir>/services/
        .lock                      held while up/down run (two at once do not race)
        worker/{worker.pid, worker.log}
        api/{api.pid, api.log}
        kafka/kafka.pid            only if up started the embedded broker (log: <state_dir>/kafka/)
        redis/redis.pid            only if up started the embedded Redis  (log: <state_dir>/redis/)

A PID file holds the PID *and* the kernel start time of the process
(:class:`~streams.devstack.process.ManagedProcess`): :func:`down` signals only a process whose start
time still matches, never one found by name, and leaves alone a dev stack ``up`` did not start.

Readiness, and why it cannot be fooled:

- worker: its log, *from the byte offset it had before this start* (logs are appended across
  runs), contains the line the worker prints once the bundle is loaded, the topics declared and the
  index and ``live`` alias created, just before it starts consuming
  (``worker <group>: space …``), while the process is alive. An old run's line is before the offset.
- API: its port is free before the start (else :class:`ServiceStartError` at once, instead of taking
  another server's answer for ours), then ``GET /healthz`` answers 200 while our process is alive.

A process that exits during start-up raises :class:`ServiceStartError` with the tail of its log; the
processes this call started are then stopped again, so a failed ``up`` leaves nothing half-running.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from models.progress import Progress, no_progress
from router.connection import redis_url
from router.settings import redact_url
from streams.connections import dev_services, kafka_bootstrap
from streams.devstack import DevStack
from streams.devstack.process import ManagedProcess, port_in_use
from streams.exceptions import StreamsError
from streams.settings import WorkerSettings

__all__ = [
    "ENTRY_MODULE",
    "ServiceStartError",
    "ServiceState",
    "down",
    "entry_argv",
    "services_dir",
    "status",
    "up",
]

ENTRY_MODULE = "streams.main"
"""The module that assembles the ``crossroute`` CLI; the supervised processes run ``-m`` it."""

ServiceName = Literal["kafka", "redis", "worker", "api"]
State = Literal["started", "running", "stopped", "external"]

# Start order; down stops in the reverse order.
_ORDER: tuple[ServiceName, ...] = ("kafka", "redis", "worker", "api")
_STOP_TIMEOUT_S: dict[str, float] = {"kafka": 60.0, "redis": 30.0, "worker": 30.0, "api": 30.0}
_POLL_S = 0.25
# The line `crossroute worker` prints to stderr once wired (bundle, topics, index, `live` alias), just
# before it consumes: the worker is ready when this start's log contains it.
_WORKER_READY = "worker {group_id}: space "
# Where a server bound to every interface can be reached from here.
_PROBE_HOST = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


class ServiceStartError(StreamsError):
    """A supervised process exited during start-up, or was not ready in time."""


@dataclass(frozen=True)
class ServiceState:
    """One service of the deployment, as ``crossroute up`` / ``crossroute status`` print it."""

    name: ServiceName
    state: State
    """``started`` (by this call), ``running`` (already was), ``stopped``, ``external`` (not ours)."""
    pid: int | None
    endpoint: str
    """Kafka bootstrap, Redis URL (password masked), the worker's consumer group, the API's URL."""
    log_file: Path | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["log_file"] = None if self.log_file is None else str(self.log_file)
        return out


def entry_argv() -> list[str]:
    """The command that runs a ``crossroute`` subcommand: this interpreter, ``-m`` :data:`ENTRY_MODULE`."""
    return [sys.executable, "-m", ENTRY_MODULE]


def services_dir(settings: WorkerSettings) -> Path:
    """Where the supervisor keeps PID files and logs (``<state_dir>/services``)."""
    return settings.stack.state_dir / "services"


def _processes(settings: WorkerSettings) -> dict[ServiceName, ManagedProcess]:
    root = services_dir(settings)
    out: dict[ServiceName, ManagedProcess] = {}
    for name in _ORDER:
        # The dev stack's servers log where the stack puts them; ours log next to their PID file.
        home = settings.stack.state_dir / name if name in ("kafka", "redis") else root / name
        out[name] = ManagedProcess(name, root / name / f"{name}.pid", home / f"{name}.log")
    return out


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root/.lock`` (released when the file closes, even on a crash)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _stack(settings: WorkerSettings, progress: Progress) -> DevStack | None:
    """The dev stack, or ``None`` when both Kafka and Redis are external (it is never built then)."""
    if not dev_services(settings):
        return None
    return DevStack(settings.stack, settings.kafka, settings.redis, progress=progress)


def _endpoints(settings: WorkerSettings) -> tuple[str, str]:
    """Kafka bootstrap servers and Redis URL (with any password) the processes must use."""
    return (
        kafka_bootstrap(settings.kafka, settings.stack),
        redis_url(settings.redis, settings.stack),
    )


def _endpoints_shown(settings: WorkerSettings) -> dict[ServiceName, str]:
    """What each service's ``endpoint`` shows (no secrets)."""
    kafka, redis = _endpoints(settings)
    return {
        "kafka": kafka,
        "redis": redact_url(redis),
        "worker": f"consumer group {settings.worker.group_id}",
        "api": f"http://{settings.api.host}:{settings.api.port}",
    }


def up(
    settings: WorkerSettings,
    *,
    progress: Progress = no_progress,
    timeout_s: float = 600.0,
    entry: Sequence[str] | None = None,
) -> list[ServiceState]:
    """Start what the deployment needs and is not running; wait until each is ready.

    Args:
        settings: the deployment's settings (the supervised processes read the same environment).
        progress: called with a short line before each slow step.
        timeout_s: how long the worker, then the API, may take to become ready. The worker's first
            start builds the default model bundle (about a minute), hence the generous default.
        entry: the command prefix that runs a ``crossroute`` subcommand (default :func:`entry_argv`).

    Returns:
        The state of kafka, redis, worker and api, in that order.

    Raises:
        ServiceStartError: a process exited during start-up or was not ready in time (the message
            has its log's path and tail), or the API's port is taken by another process.
        StreamsError: the dev stack failed (see :meth:`DevStack.up`).
    """
    argv = list(entry) if entry is not None else entry_argv()
    procs = _processes(settings)
    started: list[ManagedProcess] = []
    with _locked(services_dir(settings)):
        try:
            stack = _stack(settings, progress)
            shown = _endpoints_shown(settings)
            states = _up_stack(stack, procs, started, shown)
            kafka, redis = _endpoints(settings)
            env = {
                **os.environ,
                # The prefixed names win over every other source of these two settings.
                "CROSSROUTE_KAFKA__BOOTSTRAP_SERVERS": kafka,
                "CROSSROUTE_REDIS__URL": redis,
            }
            start = _Starter(settings, procs, started, env, shown, progress, timeout_s)
            states.append(start.worker([*argv, "worker"]))
            host, port = settings.api.host, str(settings.api.port)
            states.append(start.api([*argv, "api", "--host", host, "--port", port]))
        except BaseException:
            for proc in reversed(started):
                proc.stop(timeout_s=_STOP_TIMEOUT_S[proc.name])
            raise
    return states


def _up_stack(
    stack: DevStack | None,
    procs: Mapping[ServiceName, ManagedProcess],
    started: list[ManagedProcess],
    shown: Mapping[ServiceName, str],
) -> list[ServiceState]:
    """Start the dev stack's missing servers; adopt (record) those this call started."""
    if stack is None:
        return [
            ServiceState(name, "external", None, shown[name], None) for name in ("kafka", "redis")
        ]
    before: dict[str, int | None] = {s.name: s.pid for s in stack.status()}
    states: list[ServiceState] = []
    for service in stack.up():
        name: ServiceName = service.name
        endpoint = shown[name]
        if service.mode == "external":
            states.append(ServiceState(name, "external", None, endpoint, None))
            continue
        proc = procs[name]
        state: State = "running"
        if before[name] is None and service.pid is not None and proc.adopt(service.pid):
            started.append(proc)
            state = "started"
        states.append(ServiceState(name, state, service.pid, endpoint, proc.log_file))
    return states


class _Starter:
    """Starts the worker and the API with one environment, recording what it started."""

    def __init__(
        self,
        settings: WorkerSettings,
        procs: Mapping[ServiceName, ManagedProcess],
        started: list[ManagedProcess],
        env: Mapping[str, str],
        shown: Mapping[ServiceName, str],
        progress: Progress,
        timeout_s: float,
    ) -> None:
        self.settings = settings
        self.procs = procs
        self.started = started
        self.env = env
        self.shown = shown
        self.progress = progress
        self.timeout_s = timeout_s

    def worker(self, argv: Sequence[str]) -> ServiceState:
        """Start the worker unless it runs; ready once this start's log shows it consuming."""
        marker = _WORKER_READY.format(group_id=self.settings.worker.group_id)

        def ready(proc: ManagedProcess, offset: int) -> tuple[bool, str]:
            # Rich wraps long lines in a log file: compare with whitespace collapsed.
            text = " ".join(proc.log_since(offset).split())
            return marker in text, "still preparing (a first start builds the model bundle)"

        return self._start("worker", argv, ready)

    def api(self, argv: Sequence[str]) -> ServiceState:
        """Start the API unless it runs; ready once ``/healthz`` answers 200."""
        api = self.settings.api
        if self.procs["api"].pid() is None and port_in_use(api.host, api.port):
            raise ServiceStartError(
                f"api: port {api.host}:{api.port} is already in use by another process; stop it "
                "or choose another port (CROSSROUTE_API__PORT)"
            )
        probe_host = _PROBE_HOST.get(api.host, api.host)

        def ready(_proc: ManagedProcess, _offset: int) -> tuple[bool, str]:
            return _healthz(probe_host, api.port)

        return self._start("api", argv, ready)

    def _start(
        self,
        name: ServiceName,
        argv: Sequence[str],
        ready: Callable[[ManagedProcess, int], tuple[bool, str]],
    ) -> ServiceState:
        proc = self.procs[name]
        endpoint = self.shown[name]
        pid = proc.pid()
        if pid is not None:
            return ServiceState(name, "running", pid, endpoint, proc.log_file)
        offset = proc.log_size()
        self.progress(f"starting {name} (log {proc.log_file})")
        pid = proc.start(argv, env=self.env, cwd=Path.cwd())
        self.started.append(proc)
        self.progress(f"waiting for {name} to be ready")
        deadline = time.monotonic() + self.timeout_s
        while True:
            if proc.exited():
                raise ServiceStartError(
                    f"{name} exited during start; see {proc.log_file}: "
                    f"{proc.log_tail(5, since=offset)}"
                )
            ok, detail = ready(proc, offset)
            if ok:
                return ServiceState(name, "started", pid, endpoint, proc.log_file)
            if time.monotonic() > deadline:
                raise ServiceStartError(
                    f"{name} not ready after {self.timeout_s:.0f} s ({detail}); see "
                    f"{proc.log_file}: {proc.log_tail(5, since=offset)}"
                )
            time.sleep(_POLL_S)


def _healthz(host: str, port: int, timeout_s: float = 2.0) -> tuple[bool, str]:
    """Whether ``GET /healthz`` on ``host:port`` answers 200, and what it answered."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", "/healthz")
        code = conn.getresponse().status
    except (OSError, http.client.HTTPException) as e:
        return False, f"/healthz not answering: {e}"
    finally:
        conn.close()
    return code == 200, f"/healthz answered {code}"


def down(settings: WorkerSettings) -> list[ServiceName]:
    """Stop what :func:`up` started, in reverse order: the API, the worker, then the dev stack's
    servers only if ``up`` started them. Processes are matched by PID and start time, never by name;
    calling it again stops nothing.

    Returns:
        The services that were running and have been stopped.
    """
    root = services_dir(settings)
    if not root.is_dir():
        return []
    procs = _processes(settings)
    stopped: list[ServiceName] = []
    with _locked(root):
        for name in reversed(_ORDER):
            if procs[name].stop(timeout_s=_STOP_TIMEOUT_S[name]):
                stopped.append(name)
    return stopped


def status(settings: WorkerSettings) -> list[ServiceState]:
    """The supervised processes: the worker and the API (``running`` or ``stopped``), and the dev
    stack's servers while they run because ``up`` started them. Probes nothing over the network."""
    procs = _processes(settings)
    shown = _endpoints_shown(settings)
    states: list[ServiceState] = []
    for name in _ORDER:
        proc = procs[name]
        pid = proc.pid()
        if pid is None and name in ("kafka", "redis"):
            continue
        state: State = "stopped" if pid is None else "running"
        states.append(ServiceState(name, state, pid, shown[name], proc.log_file))
    return states
