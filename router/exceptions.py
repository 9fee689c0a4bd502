"""Errors raised by ``router``.

Hierarchy::

    CrossrouteError (models.exceptions)
    └── RouterError              base of the router's errors
        ├── DeploymentError      a promotion, canary or rollback that cannot be done as asked
        ├── FeedbackError        a feedback event that could not be published
        ├── IndexNotFoundError   no such index or alias (or not one of ours)
        ├── IndexingFailureError Redis stored documents it could not index
        ├── RequestError         a route/search request that cannot be served as given (a 4xx)
        └── SettingsError        settings that cannot take effect with what is served
"""

from __future__ import annotations

from models.exceptions import CrossrouteError, UsageError

__all__ = [
    "DeploymentError",
    "FeedbackError",
    "IndexNotFoundError",
    "IndexingFailureError",
    "RequestError",
    "RouterError",
    "SettingsError",
]


class RouterError(CrossrouteError):
    """Base of the errors of the routing layer."""


class DeploymentError(RouterError, UsageError):
    """A deployment change that cannot be made as asked (no canary to promote, nothing to roll back
    to, a space that is not registered or has no index); nothing was changed."""


class FeedbackError(RouterError):
    """A feedback event the broker did not confirm (nothing was published; retry)."""


class IndexNotFoundError(RouterError):
    """The index or alias does not exist, or was not created by crossroute."""


class IndexingFailureError(RouterError):
    """``hash_indexing_failures`` grew: documents are stored but invisible to search."""


class RequestError(RouterError):
    """A request that cannot be served as given (bad filter, empty ticket, …): the caller's fault."""


class SettingsError(RouterError, UsageError):
    """Settings that cannot take effect with what is served (an API image limit above the decode
    limit of the bundle), refused when the service starts rather than ignored."""
