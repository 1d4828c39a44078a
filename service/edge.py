"""The request edge: one layer every request passes, whichever handler answers it.

``Edge`` wraps the whole HTTP service. For each request it picks the request id, refuses a
``Content-Length`` over the body limit, applies CORS, enforces the body limit and the read
deadline on every read of the body, gives every error escaping a handler the one JSON shape,
closes the connection after a 408 or 413, and records the metrics and the access line. Behind
it one of two handlers answers: the fast classify handler (service/fastlane.py) or FastAPI.

The same rules as plain functions (``request_id``, ``require_key``, ``too_large``,
``error_body``, ``record``) serve FastAPI's exception handlers, the key dependency and any other
protocol front end (gRPC), so each is written once. Connection-level deadlines, before a request
exists or after it is answered, are service/deadlines.py's.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence

from fastapi.middleware.cors import CORSMiddleware
from fastapi.security.utils import get_authorization_scheme_param
from pydantic_core import to_json
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import PayloadTooLarge, RequestTimeout, ServiceError, Unauthorized
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("service")
access_log = logging.getLogger("service.access")

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# 408/413: the rest of the body is not wanted, stop the client sending it; 500: start afresh.
CLOSE_AFTER = frozenset({408, 413, 500})
V2_PREFIX = "/v2"  # the Open Inference Protocol words errors as {"error": "<message>"}
MAX_LOGGED_PATH = 200
UNMATCHED = "<unmatched>"
CORS_HEADERS = ["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"]


# -- request id -----------------------------------------------------------------------------------


def request_id(given: bytes | str | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a new one."""
    text = given.decode("latin-1") if isinstance(given, bytes) else given or ""
    return text if REQUEST_ID.match(text) else secrets.token_hex(16)


# -- API key --------------------------------------------------------------------------------------


def api_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request offers: ``Authorization: Bearer <key>`` (parsed as FastAPI's
    HTTPBearer does), else ``X-API-Key``."""
    scheme, token = get_authorization_scheme_param(authorization)
    if authorization and scheme and token and scheme.lower() == "bearer":
        return token
    return x_api_key or None


def check_api_key(keys: Sequence[str], given: str | None) -> None:
    """Raises Unauthorized unless ``given`` is one of ``keys``."""
    if not given:
        raise Unauthorized(
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        )
    # Compare against every key in constant time, so timing says nothing about which is close.
    matches = [hmac.compare_digest(given.encode(), key.encode()) for key in keys]
    if not any(matches):
        raise Unauthorized("the API key is not valid")


def require_key(settings: Settings, authorization: str | None, x_api_key: str | None) -> None:
    """Open when no keys are configured; otherwise the offered key must be one of them."""
    if settings.api_keys:
        check_api_key(settings.api_keys, api_key(authorization, x_api_key))


# -- body limit and read deadline -----------------------------------------------------------------


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")


def check_declared_size(content_length: bytes | str | None, limit: int) -> None:
    """A Content-Length over the limit is refused before a byte of the body is read."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise too_large(limit)


def body_late(timeout: float) -> RequestTimeout:
    return RequestTimeout(f"the request body did not arrive within {timeout:g} s")


# -- the one error serialiser ---------------------------------------------------------------------


def error_body(exc: ServiceError, *, v2: bool = False) -> bytes:
    """``{"error": {"code", "message"}}``, or under /v2 the protocol's ``{"error": message}``."""
    return to_json({"error": exc.message} if v2 else exc.payload())


