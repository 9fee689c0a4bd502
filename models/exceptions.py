"""Errors raised by ``models`` and the root of every crossroute error.

Hierarchy (the other packages hang their roots here, since ``models`` is the bottom layer)::

    CrossrouteError              any error crossroute raises on purpose; the CLI prints it as one line
    ├── ModelsError              errors of the embedding layer (bundles, encoders, inputs)
    ├── router.RouterError       see ``router/exceptions.py``
    └── streams.StreamsError     see ``streams/exceptions.py``
"""

from __future__ import annotations

__all__ = ["CrossrouteError", "ModelsError"]


class CrossrouteError(Exception):
    """Base of every error crossroute raises deliberately.

    Args:
        message: one line a user can act on.
        retryable: whether retrying the same operation later can succeed (a service that is down)
            or not (bad input, bad configuration).
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return self.message


class ModelsError(CrossrouteError):
    """Base of the errors of the embedding layer."""
