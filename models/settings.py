"""Settings sections of the embedding layer, and the settings plumbing every process shares.

``models`` is the bottom layer, so the one piece of settings mechanics the three packages share lives
here: :class:`WellKnownEnvSource`, which lets the conventional ``KAFKA_BOOTSTRAP_SERVERS`` and
``REDIS_URL`` variables fill the nested ``kafka.bootstrap_servers`` / ``redis.url`` fields.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = [
    "ENV_PREFIX",
    "ModelSettings",
    "ModelsSettings",
    "ProcessSettings",
    "WellKnownEnvSource",
    "default_bundle_dir",
    "xdg_dir",
]

ENV_PREFIX = "CROSSROUTE_"

_XDG = {
    "data": ("XDG_DATA_HOME", Path(".local") / "share"),
    "state": ("XDG_STATE_HOME", Path(".local") / "state"),
    "cache": ("XDG_CACHE_HOME", Path(".cache")),
}


def xdg_dir(kind: Literal["data", "state", "cache"]) -> Path:
    """crossroute's folder of one XDG base directory: ``$XDG_<KIND>_HOME/crossroute``.

    The one place default paths come from: bundles and calibrations live under ``data``, the dev
    stack's and the supervised processes' files under ``state``, downloaded artifacts and derived
    features under ``cache``. Read when called, so a changed environment is honoured.
    """
    var, fallback = _XDG[kind]
    base = os.environ.get(var)
    return (Path(base) if base else Path.home() / fallback) / "crossroute"


def default_bundle_dir() -> Path:
    """Where ``crossroute models build`` puts the default bundle: ``$XDG_DATA_HOME/crossroute/…``."""
    return xdg_dir("data") / "bundles" / "default"


class ModelSettings(BaseModel):
    """Where the embedding model bundle lives (``CROSSROUTE_MODEL__*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bundle_dir: Path | None = None
    """Directory of the model bundle (manifest + ONNX files); unset means the built default."""
    providers: Literal["auto", "cpu", "cuda"] = "auto"
    """onnxruntime execution providers: ``auto`` uses CUDA when the installed build has it."""
    threads: Annotated[int, Field(ge=1, le=256)] | None = None
    """Intra-op threads per encoder session; unset lets onnxruntime use every core."""
    cache_dir: Path = Field(default_factory=lambda: xdg_dir("cache") / "features")
    """Encoder features ``crossroute train`` computes once per pair set and encoder."""
    reports_dir: Path = Field(default_factory=lambda: xdg_dir("data") / "reports")
    """Where ``crossroute eval --report`` also keeps each space's latest report per dataset
    (``{space_id}/{dataset}.html`` and ``.json``), which the console's models page lists."""

    def resolved_bundle_dir(self, explicit: Path | None = None) -> Path:
        """``explicit`` (a ``--model``/``--bundle`` flag) if given, else ``bundle_dir``, else the
        default bundle's location."""
        if explicit is not None:
            return explicit
        return self.bundle_dir if self.bundle_dir is not None else default_bundle_dir()


class WellKnownEnvSource(PydanticBaseSettingsSource):
    """Map conventional, unprefixed env names onto nested settings fields.

    It is placed after the prefixed env source, so ``CROSSROUTE_KAFKA__BOOTSTRAP_SERVERS`` wins over
    ``KAFKA_BOOTSTRAP_SERVERS`` when both are set.

    Args:
        settings_cls: the settings class being built.
        aliases: env name → ``(section, field)``; sections missing from the class are ignored.
        environ: the environment to read (defaults to ``os.environ``; tests pass their own).
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        aliases: Mapping[str, tuple[str, str]],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(settings_cls)
        self._aliases = dict(aliases)
        self._environ = os.environ if environ is None else environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ builds the whole nested mapping at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, dict[str, str]] = {}
        for env_name, (section, field) in self._aliases.items():
            value = self._environ.get(env_name)
            if value and section in self.settings_cls.model_fields:
                out.setdefault(section, {})[field] = value
        return dict(out)


class ProcessSettings(BaseSettings):
    """Base of the one settings class each process reads at its entry point.

    Env names are ``CROSSROUTE_<SECTION>__<FIELD>``; subclasses list the conventional unprefixed names
    they also honour in ``well_known_env`` (lower priority than the prefixed names).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore", frozen=True
    )

    well_known_env: ClassVar[dict[str, tuple[str, str]]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        well_known = WellKnownEnvSource(settings_cls, cls.well_known_env)
        return init_settings, env_settings, well_known, file_secret_settings


class ModelsSettings(ProcessSettings):
    """Settings of the ``models`` commands (``models``, ``train``, ``eval``, ``pairs``, ``bench``),
    read once at each command's start."""

    model: ModelSettings = Field(default_factory=ModelSettings)
