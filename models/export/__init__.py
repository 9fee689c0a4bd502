"""torch → ONNX export and bundle building. Needs the ``train`` extra; never imported when serving."""

from __future__ import annotations

from models.exceptions import MissingDependencyError

__all__ = ["require_torch"]


def require_torch() -> None:
    """Raise an actionable error when the export/training dependencies are missing."""
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(
            f"building bundles needs torch, timm and transformers ({e.name} is missing): "
            "pip install 'crossroute[train]'"
        ) from e
