"""Errors raised by ``models`` and the root of every crossroute error.

Hierarchy (the other packages hang their roots here, since ``models`` is the bottom layer)::

    CrossrouteError              any error crossroute raises on purpose; the CLI prints it as one line
    ├── UsageError               a flag, setting or environment that cannot work as given (exit 2)
    ├── ModelsError              errors of the embedding layer
    │   ├── BundleError          a model bundle cannot be used
    │   │   ├── BundleIntegrityError   a file is missing, unexpected or its sha256 differs
    │   │   └── BundleFormatError      the manifest is unreadable or of an unsupported format
    │   ├── InputError           one input cannot be embedded; names the input (never retryable)
    │   │   ├── EmptyInputError        empty text, zero-byte image, a screenshot without text
    │   │   ├── ImageDecodeError       not a decodable image of an allowed format
    │   │   └── ImageTooLargeError     over the byte or pixel limit (decompression bombs included)
    │   ├── SpaceMismatchError   vectors of one embedding space met another space
    │   └── MissingDependencyError  an optional extra (``crossroute[train]``) is not installed
    ├── router.RouterError       see ``router/exceptions.py``
    └── streams.StreamsError     see ``streams/exceptions.py``
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "BundleFormatError",
    "BundleIntegrityError",
    "CrossrouteError",
    "EmptyInputError",
    "ImageDecodeError",
    "ImageTooLargeError",
    "InputError",
    "MissingDependencyError",
    "ModelsError",
    "SpaceMismatchError",
    "UsageError",
]


class CrossrouteError(Exception):
    """Base of every error crossroute raises deliberately.

    Args:
        message: one line a user can act on.
        retryable: whether retrying the same operation later can succeed (a service that is down)
            or not (bad input, bad configuration). The worker retries exactly the errors marked
            retryable (and Redis connection errors and timeouts), with backoff, and lets every
            other error through (``streams.pipeline.is_retryable``).
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return self.message


class UsageError(CrossrouteError):
    """A command-line flag, a setting or the environment cannot work as given (exit code 2).

    Defined here so each package's commands raise it for their own flags; ``streams``'
    ``ConfigurationError`` (settings the services need) is one.
    """


class ModelsError(CrossrouteError):
    """Base of the errors of the embedding layer."""


class BundleError(ModelsError):
    """A model bundle cannot be used."""


class BundleIntegrityError(BundleError):
    """A bundle file is missing, unexpected, or its sha256 differs from the manifest."""


class BundleFormatError(BundleError):
    """The manifest is unreadable, invalid, or of an unsupported format."""


class InputError(ModelsError):
    """One input cannot be embedded. ``name`` identifies it (an id, a path, or ``#index``)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class EmptyInputError(InputError):
    """The input is empty: blank text, zero bytes, a screenshot in which OCR found no text."""


class ImageDecodeError(InputError):
    """The bytes are not a decodable image of an allowed format."""


class ImageTooLargeError(InputError):
    """The image is over the byte or pixel limit (this is how decompression bombs are refused)."""


class SpaceMismatchError(ModelsError):
    """Vectors of one embedding space met an index or embedder of another space."""

    @classmethod
    def between(cls, expected: str, got: str, what: str = "query") -> SpaceMismatchError:
        """Build the error for a ``what`` of space ``got`` meeting space ``expected``."""
        return cls(
            f"{what} is in embedding space {got} but this index serves {expected}; "
            "re-embed with the matching bundle or query the index of that space"
        )


class MissingDependencyError(ModelsError):
    """An optional dependency is missing; the message names the extra to install."""
