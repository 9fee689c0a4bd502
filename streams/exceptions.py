"""Errors raised by ``streams``.

Hierarchy::

    CrossrouteError (models.exceptions)
    └── StreamsError                 base of the errors of the streaming layer
        ├── ConfigurationError       the settings or the environment cannot work (bad value, Java missing);
        │                            also a models.UsageError
        ├── StackError               the embedded dev stack failed to install, start or stop
        │   └── PortInUseError       a port the stack needs is taken by another process
        ├── ServiceUnavailableError  Kafka or Redis cannot be reached (retryable)
        └── EventDecodeError         bytes on a topic are not a valid crossroute event (never retryable)
"""

from __future__ import annotations

from models.exceptions import CrossrouteError, UsageError

__all__ = [
    "ConfigurationError",
    "EventDecodeError",
    "PortInUseError",
    "ServiceUnavailableError",
    "StackError",
    "StreamsError",
]


class StreamsError(CrossrouteError):
    """Base of the errors of the streaming layer."""


class ConfigurationError(StreamsError, UsageError):
    """The configuration or the environment of the services cannot work as given (exit code 2)."""


class StackError(StreamsError):
    """The embedded dev stack failed to install, start or stop."""


class PortInUseError(StackError):
    """A port the dev stack needs is already bound by another process."""

    @classmethod
    def for_port(cls, service: str, host: str, port: int) -> PortInUseError:
        """Build the error for ``service`` failing to bind ``host:port``."""
        return cls(
            f"{service}: port {host}:{port} is already in use by another process; stop it or choose "
            f"another port (CROSSROUTE_STACK__{service.upper()}_PORT)"
        )


class ServiceUnavailableError(StreamsError):
    """Kafka or Redis cannot be reached (``retryable``: the worker retries it with backoff)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class EventDecodeError(StreamsError):
    """Bytes read from a topic are not a valid crossroute event."""