def is_v2(path: str) -> bool:
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def error_message(exc: ServiceError, path: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of the answer to ``exc`` for a request to ``path``."""
    body = error_body(exc, v2=is_v2(path))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    return exc.status, headers, body


async def send_error(send: Send, exc: ServiceError, path: str) -> None:
    status, headers, body = error_message(exc, path)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def internal_error(rid: str) -> ServiceError:
    """The plain 500: it says nothing but the request id (the log has the traceback)."""
    return ServiceError(f"internal error (request id {rid})")


def log_unexpected(method: str, route: str, rid: str) -> None:
    """Call inside an ``except`` block: the traceback goes to the log with the request id."""
    log.exception("unexpected error in %s %s (request id %s)", method, route, rid)


# -- metrics and the access line ------------------------------------------------------------------


def route_template(scope: Scope) -> str:
    route = scope.get("route")  # a Starlette route, or the fast handler's template
    path = route if isinstance(route, str) else getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def record(
    metrics: Metrics,
    *,
    method: str,
    path: str,
    route: str,
    status: int,
    seconds: float,
    request_id: str,
    client: str | None,
) -> None:
    """Metrics and the access line of one answered request (499: the client left first).

    The path is cut to 200 characters and never carries the query string (it may carry keys or
    long parameter lists); JSON encoding keeps a hostile path on one line.
    """
    metrics.observe_request(method, route, status, seconds)
    level = logging.WARNING if status >= 500 else logging.INFO
    if not access_log.isEnabledFor(level):
        return
    fields = {
        "method": method,
        "path": path[:MAX_LOGGED_PATH],
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
        "request_id": request_id,
        "client": client,
    }
    access_log.log(
        level,
        "%s %s %s %.1f ms id=%s",
        method,
        repr(fields["path"])[1:-1],  # escapes control characters in text mode too
        status,
        fields["duration_ms"],
        request_id,
        extra=fields,
    )


# -- the ASGI edge --------------------------------------------------------------------------------

# A fast handler answers a request (True), declines having touched nothing (False), or read the
# body and declines: then it returns a ``receive`` that gives the app that body.
FastHandler = Callable[[Scope, Receive, Send], Awaitable["bool | Receive"]]


class Exchange:
    """One request as the edge sees it: its id, its body so far, and its answer's status."""

    __slots__ = ("body_done", "deadline", "id", "received", "status")

    def __init__(self, rid: str) -> None:
        self.id = rid
        self.status = 0  # 0: nothing sent yet
        self.received = 0
        self.deadline: float | None = None  # set by the first read of the body
        self.body_done = False


class Edge:
    """See the module docstring. ``app`` is FastAPI's own stack; ``fast`` the fast handler."""

    def __init__(
        self, app: ASGIApp, settings: Settings, metrics: Metrics, fast: FastHandler | None = None
    ) -> None:
        self.app, self.settings, self.metrics, self.fast = app, settings, metrics, fast
        self.limit, self.timeout = settings.max_upload_bytes, settings.body_timeout_s
        self.handler: ASGIApp = self.dispatch
        if settings.cors_origins:
            self.handler = CORSMiddleware(
                self.dispatch,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=CORS_HEADERS,
                expose_headers=["X-Request-ID"],
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        given = length = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                given = value
            elif key == b"content-length":
                length = value
        ex = Exchange(request_id(given))
        scope.setdefault("state", {})["request_id"] = ex.id
        rid_header = (b"x-request-id", ex.id.encode())

        async def limited_receive() -> Message:
            if ex.body_done:  # later reads wait for a disconnect: no deadline on those
                return await receive()
            loop = asyncio.get_running_loop()
            if ex.deadline is None:
                ex.deadline = loop.time() + self.timeout
            try:
                async with asyncio.timeout_at(ex.deadline):
                    message = await receive()
            except TimeoutError:
                raise body_late(self.timeout) from None
            if message["type"] == "http.request":
                ex.received += len(message.get("body", b""))
                if ex.received > self.limit:
                    raise too_large(self.limit)
                ex.body_done = not message.get("more_body", False)
            else:
                ex.body_done = True
            return message

        async def edge_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                ex.status = status = message["status"]
                headers = [*message.get("headers", ()), rid_header]
                if status in CLOSE_AFTER:
                    headers = [(k, v) for k, v in headers if k != b"connection"]
                    headers.append((b"connection", b"close"))
                message["headers"] = headers  # a new list: the handler's stays as it was
            await send(message)

        try:
            check_declared_size(length, self.limit)
            await self.handler(scope, limited_receive, edge_send)
        except ServiceError as exc:  # raised outside FastAPI's handlers: the lane, or a read
            if not ex.status:
                await send_error(edge_send, exc, scope["path"])
        except ClientDisconnect:
            pass
        except Exception:
            log_unexpected(scope["method"], route_template(scope), ex.id)
            if not ex.status:
                await send_error(edge_send, internal_error(ex.id), scope["path"])
            ex.status = 500
        finally:
            client = scope.get("client")
            record(
                self.metrics,
                method=scope["method"],
                path=scope["path"],
                route=route_template(scope),
                status=ex.status or 499,
                seconds=time.perf_counter() - start,
                request_id=ex.id,
                client=client[0] if client else None,
            )

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The fast handler when it takes the request, else FastAPI."""
        if self.fast is not None:
            outcome = await self.fast(scope, receive, send)
            if outcome is True:
                return
            if outcome is not False:  # the lane read the body: the app gets it from there
                receive = outcome
        await self.app(scope, receive, send)


def error_response(exc: ServiceError, path: str) -> Response:
    """``exc`` as a Starlette response, for FastAPI's exception handlers."""
    status, headers, body = error_message(exc, path)
    response = Response(body, status)
    response.raw_headers = headers
    return response
