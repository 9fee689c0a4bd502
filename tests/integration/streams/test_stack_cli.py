"""`crossroute stack up|status|down` as a user runs it, on a second, private stack: both services
healthy, then nothing of ours left running after `down`."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from streams.devstack import DevStack
from tests.conftest import EXTERNAL_ENV
from tests.integration.conftest import free_port
from tests.unit.test_cli import run_cli


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(
    bool(EXTERNAL_ENV), reason="external services configured: no embedded stack to manage"
)
def test_up_status_down_leaves_nothing_running(dev_stack: DevStack, tmp_path: Path) -> None:
    # dev_stack: the session fixture has already installed the jars and OpenSSL into the shared cache.
    env = {
        "CROSSROUTE_STACK__STATE_DIR": str(tmp_path / "state"),
        "CROSSROUTE_STACK__CACHE_DIR": str(dev_stack.settings.cache_dir),
        "CROSSROUTE_STACK__KAFKA_PORT": str(free_port()),
        "CROSSROUTE_STACK__KAFKA_CONTROLLER_PORT": str(free_port()),
        "CROSSROUTE_STACK__REDIS_PORT": str(free_port()),
    }
    try:
        up = run_cli("stack", "up", "--json", env=env, timeout=180)
        assert up.returncode == 0, up.stderr
        status = run_cli("stack", "status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        services = {s["name"]: s for s in json.loads(status.stdout)}
        assert services["kafka"]["healthy"] and services["redis"]["healthy"]
        assert services["kafka"]["endpoint"] == f"127.0.0.1:{env['CROSSROUTE_STACK__KAFKA_PORT']}"
        assert "search" in services["redis"]["detail"]
        pids = [services["kafka"]["pid"], services["redis"]["pid"]]
        assert all(_alive(p) for p in pids)

        # A second `up` is a no-op, not a second broker.
        again = run_cli("stack", "up", "--json", env=env, timeout=60)
        assert again.returncode == 0
        assert sorted(s["pid"] for s in json.loads(again.stdout)) == sorted(pids)
    finally:
        down = run_cli("stack", "down", env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    assert "kafka" in down.stdout and "redis" in down.stdout
    assert not any(_alive(p) for p in pids)
    after = run_cli("stack", "status", "--json", env=env)
    assert after.returncode == 1


def test_port_taken_is_one_clear_line(dev_stack: DevStack, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        env = {
            "CROSSROUTE_STACK__STATE_DIR": str(tmp_path / "state"),
            "CROSSROUTE_STACK__CACHE_DIR": str(dev_stack.settings.cache_dir),
            "CROSSROUTE_STACK__KAFKA_PORT": str(taken),
            "CROSSROUTE_STACK__KAFKA_CONTROLLER_PORT": str(free_port()),
            "CROSSROUTE_STACK__REDIS_PORT": str(free_port()),
        }
        out = run_cli("stack", "up", env=env, timeout=120)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert f"kafka: port 127.0.0.1:{taken} is already in use" in out.stderr
    # Nothing half-started is left behind.
    assert not list((tmp_path / "state").rglob("*.pid"))
