"""The command line as a user meets it: help texts, and one-line errors with non-zero exits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import REPO

COMMANDS = [
    [],
    ["stack"],
    ["stack", "up"],
    ["stack", "down"],
    ["stack", "status"],
    ["stack", "install"],
    ["schemas", "export"],
    ["index"],
    ["index", "create"],
    ["index", "load"],
    ["index", "info"],
    ["index", "promote"],
    ["index", "drop"],
    ["calibrate"],
    ["route"],
    ["api"],
    ["eval"],
    ["train"],
    ["worker"],
    ["publish"],
    ["topics"],
    ["topics", "ensure"],
    ["up"],
    ["down"],
    ["status"],
    ["models", "build"],
    ["models", "verify"],
    ["models", "info"],
    ["models", "head"],
    ["models", "head", "reproduce"],
    ["models", "head", "export"],
    ["bench", "encoders"],
    ["bench", "ingest"],
    ["bench", "scale"],
    ["bench", "restart"],
    ["bench", "all"],
    ["pairs", "audit"],
    ["demo"],
]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CROSSROUTE_")}
    base.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    base.pop("REDIS_URL", None)
    base["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help(cmd: list[str]) -> None:
    out = run_cli(*cmd, "--help")
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout and len(out.stdout) > 200


def _assert_one_line_error(out: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert out.returncode == code, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], out.stderr


def test_java_missing_is_one_line(tmp_path: object) -> None:
    out = run_cli(
        "stack",
        "up",
        env={
            "CROSSROUTE_STACK__JAVA": "no-such-java",
            "CROSSROUTE_STACK__STATE_DIR": str(tmp_path),
        },
    )
    _assert_one_line_error(out, 2, "Java not found")


def test_unreachable_external_kafka_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    out = run_cli(
        "stack", "up",
        env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port}", "REDIS_URL": f"redis://127.0.0.1:{closed_port}/0"},
    )  # fmt: skip
    _assert_one_line_error(out, 1, f"external service at 127.0.0.1:{closed_port} is unreachable")


def test_bad_setting_is_one_line() -> None:
    out = run_cli("stack", "status", env={"CROSSROUTE_STACK__REDIS_PORT": "eighty"})
    _assert_one_line_error(out, 2, "invalid setting stack.redis_port")


def test_status_of_stopped_stack_exits_nonzero(tmp_path: object) -> None:
    out = run_cli("stack", "status", "--json", env={"CROSSROUTE_STACK__STATE_DIR": str(tmp_path)})
    assert out.returncode == 1
    assert '"healthy": false' in out.stdout and "not running" in out.stdout


def test_schemas_check_detects_stale(tmp_path: object) -> None:
    assert run_cli("schemas", "export", "--check").returncode == 0
    assert run_cli("schemas", "export", "--check", "--out", str(tmp_path)).returncode == 1


def test_demo_refuses_a_tenant_allowlist_without_its_tenant() -> None:
    out = run_cli("demo", env={"CROSSROUTE_WORKER__TENANTS": '["acme"]'})
    _assert_one_line_error(out, 2, "would dead-letter the demo's tenant 'demo'")


def _tree(command: Any, prefix: tuple[str, ...] = ()) -> list[str]:
    """The command paths under ``command`` (a click group), sorted."""
    names = [" ".join(prefix)] if prefix else []
    if hasattr(command, "commands"):
        for name, sub in sorted(command.commands.items()):
            names += _tree(sub, (*prefix, name))
    return names


def test_command_tree() -> None:
    """Every command users have, grouped by the package that owns it (a new command must be added
    here on purpose, a lost one fails)."""
    import typer

    from models import cli as models_cli
    from router import cli as router_cli
    from streams import cli as streams_cli
    from streams.main import app

    owned = {
        pkg: _tree(typer.main.get_group(mod.app))
        for pkg, mod in (("models", models_cli), ("router", router_cli), ("streams", streams_cli))
    }
    assert owned == {
        "models": [
            "bench", "bench all", "bench encoders", "bench index", "bench ingest", "bench restart",
            "bench route", "bench scale", "eval", "models", "models build", "models head",
            "models head export", "models head reproduce", "models info", "models verify",
            "pairs", "pairs audit", "train",
        ],
        "router": [
            "calibrate", "index", "index acl", "index create", "index digest", "index drop",
            "index info", "index load", "index promote", "index spaces", "keys", "keys create",
            "keys list", "keys revoke", "promote", "rollback", "route",
        ],
        "streams": [
            "api", "demo", "down", "gate", "publish", "reindex", "schemas", "schemas export", "stack",
            "stack compose-secrets", "stack down", "stack install", "stack status", "stack up", "status", "topics",
            "topics acl", "topics ensure", "up", "worker",
        ],
    }  # fmt: skip
    assert _tree(typer.main.get_group(app)) == sorted(n for names in owned.values() for n in names)


def test_help_groups_commands_by_package() -> None:
    out = run_cli("--help")
    panels = [line for line in out.stdout.splitlines() if line.startswith("╭─")]
    assert [p.split("─ ")[1].split(":")[0] for p in panels[1:]] == ["Streams", "Router", "Models"]


def test_router_commands_read_router_settings() -> None:
    """`index info` reads RouterSettings: a bad API setting is refused, a bad worker one ignored."""
    out = run_cli("index", "info", env={"CROSSROUTE_API__PORT": "eighty"})
    _assert_one_line_error(out, 2, "invalid setting api.port")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    out = run_cli(
        "index", "info",
        env={"CROSSROUTE_WORKER__BATCH_SIZE": "lots", "REDIS_URL": f"redis://127.0.0.1:{closed_port}/0"},
    )  # fmt: skip
    _assert_one_line_error(out, 2, f"cannot reach Redis at redis://127.0.0.1:{closed_port}/0")


def test_flag_errors_of_models_commands_are_usage_errors(tmp_path: object) -> None:
    out = run_cli("train", str(tmp_path), "--out", str(tmp_path), "--method", "magic")
    _assert_one_line_error(out, 2, "--method must be naive, linear, inbatch or mined, not 'magic'")
    out = run_cli("eval", str(tmp_path), "--index", "faiss")
    _assert_one_line_error(out, 2, "--index must be exact or redis, not 'faiss'")
    out = run_cli("eval", str(tmp_path), "--exemplar-rule", "vote")
    _assert_one_line_error(out, 2, "--exemplar-rule must be max or prototype, not 'vote'")


def test_router_commands_find_the_dev_stack_at_its_configured_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    out = run_cli("index", "info", env={"CROSSROUTE_STACK__REDIS_PORT": str(closed_port)})
    _assert_one_line_error(out, 2, f"cannot reach Redis at redis://127.0.0.1:{closed_port}/0")
