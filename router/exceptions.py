"""Errors raised by ``router``.

Hierarchy::

    CrossrouteError (models.exceptions)
    └── RouterError              base of the router's errors
        ├── IndexNotFoundError   no such index or alias (or not one of ours)
        ├── IndexingFailureError Redis stored documents it could not index
        ├── RequestError         a route/search request that cannot be served as given (a 4xx)
        └── SettingsError        settings that cannot take effect with what is served
"""

from __future__ import annotations

from models.exceptions import CrossrouteError, UsageError

__all__ = [
    "IndexNotFoundError",
    "IndexingFailureError",
    "RequestError",
    "RouterError",
    "SettingsError",
]


class RouterError(CrossrouteError):
    """Base of the errors of the routing layer."""


class IndexNotFoundError(RouterError):
    """The index or alias does not exist, or was not created by crossroute."""


class IndexingFailureError(RouterError):
    """``hash_indexing_failures`` grew: documents are stored but invisible to search."""


class RequestError(RouterError):
    """A request that cannot be served as given (bad filter, empty ticket, …): the caller's fault."""


class SettingsError(RouterError, UsageError):
    """Settings that cannot take effect with what is served (an API image limit above the decode
    limit of the bundle), refused when the service starts rather than ignored."""
