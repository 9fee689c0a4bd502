from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from router.settings import RouterSettings, redact_url
from streams.settings import KafkaSettings, StackSettings, WorkerSettings


def test_defaults_use_embedded_stack_on_loopback() -> None:
    s = WorkerSettings()
    assert s.kafka.bootstrap_servers is None
    assert s.redis.url is None
    assert s.stack.host == "127.0.0.1"
    assert RouterSettings().api.host == "127.0.0.1"


def test_prefixed_nested_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSROUTE_KAFKA__BOOTSTRAP_SERVERS", "broker:9092")
    monkeypatch.setenv("CROSSROUTE_KAFKA__CLIENT_ID", "w1")
    monkeypatch.setenv("CROSSROUTE_STACK__REDIS_PORT", "7777")
    monkeypatch.setenv("CROSSROUTE_MODEL__BUNDLE_DIR", "/models/b1")
    s = WorkerSettings()
    assert s.kafka.bootstrap_servers == "broker:9092"
    assert s.kafka.client_id == "w1"
    assert s.stack.redis_port == 7777
    assert str(s.model.bundle_dir) == "/models/b1"


def test_well_known_names_and_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "plain:9092")
    monkeypatch.setenv("REDIS_URL", "redis://plain:6379/0")
    monkeypatch.setenv("CROSSROUTE_KAFKA__CLIENT_ID", "w2")
    s = WorkerSettings()
    assert s.kafka.bootstrap_servers == "plain:9092"
    assert s.kafka.client_id == "w2"  # merged with the prefixed section, not replaced by it
    assert s.redis.url is not None and s.redis.url.get_secret_value() == "redis://plain:6379/0"
    assert RouterSettings().redis.url == SecretStr("redis://plain:6379/0")
    monkeypatch.setenv("CROSSROUTE_KAFKA__BOOTSTRAP_SERVERS", "prefixed:9092")
    assert WorkerSettings().kafka.bootstrap_servers == "prefixed:9092"


def test_secrets_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://user:hunter2@h:6379/0")
    monkeypatch.setenv("CROSSROUTE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CROSSROUTE_KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("CROSSROUTE_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("CROSSROUTE_KAFKA__SASL_PASSWORD", "s3cret")
    s = WorkerSettings()
    text = repr(s) + str(s) + s.model_dump_json()
    assert "hunter2" not in text and "s3cret" not in text
    conf = s.kafka.as_librdkafka("b:1", **{"group.id": "g"})
    assert conf["sasl.password"] == "s3cret" and conf["group.id"] == "g"
    assert redact_url("redis://user:hunter2@h:6379/0") == "redis://user:***@h:6379/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


def test_sasl_needs_credentials() -> None:
    with pytest.raises(ValidationError, match="sasl_mechanism"):
        KafkaSettings(security_protocol="SASL_SSL")


def test_bad_values_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="must differ"):
        StackSettings(kafka_port=7000, redis_port=7000)
    monkeypatch.setenv("REDIS_URL", "http://example.com")
    with pytest.raises(ValidationError, match="redis://"):
        WorkerSettings()


def test_settings_are_frozen() -> None:
    s = WorkerSettings()
    with pytest.raises(ValidationError):
        s.stack.redis_port = 1  # type: ignore[misc]


def test_default_paths_follow_the_xdg_variables_of_the_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Default paths come from one place (models.settings.xdg_dir), read when settings are read."""
    from models.settings import ModelsSettings
    from router.routing import calibration_dir
    from router.settings import RouterSettings

    for kind in ("DATA", "STATE", "CACHE"):
        monkeypatch.setenv(f"XDG_{kind}_HOME", str(tmp_path / kind.lower()))
    worker = WorkerSettings()
    assert worker.stack.state_dir == tmp_path / "state" / "crossroute" / "stack"
    assert worker.stack.cache_dir == tmp_path / "cache" / "crossroute"
    assert ModelsSettings().model.cache_dir == tmp_path / "cache" / "crossroute" / "features"
    assert worker.model.resolved_bundle_dir() == tmp_path / "data/crossroute/bundles/default"
    assert calibration_dir(RouterSettings().routing) == tmp_path / "data/crossroute/calibration"


def test_the_sasl_port_is_distinct_and_optional() -> None:
    assert StackSettings().kafka_sasl_port is None
    assert StackSettings(kafka_sasl_port=9094).kafka_sasl_port == 9094
    with pytest.raises(ValidationError, match=r"must differ: \[9092, 9093, 6379, 9092\]"):
        StackSettings(kafka_sasl_port=9092)
    with pytest.raises(ValidationError, match="kafka_sasl_tls needs kafka_sasl_port"):
        StackSettings(kafka_sasl_tls=True)


def test_the_worker_buffer_holds_at_least_a_batch() -> None:
    from streams.settings import ConsumerSettings

    assert ConsumerSettings().buffer_events == 256  # faust's own default (4096) is not the bound
    assert ConsumerSettings(batch_size=64, buffer_events=64).buffer_events == 64
    with pytest.raises(
        ValueError, match=r"buffer_events \(32\) must be at least batch_size \(64\)"
    ):
        ConsumerSettings(batch_size=64, buffer_events=32)
