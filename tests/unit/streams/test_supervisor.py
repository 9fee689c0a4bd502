"""The supervisor behind ``crossroute up|down``, with real background processes.

The worker and the API are played by a small real script (the entry command is the supervisor's one
seam for that), so starting, readiness, log tails and stopping by PID + start time are all real; the
dev stack is replaced by a fake whose "servers" are real ``sleep`` processes, so no Kafka or Redis is
needed here (tests/integration/streams/test_up.py runs the real worker and API).
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr

from router.settings import ApiSettings, RedisSettings
from streams import supervisor
from streams.devstack import ServiceStatus
from streams.settings import ConsumerSettings, KafkaSettings, StackSettings, WorkerSettings
from streams.supervisor import ServiceStartError, down, status, up

# Plays `crossroute worker` and `crossroute api`; FAKE_WORKER / FAKE_API pick a behaviour.
FAKE_ENTRY = """
import http.server, os, sys, time
cmd = sys.argv[1]
mode = os.environ.get("FAKE_" + cmd.upper(), "ok")
print(f"pid={os.getpid()} kafka={os.environ['CROSSROUTE_KAFKA__BOOTSTRAP_SERVERS']}", flush=True)
if mode == "crash":
    print(cmd + " failed: boom", file=sys.stderr, flush=True)
    sys.exit(3)
if cmd == "worker":
    if mode == "ok":
        time.sleep(0.3)
        # wrapped as rich wraps it in a log file
        print("worker crossroute-worker:\\nspace fake, index i, topics t*", file=sys.stderr, flush=True)
    while True:
        time.sleep(1)
host, port = sys.argv[sys.argv.index("--host") + 1], int(sys.argv[sys.argv.index("--port") + 1])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
time.sleep(0.3)
http.server.HTTPServer((host, port), Health).serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(pid: int) -> bool:
    """Whether process ``pid`` is running: it exists and is not a zombie (a process stopped by
    another one, e.g. `crossroute down`, stays a zombie until its parent, here the test, reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def _settings(tmp_path: Path, *, external: bool = True) -> WorkerSettings:
    return WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1" if external else None),
        redis=RedisSettings(url=SecretStr("redis://:secret@127.0.0.1:2/0") if external else None),
        stack=StackSettings(state_dir=tmp_path / "state"),
        api=ApiSettings(port=_free_port()),
        worker=ConsumerSettings(),
    )


def _pid_in_log(log: Path) -> int:
    return int(log.read_text().split("pid=")[1].split()[0])


@pytest.fixture
def entry(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_crossroute.py"
    script.write_text(FAKE_ENTRY)
    return [sys.executable, str(script)]


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[WorkerSettings]:
    settings = _settings(tmp_path)
    yield settings
    down(settings)


class NoStack:
    """Stands in for DevStack where both services are external: it must never be built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("DevStack constructed although Kafka and Redis are external")


class FakeStack:
    """A dev stack whose servers are real ``sleep`` processes; ``running`` is shared by instances."""

    running: ClassVar[dict[str, subprocess.Popen[bytes]]] = {}

    def __init__(
        self, stack: StackSettings, kafka: KafkaSettings, redis: RedisSettings, **_: Any
    ) -> None:
        self.settings = stack

    def status(self) -> list[ServiceStatus]:
        return [
            ServiceStatus(name, "embedded", "-", name in self.running, self._pid(name), "")
            for name in ("kafka", "redis")
        ]

    def up(self) -> list[ServiceStatus]:
        for name in ("kafka", "redis"):
            if name not in self.running:
                self.running[name] = subprocess.Popen(["sleep", "600"])
        return self.status()

    def _pid(self, name: str) -> int | None:
        proc = self.running.get(name)
        return None if proc is None else proc.pid


