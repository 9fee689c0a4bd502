"""docker-compose.yml cannot run here (no Docker engine): check its shape, that it is secured by
default (env files for every secret, none in the file), that it speaks the settings' env names with
the secrets `crossroute stack compose-secrets` makes, and let `docker compose config` validate it
where the plugin exists. tests/integration/streams/test_compose_secure.py runs its Kafka and Redis
configuration on the real servers."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from router.settings import RouterSettings
from streams.devstack.compose import (
    COMPOSE_USERS,
    CONTAINER_SECRETS,
    KAFKA_ROLES,
    write_compose_secrets,
)
from streams.devstack.envfile import read_env_file
from streams.exceptions import StackError
from streams.settings import WorkerSettings
from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"


def env_names(settings: type[BaseSettings]) -> set[str]:
    """Every env name a settings class reads: CROSSROUTE_<SECTION>__<FIELD>."""
    prefix = settings.model_config.get("env_prefix", "")
    names = set()
    for section, info in settings.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            names |= {f"{prefix}{section}__{field}".upper() for field in model.model_fields}
    return names


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("compose") / "stack" / "secrets"
    write_compose_secrets(folder, namespace="crossroute", alias="live")
    return folder


def service_env(svc: dict[str, Any], secrets_dir: Path) -> dict[str, str]:
    """What compose hands the container: its env files, then its environment on top."""
    env: dict[str, str] = {}
    for entry in svc.get("env_file", []):
        env |= read_env_file(secrets_dir / Path(entry["path"]).name)
    return env | {k: str(v) for k, v in svc.get("environment", {}).items()}


def test_services_and_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "kafka-acls", "redis", "worker", "api", "admin"}
    for name in ("kafka", "redis", "worker", "api"):
        assert "test" in services[name]["healthcheck"], f"{name} has no healthcheck"
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["redis"]["image"].startswith("redis/redis-stack-server:7.4")
    assert services["worker"]["depends_on"]["kafka-acls"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["kafka-acls"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["admin"]["profiles"] == ["tools"]  # not started by `up`


def test_published_ports_are_loopback(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_no_secret_in_the_compose_file_and_every_env_file_is_required(
    compose: dict[str, Any],
) -> None:
    text = COMPOSE.read_text()
    assert not re.search(r"(?i)password\s*[:=]\s*\S", text), "a password in docker-compose.yml"
    assert "redis://" not in text and "rediss://" not in text  # URLs with users are in env files
    for name, svc in compose["services"].items():
        for entry in svc.get("env_file", []):
            assert entry["required"] is True, name
            assert entry["path"].startswith("./stack/secrets/"), name
        for key in svc.get("environment", {}):
            assert "PASSWORD" not in key and key != "CROSSROUTE_REDIS__URL", (name, key)


def test_secured_by_default(compose: dict[str, Any], secrets_dir: Path) -> None:
    services = compose["services"]
    assert (
        "--aclfile /etc/crossroute/redis/users.acl"
        in services["redis"]["environment"]["REDIS_ARGS"]
    )
    props = (secrets_dir / "kafka" / "server.properties").read_text()
    assert "CLIENTS://kafka:9094" in props and "CLIENTS:SASL_SSL" in props
    assert "listeners=INTERNAL://127.0.0.1:9092," in props  # PLAINTEXT on loopback only
    assert "StandardAuthorizer" in props and "allow.everyone.if.no.acl.found=false" in props
    for name in ("worker", "api", "admin", "kafka-acls"):
        env = service_env(services[name], secrets_dir)
        assert env.get("CROSSROUTE_API__AUTH", "on") == "on"
        user = urlsplit_user(env.get("CROSSROUTE_REDIS__URL"))
        assert user in (None, COMPOSE_USERS.get(name, "admin")), (name, user)
    for name in ("worker", "kafka-acls", "admin", "api"):
        env = service_env(services[name], secrets_dir)
        assert env["CROSSROUTE_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["CROSSROUTE_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9094"


def urlsplit_user(url: str | None) -> str | None:
    from urllib.parse import urlsplit

    return None if url is None else urlsplit(url).username


@pytest.mark.parametrize(
    ("service", "settings"),
    [("worker", WorkerSettings), ("api", WorkerSettings), ("admin", WorkerSettings),
     ("kafka-acls", WorkerSettings)],
)  # fmt: skip
def test_env_names_match_settings(
    compose: dict[str, Any], secrets_dir: Path, service: str, settings: type[BaseSettings]
) -> None:
    svc = compose["services"][service]
    env = service_env(svc, secrets_dir)
    ours = {k for k in env if k.startswith("CROSSROUTE_")}
    unknown = ours - env_names(settings)
    assert not unknown, f"{service} sets env names its settings do not read: {sorted(unknown)}"
    overlap = {
        k
        for entry in svc.get("env_file", [])
        for k in read_env_file(secrets_dir / Path(entry["path"]).name)
    } & set(svc.get("environment", {}))
    assert not overlap, f"{service}: the environment would override its env file: {overlap}"
    # The env values must parse as this process's settings (with the mounted files where the
    # containers see them).
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v.replace(CONTAINER_SECRETS + "/", f"{secrets_dir}/"))
        parsed = settings()
        if service == "api":  # `crossroute api` reads the router's settings from it too
            assert RouterSettings().redis.url == parsed.redis.url
    assert parsed.redis.url is not None or service == "kafka-acls"


def test_compose_secrets_files_modes_and_hashes(secrets_dir: Path) -> None:
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    for sub in ("kafka", "redis"):  # mounted whole: the containers' users must traverse them
        assert stat.S_IMODE((secrets_dir / sub).stat().st_mode) == 0o755
    for name in ("kafka.env", "worker.env", "api.env", "admin.env", "publisher.env"):
        assert stat.S_IMODE((secrets_dir / name).stat().st_mode) == 0o600, name
    passwords = {
        v for name in ("kafka.env",) for k, v in read_env_file(secrets_dir / name).items()
        if k.endswith("_PASSWORD")
    }  # fmt: skip
    assert len(passwords) == len(KAFKA_ROLES) and all(
        re.fullmatch("[0-9a-f]{48}", p) for p in passwords
    )
    acl = (secrets_dir / "redis" / "users.acl").read_text()
    worker_url = read_env_file(secrets_dir / "worker.env")["CROSSROUTE_REDIS__URL"]
    redis_passwords = {urlsplit_password(read_env_file(secrets_dir / f)["CROSSROUTE_REDIS__URL"])
                       for f in ("worker.env", "api.env", "admin.env")}  # fmt: skip
    for secret in passwords | redis_passwords:
        assert secret not in acl  # only their SHA-256
    assert (
        acl.count(" #") == 3 and "user default on nopass resetkeys resetchannels -@all +ping" in acl
    )
    assert worker_url.startswith("redis://crossroute-worker:")
    with pytest.raises(StackError, match="--force"):
        write_compose_secrets(secrets_dir, namespace="crossroute", alias="live")


def urlsplit_password(url: str) -> str:
    from urllib.parse import urlsplit

    password = urlsplit(url).password
    assert password is not None
    return password


def test_docker_compose_config_when_available() -> None:
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
        != 0
    ):
        pytest.skip("docker compose plugin not installed (the YAML checks above still ran)")
    out = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_secrets_are_mounted_read_only_where_the_generated_files_point(
    compose: dict[str, Any],
) -> None:
    """Every ./stack/secrets mount keeps the folder's layout under /etc/crossroute, read-only (the
    generated server.properties and the env files name those container paths)."""
    mounts = []
    for svc in compose["services"].values():
        for volume in svc.get("volumes", []):
            if isinstance(volume, str):
                source, target, *mode = volume.split(":")
                read_only = mode == ["ro"]
            else:
                source, target, read_only = volume["source"], volume["target"], volume["read_only"]
            if source.startswith("./stack/secrets"):
                mounts.append(target)
                assert read_only, volume
                assert target == CONTAINER_SECRETS + source.removeprefix("./stack/secrets"), volume
    assert len(mounts) >= 4
