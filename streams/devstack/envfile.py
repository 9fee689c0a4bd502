"""Env files (``KEY=value`` lines) that hold secrets: written ``0600``, read back by the stack and
the tests. No quoting: the values we write (URLs, hex passwords, paths) need none."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from streams.devstack.tls import write_private

__all__ = ["read_env_file", "write_env_file"]


def write_env_file(path: Path, values: Mapping[str, str], comment: str) -> None:
    """Write ``values`` under a ``# comment`` line to a file only its owner may read."""
    text = f"# {comment}\n" + "".join(f"{k}={v}\n" for k, v in values.items())
    write_private(path, text.encode())


def read_env_file(path: Path) -> dict[str, str]:
    """The ``KEY=value`` lines of an env file (none when it does not exist)."""
    if not path.is_file():
        return {}
    lines = (ln for ln in path.read_text().splitlines() if "=" in ln and not ln.startswith("#"))
    return dict(ln.split("=", 1) for ln in lines)
