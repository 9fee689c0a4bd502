"""Docs stay true: every setting a process reads is documented in the README's table."""

from __future__ import annotations

import pytest
from pydantic_settings import BaseSettings

from models.settings import ModelsSettings
from router.settings import RouterSettings
from streams.settings import WorkerSettings
from tests.conftest import REPO
from tests.unit.test_compose import env_names


@pytest.mark.parametrize("settings", [WorkerSettings, RouterSettings, ModelsSettings])
def test_every_env_name_is_in_the_readme(settings: type[BaseSettings]) -> None:
    readme = (REPO / "README.md").read_text()
    missing = sorted(name for name in env_names(settings) if f"`{name}`" not in readme)
    assert not missing, f"README configuration table lacks {missing}"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert ".ci/bootstrap && .ci/test" in readme
    assert ci.strip().endswith(".ci/bootstrap && .ci/test")
