"""``create_app(settings)``: the lifespan loads the models; routers, error handlers, the edge.

Every error leaves in the one shape of service/edge.py: our own ServiceErrors, FastAPI's
404/405/422, and anything unexpected (logged with the request id, answered with a plain 500).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from .decoding import Decoders
from .edge import Edge, error_response, internal_error
from .errors import InvalidParameter, ModelError, ServiceError
from .fastlane import FastLane
from .grpc import serving as grpc_serving
from .metrics import Metrics
from .registry import Registry
from .reloading import reloading
from .routes import ROUTERS
from .settings import Settings

log = logging.getLogger("service")

STATIC = Path(__file__).resolve().parent / "static"
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}
HTTP_MESSAGES = {
    404: "there is nothing at this path",
    405: "this path does not accept that method",
}

DESCRIPTION = """Classify pictures with a convolutional network and see what it saw:
calibrated probabilities, feature maps of every convolutional and pooling layer, and
class-activation maps. Every error is `{"error": {"code", "message"}}`."""


async def service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return error_response(exc, request.url.path)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    default = HTTPStatus(exc.status_code).phrase
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != default else None
    message = detail or HTTP_MESSAGES.get(exc.status_code, default.lower())
    code = HTTP_CODES.get(exc.status_code, "http_error")
    response = error_response(
        ServiceError(message, status=exc.status_code, code=code), request.url.path
    )
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def validation_error(request: Request, exc: Exception) -> Response:
    """The first problem as one sentence; the offending value is never echoed."""
    assert isinstance(exc, RequestValidationError)
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    where = {"query": "query parameter", "path": "path parameter", "header": "header"}
    if len(loc) >= 2 and loc[0] in where:
        subject = f"{where[loc[0]]} {loc[1]!r}"
    else:
        subject = "the request body"
    sentence = f"{subject}: {err.get('msg', 'is not valid')}"
    return error_response(InvalidParameter(sentence), request.url.path)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """Starlette's last-resort answer: the edge logs the exception when it surfaces there."""
    return error_response(internal_error(request.state.request_id), request.url.path)


async def client_disconnected(request: Request, exc: Exception) -> Response:
    """The client left mid-request: nobody reads this answer; 499 keeps logs and metrics honest."""
    return Response(status_code=499)


class OneLineStartupError:
    """A model that cannot load stops the start with one line naming the file, not a traceback.

    The lifespan records the line on ``app.state``; this swaps it in for the traceback that
    Starlette puts in ``lifespan.startup.failed`` (the message uvicorn prints).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_concise(message: Message) -> None:
            line = getattr(scope["app"].state, "startup_error", None)
            if message["type"] == "lifespan.startup.failed" and line:
                message = {**message, "message": line}
            await send(message)

        await self.app(scope, receive, send_concise)


class ConvscopeApp(FastAPI):
    """FastAPI with the edge (service/edge.py) in front of everything, its middleware included."""

    edge: Edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.edge(scope, receive, send)

    async def behind_edge(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def operation_id(route: APIRoute) -> str:
    return route.name


def create_app(settings: Settings, static_dir: Path | None = STATIC) -> FastAPI:
    """The app for these settings; the web page is served at / when static_dir has index.html."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.startup_error = None
        # The decoding threads are the app's: made here, shut down with it.
        app.state.decoders = Decoders(settings.decode_threads, settings.max_pixels)
        try:
            try:
                app.state.registry = await Registry.load(settings, metrics)
            except ModelError as exc:
                app.state.startup_error = f"cannot start: {exc}"
                raise
            names = ", ".join(m.name for m in app.state.registry)
            log.info("ready: %s (default %s)", names, app.state.registry.default_name)
            # SIGHUP and file watch; the gRPC server when CONVSCOPE_GRPC_PORT is set
            async with (
                reloading(app.state.registry, metrics, settings),
                grpc_serving(app.state, settings),
            ):
                yield
        finally:
            app.state.registry = None
            app.state.decoders.close()

    app = ConvscopeApp(
        title="convscope",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    app.state.settings, app.state.metrics, app.state.registry = settings, metrics, None

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ClientDisconnect, client_disconnected)
    app.add_exception_handler(Exception, unexpected_error)
    app.add_middleware(OneLineStartupError)
    # Every request passes the edge; plain raw-body classifications are then answered by the
    # fast lane (service/fastlane.py), everything else by FastAPI.
    app.edge = Edge(app.behind_edge, settings, metrics, fast=FastLane(settings, app.state))

    for router in ROUTERS:
        app.include_router(router)
    if static_dir is not None and (static_dir / "index.html").is_file():
        # Last, at "/": the API routes above take precedence over file names.
        app.mount("/", StaticFiles(directory=static_dir, html=True), name="web")
    return app


def create_app_from_env() -> FastAPI:
    """For uvicorn's ``factory=True`` with several workers: settings from CONVSCOPE_* only."""
    return create_app(Settings())
