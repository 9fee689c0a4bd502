"""Progress callbacks: long work reports one short line per step to whoever started it."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress", "no_progress"]

Progress = Callable[[str], None]
"""Called with a short line describing the step that starts now."""


def no_progress(_: str) -> None:
    """A :data:`Progress` that reports nothing."""
    return None
