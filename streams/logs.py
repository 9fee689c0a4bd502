"""Worker logging: human-readable lines, or one JSON object per line for log shippers.

``CROSSROUTE_WORKER__LOG_FORMAT=json`` gives structured logs: ``ts`` (UTC, ISO 8601), ``level``,
``logger``, ``message``, the fields a call site passes in ``extra=`` (``event="batch"``, counts,
seconds…) and ``exc`` for tracebacks. Only the message and those fields are logged: settings and
connection URLs (which may carry passwords) are never passed to the logger.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["JsonFormatter", "LogFormat", "setup_logging"]

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object (no newlines inside, keys in a stable order)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def setup_logging(level: str | int = "INFO", fmt: LogFormat = "text") -> None:
    """Send every logger (faust's too) to stderr in ``fmt``, replacing earlier handlers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers.clear()
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
