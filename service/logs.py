"""Logging: one line per request with its id, as text or as JSON (``CONVSCOPE_LOG_FORMAT=json``).

``AccessLogMiddleware`` writes the request line (it replaces uvicorn's access log, which has no
request id); ``log_config`` configures uvicorn's loggers and ours alike, so in JSON mode every
line the process writes is one JSON object. Lines never carry an upload, a query string or a
traceback: an exception is its type and first line (the full traceback only at debug level).
"""

from __future__ import annotations

import copy
import json
import logging
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import route_template

access_log = logging.getLogger("service.access")

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_MAX_PATH = 200
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def pick_request_id(given: bytes | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a new one."""
    text = given.decode("latin-1") if given else ""
    return text if REQUEST_ID.match(text) else secrets.token_hex(16)


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


class AccessLogMiddleware:
    """Logs every HTTP request once it is answered: method, path, route, status, time, id.

    Sits outside the request-id middleware, so it logs exactly what the client got, X-Request-ID
    included. The path is cut to 200 characters and the query string is left out (it may carry
    keys or long parameter lists); JSON encoding keeps a hostile path on one line.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status, request_id = 499, ""  # 499: the client left before an answer started

        async def watch(message: Message) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = message["status"]
                for key, value in message.get("headers", []):
                    if key.lower() == b"x-request-id":
                        request_id = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except BaseException:
            status = 500
            raise
        finally:
            request_id = request_id or scope.get("state", {}).get("request_id", "")
            seconds = time.perf_counter() - start
            log_request(scope, route_template(scope), status, request_id, seconds)


def log_request(scope: Scope, route: str, status: int, request_id: str, seconds: float) -> None:
    """The access line of one answered request (the middleware's and the fast lane's)."""
    level = logging.WARNING if status >= 500 else logging.INFO
    if not access_log.isEnabledFor(level):
        return
    client = scope.get("client")
    fields = {
        "method": scope["method"],
        "path": scope["path"][:_MAX_PATH],
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
        "request_id": request_id,
        "client": client[0] if client else None,
    }
    access_log.log(
        level,
        "%s %s %s %.1f ms id=%s",
        fields["method"],
        repr(fields["path"])[1:-1],  # escapes control characters in text mode too
        status,
        fields["duration_ms"],
        fields["request_id"],
        extra=fields,
    )
