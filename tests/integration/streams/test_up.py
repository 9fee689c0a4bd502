"""`crossroute up` / `down` on the real services: the supervisor starts the real worker and the real
API in the background against the session's Kafka and Redis (configured as external), a second `up`
starts nothing, and `down` stops exactly those two and leaves the services running."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from streams.devstack import DevStack
from streams.settings import WorkerSettings
from streams.supervisor import down, up
from tests.conftest import REPO
from tests.integration.conftest import free_port
from tests.unit.streams.test_supervisor import alive
from tests.unit.test_cli import run_cli


def test_up_runs_worker_and_api_and_down_stops_only_them(
    dev_stack: DevStack,
    default_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tag = f"up{uuid.uuid4().hex[:8]}"
    state = tmp_path / "state"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": dev_stack.kafka_bootstrap(),
        "REDIS_URL": dev_stack.redis_url(),
        "CROSSROUTE_MODEL__BUNDLE_DIR": str(default_bundle),
        "CROSSROUTE_TOPICS__PREFIX": f"{tag}.",
        "CROSSROUTE_TOPICS__PARTITIONS": "1",
        "CROSSROUTE_INDEX__NAMESPACE": tag,
        "CROSSROUTE_WORKER__GROUP_ID": tag,
        "CROSSROUTE_STACK__STATE_DIR": str(state),
        "CROSSROUTE_API__PORT": str(free_port()),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(REPO)  # the children import this checkout
    settings = WorkerSettings()
    try:
        states = up(settings, timeout_s=240)  # the children run `python -m streams.main ...`
        assert [(s.name, s.state) for s in states] == [
            ("kafka", "external"),
            ("redis", "external"),
            ("worker", "started"),
            ("api", "started"),
        ]
        worker, api = states[2], states[3]
        assert worker.pid is not None and api.pid is not None
        health = httpx.get(f"http://127.0.0.1:{settings.api.port}/healthz", timeout=10)
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok"
        assert alive(worker.pid)
        assert worker.log_file == state / "services" / "worker" / "worker.log"

        again = run_cli("up", "--json", env=env)  # the command: starts nothing new
        assert again.returncode == 0, again.stderr
        assert [(s["name"], s["state"], s["pid"]) for s in json.loads(again.stdout)[2:]] == [
            ("worker", "running", worker.pid),
            ("api", "running", api.pid),
        ]
        status = run_cli("status", env=env)
        assert status.returncode == 0 and str(worker.pid) in status.stdout, status.stdout

        stopped = run_cli("down", env=env)
        assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped: api, worker"
        assert not alive(worker.pid) and not alive(api.pid)
        assert down(settings) == []
        assert run_cli("status", env=env).returncode == 1  # both stopped
    finally:
        down(settings)
    # external services: the supervisor never started a dev stack, and the session one still runs
    assert not (state / "kafka").exists() and not (state / "redis").exists()
    assert all(s.healthy for s in dev_stack.status())
