"""The fast lane: plain classifications of one picture skip FastAPI.

``POST /v1/classify`` and ``POST /v1/models/{name}/classify`` with one picture (the raw body, or
a multipart upload of one file in field ``file``) and nothing asked beyond ``top_k`` and
``input_image`` are what a classification service mostly serves. Through FastAPI they cost
~0.5 ms of Python per request (seven middlewares, routing, dependency injection, query and
response validation), more than decoding and inference together; here ~0.1 ms
(benchmarks/README.md).

The lane answers only requests it can answer exactly as the routes would, and hands everything
else to the app behind it unchanged: JSON bodies, multipart bodies with anything but one file
(the body already read is replayed to the app), feature maps and CAMs, any parameter it does
not recognise or whose value is not plainly valid (so FastAPI words the 422), unknown models,
CORS requests, and anything while the models load. What it answers goes through the same code
as the routes (``classify.classify`` and ``classify.response``, the API-key check, the body
limit and deadline, the error shape) and is recorded the same way: X-Request-ID, metrics by
route template, the access line. Tests compare its answers with the routes'.

The lane also knows how many of its requests are in flight: a lone one is run on the event loop
in the latency-tuned session (``ModelRuntime.run_inline``) instead of a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any
from urllib.parse import parse_qsl

from pydantic_core import to_json
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from .classify import Options, classify, parse_cam, parse_layers, response
from .deadlines import CLOSE_AFTER, body_late
from .deps import bearer_token, check_api_key
from .errors import InvalidParameter, ServiceError
from .limits import declared_too_large, too_large
from .logs import log_request, pick_request_id
from .metrics import Metrics
from .registry import LoadedModel, Registry
from .settings import Settings
from .uploads import HOW

log = logging.getLogger("service")

DEFAULT_ROUTE = "/v1/classify"
NAMED_ROUTE = "/v1/models/{name}/classify"
_NAMED_PREFIX, _NAMED_SUFFIX = "/v1/models/", "/classify"
_BODIES_FOR_THE_APP = ("multipart/", "application/json")  # and anything ending in +json
_TRUE, _FALSE = {"true", "1"}, {"false", "0"}  # input_image values left unambiguous
_MAX_TOP_K = 1000  # as the route's Query(le=1000)
_MAX_OPTION_LENGTH = {"feature_maps": 1000, "cam": 200}  # as the routes' Query(max_length=...)
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=?]{1,70}")  # RFC 2046, without spaces
# One file in field "file": what browsers, curl, httpx and requests send for one picture.
_FILE_PART = re.compile(rb'form-data; ?name="file"; ?filename="[^"\\\r\n]*"', re.IGNORECASE)


class Headers:
    """What the lane reads from the request headers, in one pass."""

    __slots__ = (
        "authorization",
        "content_length",
        "content_type",
        "media",
        "origin",
        "request_id",
        "x_api_key",
    )

    def __init__(self, scope: Scope) -> None:
        self.media = self.content_type = ""
        self.authorization: str | None = None
        self.x_api_key: str | None = None
        self.content_length: bytes | None = None
        self.request_id: bytes | None = None
        self.origin: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                self.content_type = value.decode("latin-1")
                self.media = self.content_type.split(";")[0].strip().lower()
            elif key == b"content-length":
                self.content_length = value
            elif key == b"authorization":
                self.authorization = value.decode("latin-1")
            elif key == b"x-api-key":
                self.x_api_key = value.decode("latin-1")
            elif key == b"x-request-id":
                self.request_id = value
            elif key == b"origin":
                self.origin = value


def route_of(path: str) -> tuple[str, str | None] | None:
    """(route template, model name or None for the default), or None: not a classify path."""
    if path == DEFAULT_ROUTE:
        return DEFAULT_ROUTE, None
    if path.startswith(_NAMED_PREFIX) and path.endswith(_NAMED_SUFFIX):
        name = path[len(_NAMED_PREFIX) : -len(_NAMED_SUFFIX)]
        if name and "/" not in name:
            return NAMED_ROUTE, name
    return None


def plain_options(model: LoadedModel, query: bytes) -> Options | None:
    """The options of a plain classification, or None when the app should see the query."""
    options = Options()
    if not query:
        return options
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return None
    seen = set()
    for key, value in pairs:
        if key in seen:
            return None  # repeated: FastAPI takes the last; leave that to it
        seen.add(key)
        if key == "top_k":
            if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= _MAX_TOP_K:
                return None
            options.top_k = int(value)
        elif key == "input_image" and value.lower() in _TRUE | _FALSE:
            options.input_image = value.lower() in _TRUE
        elif key in _MAX_OPTION_LENGTH and len(value) <= _MAX_OPTION_LENGTH[key]:
            try:  # only the "no" values stay here: feature maps and CAMs go to the app
                if key == "feature_maps" and parse_layers(model.spec, value):
                    return None
                if key == "cam" and parse_cam(model.spec, value) is not None:
                    return None
            except ServiceError:
                return None
        else:
            return None
    return options


def boundary_of(content_type: str) -> bytes | None:
    """The multipart boundary, when it is a plain one (RFC 2046 characters); else None."""
    for param in content_type.split(";")[1:]:
        key, eq, value = param.strip().partition("=")
        if key.strip().lower() == "boundary" and eq:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if _BOUNDARY.fullmatch(value):
                return value.encode("ascii")
            return None
    return None


def single_file(body: bytes, boundary: bytes) -> bytes | None:
    """The data of a multipart body that is exactly one file in field ``file``, as browsers
    and HTTP clients send one picture; None for anything else (several parts, other fields,
    a transfer encoding, a preamble, a malformed body), which the app's parser then handles,
    words the errors of and accepts or refuses exactly as before."""
    opening = b"--" + boundary + b"\r\n"
    if not body.startswith(opening):
        return None
    head_end = body.find(b"\r\n\r\n", len(opening) - 2)
    if head_end < 0:
        return None
    disposition = None
    for line in body[len(opening) : head_end].split(b"\r\n"):
        name, colon, value = line.partition(b":")
        name = name.strip().lower()
        if not colon:
            return None
        if name == b"content-disposition":
            disposition = value.strip()
        elif name != b"content-type":
            return None
    if disposition is None or not _FILE_PART.fullmatch(disposition):
        return None
    delimiter = b"\r\n--" + boundary
    end = body.find(delimiter, head_end + 4)
    if end < 0 or body[end + len(delimiter) :] not in (b"--", b"--\r\n"):
        return None
    return body[head_end + 4 : end] or None  # an empty file: the app says so


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body once more, then waits on the real one (disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def read_body(receive: Receive, limit: int, timeout: float) -> bytes:
    """The whole body, under the same rules as BodyLimitMiddleware and BodyDeadlineMiddleware:
    413 past ``limit`` bytes, 408 when it is not in ``timeout`` s from this first read."""
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise body_late(timeout) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_json(
    send: Send, status: int, payload: Any, request_id: str, extra: list[tuple[bytes, bytes]]
) -> None:
    body = to_json(payload)  # pydantic's serialiser: a fifth of json.dumps's time
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
        (b"x-request-id", request_id.encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class FastLane:
    """See the module docstring. ``handle`` is called by the app before anything of FastAPI's."""

    def __init__(self, settings: Settings, metrics: Metrics, state: Any) -> None:
        self.settings, self.metrics = settings, metrics
        self.state = state  # the app's state: the registry appears there once models load
        self.in_flight = 0  # requests the lane is answering now

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> bool | Receive:
        """Answer the request and return True; or return False having touched nothing; or, when
        a multipart body turned out not to be one plain file, return a ``receive`` that gives
        the app the body the lane has read."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        route = route_of(scope["path"])
        registry: Registry | None = getattr(self.state, "registry", None)
        if route is None or registry is None:
            return False
        template, name = route
        model = registry.default if name is None else registry.find(name)
        if model is None:
            return False
        request = Headers(scope)
        boundary = None
        if request.media == "multipart/form-data":
            boundary = boundary_of(request.content_type)
            if boundary is None:
                return False
        elif request.media.startswith(_BODIES_FOR_THE_APP) or request.media.endswith("+json"):
            return False
        if request.origin and self.settings.cors_origins:
            return False
        options = plain_options(model, scope["query_string"])
        if options is None:
            return False
        self.in_flight += 1
        try:
            # One loop turn first: requests that arrived together (already parsed, their tasks
            # ready) all enter before any decides whether it is alone. Without this, every
            # request would run start to finish before the next began, and each would think so.
            await asyncio.sleep(0)
            args = (template, model, request, options, boundary)
            body = await self._answer(scope, receive, send, *args)
        finally:
            self.in_flight -= 1
        return True if body is None else replaying(body, receive)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        template: str,
        model: LoadedModel,
        request: Headers,
        options: Options,
        boundary: bytes | None,
    ) -> bytes | None:
        """None when answered; the body read when a multipart body is for the app to parse."""
        start = time.perf_counter()
        request_id = pick_request_id(request.request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        settings, status = self.settings, 499  # 499: the client left before an answer
        try:
            # In the order of the app: the body limit (before routing), the key, the body.
            limit = settings.max_upload_bytes
            if declared_too_large(request.content_length, limit):
                raise too_large(limit)
            if settings.api_keys:
                given = bearer_token(request.authorization) or request.x_api_key
                check_api_key(settings.api_keys, given)
            body = await read_body(receive, limit, settings.body_timeout_s)
            picture = body if boundary is None else single_file(body, boundary)
            if picture is None:
                return body  # the app parses it, and answers and records the request
            if not picture:
                raise InvalidParameter(f"the request has no picture: {HOW}")
            alone = self.in_flight == 1
            results = await classify(model, [picture], options, settings.max_pixels, alone=alone)
            status = 200
            await send_json(send, 200, response(model, results), request_id, [])
        except ServiceError as exc:
            status = exc.status
            extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
            if status in CLOSE_AFTER:  # the body is not wanted: stop the client sending it
                extra.append((b"connection", b"close"))
            await send_json(send, status, exc.payload(), request_id, extra)
        except ClientDisconnect:
            pass
        except Exception:
            status = 500
            log.exception("unexpected error in POST %s (request id %s)", template, request_id)
            message = f"internal error (request id {request_id})"
            payload = {"error": {"code": "internal_error", "message": message}}
            await send_json(send, 500, payload, request_id, [(b"connection", b"close")])
        seconds = time.perf_counter() - start
        self.metrics.observe_request("POST", template, status, seconds)
        log_request(scope, template, status, request_id, seconds)
        return None
