"""Errors raised by ``router``.

Hierarchy::

    CrossrouteError (models.exceptions)
    └── RouterError              base of the router's errors
"""

from __future__ import annotations

from models.exceptions import CrossrouteError

__all__ = ["RouterError"]


class RouterError(CrossrouteError):
    """Base of the errors of the routing layer."""
