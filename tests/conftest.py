"""Shared fixtures. Unit tests run with a clean environment; integration fixtures live in
``tests/integration/conftest.py``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Captured before any test touches the environment: integration tests honour external services.
EXTERNAL_ENV = {
    k: v for k, v in os.environ.items() if k in {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"}
}


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's CROSSROUTE_* / KAFKA_* / REDIS_URL settings by accident."""
    for key in list(os.environ):
        if key.startswith("CROSSROUTE_") or key in {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"}:
            monkeypatch.delenv(key)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def require_shared_data() -> Path:
    """Return ``../shared/data``; skip without it, or fail under CI=true."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    message = f"../shared/data not found at {SHARED_DATA}"
    if IN_CI:
        pytest.fail(message + " (CI=true: integration data is required)")
    pytest.skip(message)


@pytest.fixture
def shared_data() -> Iterator[Path]:
    """The real evaluation data (read in place, never copied into the repo)."""
    yield require_shared_data()
