"""Logging: one line per request with its id, as text or as JSON (``CONVSCOPE_LOG_FORMAT=json``).

The edge (service/edge.py) writes the request line on ``service.access`` (it replaces uvicorn's
access log, which has no request id); ``log_config`` configures uvicorn's loggers and ours
alike, so in JSON mode every line the process writes is one JSON object. Lines never carry an
upload, a query string or a traceback: an exception is its type and first line (the full
traceback only at debug level).
"""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key != "color_message":
                line[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            line["exception"] = _first_line(record.exc_info[1])
            if logging.getLogger("service").isEnabledFor(logging.DEBUG):
                line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def log_config(level: str, fmt: str) -> dict[str, Any]:
    """uvicorn's logging config with the service's loggers added, text or JSON."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["service"] = {"handlers": ["default"], "level": level.upper()}
    if fmt == "json":
        for name in ("default", "access"):
            config["formatters"][name] = {"()": "service.logs.JsonFormatter"}
    return config