def _healthz(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


def test_up_starts_worker_then_api_and_down_stops_exactly_them(
    settings: WorkerSettings, entry: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "DevStack", NoStack)
    assert [s.state for s in status(settings)] == ["stopped", "stopped"]
    assert down(settings) == []
    assert not settings.stack.state_dir.exists()  # status and down create nothing
    lines: list[str] = []
    states = up(settings, entry=entry, timeout_s=30, progress=lines.append)

    assert [(s.name, s.state) for s in states] == [
        ("kafka", "external"),
        ("redis", "external"),
        ("worker", "started"),
        ("api", "started"),
    ]
    assert states[1].endpoint == "redis://:***@127.0.0.1:2/0"  # no password in the output
    worker, api = states[2], states[3]
    assert worker.pid is not None and api.pid is not None
    assert alive(worker.pid) and alive(api.pid)
    assert _healthz(settings.api.port) == 200
    services = settings.stack.state_dir / "services"
    assert worker.log_file == services / "worker" / "worker.log"
    assert api.log_file == services / "api" / "api.log"
    assert _pid_in_log(worker.log_file) == worker.pid
    assert any("starting worker" in line for line in lines)
    # the children got the resolved endpoints
    assert "kafka=127.0.0.1:1" in worker.log_file.read_text()
    assert [(s.name, s.state, s.pid) for s in status(settings)] == [
        ("worker", "running", worker.pid),
        ("api", "running", api.pid),
    ]

    again = up(settings, entry=entry, timeout_s=30)
    assert [(s.name, s.state, s.pid) for s in again[2:]] == [
        ("worker", "running", worker.pid),
        ("api", "running", api.pid),
    ]
    assert worker.log_file.read_text().count("pid=") == 1  # nothing started twice

    assert down(settings) == ["api", "worker"]
    assert not alive(worker.pid) and not alive(api.pid)
    assert down(settings) == []
    assert [s.state for s in status(settings)] == ["stopped", "stopped"]
    # external services: the dev stack wrote nothing
    assert sorted(p.name for p in settings.stack.state_dir.iterdir()) == ["services"]


def test_a_worker_that_exits_during_start_is_reported_with_its_log(
    settings: WorkerSettings, entry: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_WORKER", "crash")
    with pytest.raises(ServiceStartError, match=r"worker exited during start; see .*worker\.log: "):
        up(settings, entry=entry, timeout_s=30)
    with pytest.raises(ServiceStartError, match="worker failed: boom"):
        up(settings, entry=entry, timeout_s=30)
    assert [s.state for s in status(settings)] == ["stopped", "stopped"]
    assert not (settings.stack.state_dir / "services" / "api" / "api.log").exists()


def test_a_failed_api_stops_the_worker_this_up_started(
    settings: WorkerSettings, entry: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_API", "crash")
    with pytest.raises(ServiceStartError, match="api exited during start.*api failed: boom"):
        up(settings, entry=entry, timeout_s=30)
    worker_log = settings.stack.state_dir / "services" / "worker" / "worker.log"
    assert not alive(_pid_in_log(worker_log))
    assert [s.state for s in status(settings)] == ["stopped", "stopped"]


def test_an_api_port_taken_by_another_process_is_refused(
    settings: WorkerSettings, entry: list[str]
) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", settings.api.port))
        other.listen()
        with pytest.raises(ServiceStartError, match=r"port 127\.0\.0\.1:\d+ is already in use"):
            up(settings, entry=entry, timeout_s=30)
    worker_log = settings.stack.state_dir / "services" / "worker" / "worker.log"
    assert not alive(_pid_in_log(worker_log))


def test_worker_readiness_counts_only_this_starts_output(
    settings: WorkerSettings, entry: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = settings.stack.state_dir / "services" / "worker" / "worker.log"
    log.parent.mkdir(parents=True)
    log.write_text("worker crossroute-worker: space old, index i, topics t*\n")  # an earlier run
    monkeypatch.setenv("FAKE_WORKER", "silent")
    with pytest.raises(ServiceStartError, match=r"worker not ready after 2 s"):
        up(settings, entry=entry, timeout_s=2)
    assert not alive(_pid_in_log(log))


@pytest.fixture
def fake_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeStack]]:
    monkeypatch.setattr(supervisor, "DevStack", FakeStack)
    monkeypatch.setattr(FakeStack, "running", {})
    yield FakeStack
    for proc in FakeStack.running.values():
        proc.kill()
        proc.wait()


def test_down_stops_the_dev_stack_servers_up_started_and_no_other(
    tmp_path: Path, entry: list[str], fake_stack: type[FakeStack]
) -> None:
    settings = _settings(tmp_path, external=False)
    kafka = fake_stack.running["kafka"] = subprocess.Popen(["sleep", "600"])  # already running
    states = up(settings, entry=entry, timeout_s=30)

    assert [(s.name, s.state) for s in states] == [
        ("kafka", "running"),
        ("redis", "started"),
        ("worker", "started"),
        ("api", "started"),
    ]
    redis = fake_stack.running["redis"]
    assert states[1].pid == redis.pid
    assert states[0].log_file == settings.stack.state_dir / "kafka" / "kafka.log"
    worker_log = states[2].log_file
    # the children get the dev stack's endpoints, resolved from the settings
    dev_kafka = f"kafka={settings.stack.host}:{settings.stack.kafka_port}"
    assert worker_log is not None and dev_kafka in worker_log.read_text()
    assert [s.name for s in status(settings)] == ["redis", "worker", "api"]

    assert up(settings, entry=entry, timeout_s=30)[1].state == "running"
    assert down(settings) == ["api", "worker", "redis"]
    assert redis.wait(timeout=10) is not None
    assert kafka.poll() is None  # not started by up: left alone
    assert down(settings) == []
