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
and anything while the models load. It is a handler, not a front end: the edge in front of it
and of FastAPI (service/edge.py) gives both their request id, CORS, body limit and deadline,
error shape, metrics and access line; the lane and the routes share ``classify.classify``,
``classify.response`` and the key check. Tests compare its answers with the routes'.

The lane also knows how many of its requests are in flight: a lone one, while no other worker
holds a connection (service/balance.py), is run on the event loop in the latency-tuned session
(``ModelRuntime.run_inline``, its threads on every core) instead of a worker thread.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from pydantic_core import to_json
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from . import balance
from .classify import classify, response
from .edge import require_key
from .errors import InvalidParameter
from .options import Options, plain_options
from .registry import LoadedModel, Registry
from .settings import Settings
from .uploads import HOW

DEFAULT_ROUTE = "/v1/classify"
NAMED_ROUTE = "/v1/models/{name}/classify"
_NAMED_PREFIX, _NAMED_SUFFIX = "/v1/models/", "/classify"
_BODIES_FOR_THE_APP = ("multipart/", "application/json")  # and anything ending in +json
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=?]{1,70}")  # RFC 2046, without spaces
# One file in field "file": what browsers, curl, httpx and requests send for one picture.
_FILE_PART = re.compile(rb'form-data; ?name="file"; ?filename="[^"\\\r\n]*"', re.IGNORECASE)


class Headers:
    """What the lane reads from the request headers, in one pass."""

    __slots__ = ("authorization", "content_type", "media", "x_api_key")

    def __init__(self, scope: Scope) -> None:
        self.media = self.content_type = ""
        self.authorization: str | None = None
        self.x_api_key: str | None = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                self.content_type = value.decode("latin-1")
                self.media = self.content_type.split(";")[0].strip().lower()
            elif key == b"authorization":
                self.authorization = value.decode("latin-1")
            elif key == b"x-api-key":
                self.x_api_key = value.decode("latin-1")


def route_of(path: str) -> tuple[str, str | None] | None:
    """(route template, model name or None for the default), or None: not a classify path."""
    if path == DEFAULT_ROUTE:
        return DEFAULT_ROUTE, None
    if path.startswith(_NAMED_PREFIX) and path.endswith(_NAMED_SUFFIX):
        name = path[len(_NAMED_PREFIX) : -len(_NAMED_SUFFIX)]
        if name and "/" not in name:
            return NAMED_ROUTE, name
    return None


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


async def read_body(receive: Receive) -> bytes:
    """The whole body (the edge's ``receive`` enforces its limit and deadline)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_json(send: Send, payload: Any) -> None:
    body = to_json(payload)  # pydantic's serialiser: a fifth of json.dumps's time
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class FastLane:
    """See the module docstring. The edge (service/edge.py) calls it before FastAPI."""

    def __init__(self, settings: Settings, state: Any) -> None:
        self.settings = settings
        self.state = state  # the app's state: the registry appears there once models load
        self.in_flight = 0  # requests the lane is answering now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool | Receive:
        """Answer the request and return True; or return False having touched nothing; or, when
        a multipart body turned out not to be one plain file, return a ``receive`` that gives
        the app the body the lane has read."""
        if scope["method"] != "POST":
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
        options = plain_options(model.spec, scope["query_string"])
        if options is None:
            return False
        scope["route"] = template  # what the edge records it under
        self.in_flight += 1
        try:
            # One loop turn first: requests that arrived together (already parsed, their tasks
            # ready) all enter before any decides whether it is alone. Without this, every
            # request would run start to finish before the next began, and each would think so.
            await asyncio.sleep(0)
            body = await self.answer(receive, send, model, request, options, boundary)
        finally:
            self.in_flight -= 1
        return True if body is None else replaying(body, receive)

    async def answer(
        self,
        receive: Receive,
        send: Send,
        model: LoadedModel,
        request: Headers,
        options: Options,
        boundary: bytes | None,
    ) -> bytes | None:
        """None when answered; the body read when a multipart body is for the app to parse.
        Errors are raised: the edge words them."""
        settings = self.settings
        require_key(settings, request.authorization, request.x_api_key)  # before the body
        body = await read_body(receive)
        picture = body if boundary is None else single_file(body, boundary)
        if picture is None:
            return body  # the app parses it, and answers the request
        if not picture:
            raise InvalidParameter(f"the request has no picture: {HOW}")
        pictures = self.state.decoders.pictures([picture], model.spec.input)
        # Alone: nothing else in flight here, and no other worker holding a connection (the
        # lone session's threads then have every core).
        alone = self.in_flight == 1 and balance.others_idle()
        results = await classify(model, pictures, options, alone=alone)
        await send_json(send, response(model, results))
        return None
