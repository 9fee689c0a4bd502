"""Dev-stack mechanics that need no services: process identity, ports, artifacts, clear errors."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from streams.devstack.artifacts import (
    LIBSSL_DEB_NAME,
    LIBSSL_DEB_SHA256,
    check_java,
    ensure_libssl,
    kafka_version,
)
from streams.devstack.process import ManagedProcess, port_in_use, require_free_port
from streams.exceptions import ConfigurationError, PortInUseError
from tests.conftest import SHARED_DATA


def _proc(tmp_path: Path) -> ManagedProcess:
    return ManagedProcess("sleeper", tmp_path / "p.pid", tmp_path / "p.log")


def test_start_and_stop_exactly_our_process(tmp_path: Path) -> None:
    proc = _proc(tmp_path)
    pid = proc.start(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        env={},
        cwd=tmp_path,
    )
    assert proc.pid() == pid
    assert proc.stop(timeout_s=10) is True
    assert proc.pid() is None
    assert not proc.pid_file.exists()
    assert proc.stop() is False  # nothing left to stop


def test_stale_pid_file_is_not_trusted(tmp_path: Path) -> None:
    """A PID file naming a live process with another start time (PID reuse) must not be signalled."""
    proc = _proc(tmp_path)
    proc.pid_file.write_text(f'{{"pid": {os.getpid()}, "start_ticks": 1}}')
    assert proc.pid() is None
    assert proc.stop() is False  # and we are still alive to assert it


def test_sigterm_ignored_then_killed(tmp_path: Path) -> None:
    proc = _proc(tmp_path)
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('x', flush=True); time.sleep(60)"
    )
    proc.start([sys.executable, "-c", code], env={}, cwd=tmp_path)
    time.sleep(0.5)  # let it install the handler
    assert proc.stop(timeout_s=0.5) is True
    assert proc.pid() is None


def test_crashed_process_is_reported_with_log_tail(tmp_path: Path) -> None:
    from streams.devstack import process

    proc = _proc(tmp_path)
    pid = proc.start(
        [sys.executable, "-c", "print('boom: bad config'); raise SystemExit(3)"],
        env={},
        cwd=tmp_path,
    )
    child = process._CHILDREN[pid]
    deadline = time.monotonic() + 10
    while not proc.exited() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.exited()
    assert "boom: bad config" in proc.log_tail()
    assert child.returncode == 3 and pid not in process._CHILDREN  # reaped: no zombie left


def test_port_in_use_detected() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port} is already in use"):
            require_free_port("kafka", "127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)


def _fake_java(tmp_path: Path, version: str) -> str:
    script = tmp_path / "java"
    script.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2024-01-01' >&2\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_java_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="Java not found"):
        check_java("definitely-not-java")
    with pytest.raises(ConfigurationError, match="version 11"):
        check_java(_fake_java(tmp_path, "11.0.2"))
    with pytest.raises(ConfigurationError, match="version 8"):
        check_java(_fake_java(tmp_path, "1.8.0_392"))
    assert check_java(_fake_java(tmp_path, "17.0.15")).endswith("java")


def test_kafka_is_pinned_to_4x() -> None:
    assert kafka_version().startswith("4.")


def test_libssl_from_local_deb_is_verified_and_unpacked(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.deb"
    bogus.write_bytes(b"!<arch>\nnot really")
    with pytest.raises(ConfigurationError, match="sha256"):
        ensure_libssl(tmp_path / "cache", bogus)
    vendored = SHARED_DATA.parent / "vendor" / LIBSSL_DEB_NAME
    if not vendored.exists():
        pytest.skip(f"no vendored {LIBSSL_DEB_NAME} to unpack")
    assert hashlib.sha256(vendored.read_bytes()).hexdigest() == LIBSSL_DEB_SHA256
    libdir = ensure_libssl(tmp_path / "cache", vendored)
    assert (libdir / "libssl.so.1.1").exists()
    assert (libdir / "libcrypto.so.1.1").exists()
    assert ensure_libssl(tmp_path / "cache", None) == libdir  # cached: no download


def test_cluster_ids_never_start_with_a_dash() -> None:
    """The storage tool would read "-t -abc…" as a missing argument (a 1-in-64 flake before)."""
    import base64

    from streams.devstack.kafka import new_cluster_id

    draws = iter([b"\xfb" + bytes(15), bytes(range(16))])  # the first encodes to "-w…"
    assert base64.urlsafe_b64encode(b"\xfb" + bytes(15)).startswith(b"-")
    cid = new_cluster_id(lambda: next(draws))
    assert cid == base64.urlsafe_b64encode(bytes(range(16))).rstrip(b"=").decode()
    assert all(not new_cluster_id().startswith("-") for _ in range(500))
    assert len(new_cluster_id()) == 22


def test_server_properties_add_a_scram_listener_only_when_asked(tmp_path: Path) -> None:
    from streams.devstack.kafka import server_properties
    from streams.settings import StackSettings

    def props(**options: Any) -> dict[str, str]:
        settings = StackSettings(
            state_dir=tmp_path, kafka_port=9001, kafka_controller_port=9002, **options
        )
        text = server_properties(settings, tmp_path)
        lines = [
            line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
        ]
        return dict(lines)

    plain = props()
    assert plain["listeners"] == "PLAINTEXT://127.0.0.1:9001,CONTROLLER://127.0.0.1:9002"
    assert plain["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9001"
    assert plain["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert plain["log.dirs"] == str(tmp_path)
    assert not any(key.startswith("sasl") or "sasl" in key for key in plain)

    sasl = props(kafka_sasl_port=9003)
    assert sasl["listeners"].endswith(",SASL_PLAINTEXT://127.0.0.1:9003")
    assert (
        sasl["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9001,SASL_PLAINTEXT://127.0.0.1:9003"
    )
    assert sasl["listener.security.protocol.map"].endswith(",SASL_PLAINTEXT:SASL_PLAINTEXT")
    assert sasl["inter.broker.listener.name"] == "PLAINTEXT"  # the broker itself needs no user
    assert sasl["sasl.enabled.mechanisms"] == "SCRAM-SHA-256,SCRAM-SHA-512"
    for mechanism in ("scram-sha-256", "scram-sha-512"):
        jaas = sasl[f"listener.name.sasl_plaintext.{mechanism}.sasl.jaas.config"]
        assert jaas == "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    assert not any(key.startswith("ssl.") for key in sasl)

    tls = props(kafka_sasl_port=9003, kafka_sasl_tls=True)
    assert tls["listeners"].endswith(",SASL_SSL://127.0.0.1:9003")
    assert tls["listener.security.protocol.map"].endswith(",SASL_SSL:SASL_SSL")
    assert "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config" in tls
    assert tls["ssl.keystore.location"] == str(tmp_path / "kafka" / "tls" / "broker.p12")
    assert tls["ssl.keystore.type"] == "PKCS12"


def test_the_sasl_ssl_certificate_is_made_once_for_the_host(tmp_path: Path) -> None:
    import shutil
    import ssl

    from streams.devstack.kafka import ensure_keystore
    from streams.settings import StackSettings

    java = shutil.which("java")
    if java is None:
        pytest.skip("no Java (keytool) here")
    settings = StackSettings(state_dir=tmp_path, kafka_sasl_port=9003, kafka_sasl_tls=True)
    pem = ensure_keystore(java, settings)
    assert pem == tmp_path / "kafka" / "tls" / "ca.pem"
    context = ssl.create_default_context(cafile=str(pem))  # what a client trusts: it loads
    (cert,) = context.get_ca_certs()
    assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
    made = (tmp_path / "kafka" / "tls" / "broker.p12").stat().st_mtime_ns
    assert ensure_keystore(java, settings) == pem  # kept: clients may hold the old one
    assert (tmp_path / "kafka" / "tls" / "broker.p12").stat().st_mtime_ns == made


def test_scram_users_need_the_embedded_sasl_listener(tmp_path: Path) -> None:
    from pydantic import SecretStr

    from router.settings import RedisSettings
    from streams.devstack import DevStack
    from streams.exceptions import StackError
    from streams.settings import KafkaSettings, StackSettings

    no_listener = DevStack(StackSettings(state_dir=tmp_path), KafkaSettings(), RedisSettings())
    with pytest.raises(StackError, match="no SASL listener"):
        no_listener.add_scram_user("u", SecretStr("p"))
    external = DevStack(
        StackSettings(state_dir=tmp_path, kafka_sasl_port=9003),
        KafkaSettings(bootstrap_servers="broker:9092"),
        RedisSettings(),
    )
    with pytest.raises(StackError, match="no SASL listener"):
        external.kafka_sasl_bootstrap()
    embedded = DevStack(
        StackSettings(state_dir=tmp_path, kafka_sasl_port=9003), KafkaSettings(), RedisSettings()
    )
    assert embedded.kafka_sasl_bootstrap() == "127.0.0.1:9003"


def test_unreachable_kafka_is_reported_within_the_timeout() -> None:
    from streams.devstack.kafka import kafka_reachable
    from streams.settings import KafkaSettings

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    healthy, detail = kafka_reachable(KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}"), 1.5)
    assert not healthy and detail.startswith("unreachable: ")
    assert time.monotonic() - started < 5


def test_a_redis_loading_a_large_dataset_is_waited_for_not_failed(tmp_path: Path) -> None:
    """Redis answers LOADING while it reads a big AOF back (minutes at 100k vectors): that is
    progress, so the start timeout restarts while it lasts; a plain unreachable Redis still fails."""
    from router.settings import RedisSettings
    from streams.devstack import DevStack
    from streams.devstack import stack as stack_module
    from streams.exceptions import StackError
    from streams.settings import KafkaSettings, StackSettings

    stack = DevStack(StackSettings(state_dir=tmp_path, start_timeout_s=0.5), KafkaSettings(),
                     RedisSettings())  # fmt: skip
    loading_until = time.monotonic() + 1.5  # three times the start timeout

    class Alive:
        log_file = tmp_path / "redis.log"

        def exited(self) -> bool:
            return False

    def health(name: str, timeout_s: float) -> tuple[bool, str]:
        if time.monotonic() < loading_until:
            return False, stack_module._LOADING
        return True, "Redis 7.4"

    stack._process = lambda name: Alive()  # type: ignore[method-assign,assignment,return-value]
    stack._health = health  # type: ignore[method-assign]
    stack._wait_healthy("redis")
    assert time.monotonic() >= loading_until

    stack._health = lambda name, t: (False, "unreachable: refused")  # type: ignore[method-assign]
    with pytest.raises(StackError, match="not healthy after"):
        stack._wait_healthy("redis")
