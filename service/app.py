"""``create_app(settings)``: the lifespan loads the models; routers, error handlers, middleware.

Every error leaves as ``{"error": {"code", "message"}}``: our own ServiceErrors, FastAPI's
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
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from .classify import set_decode_threads
from .deadlines import BodyDeadlineMiddleware, client_disconnected
from .errors import ModelError, ServiceError
from .fastlane import FastLane
from .grpc import serving as grpc_serving
from .limits import BodyLimitMiddleware, send_error
from .logs import AccessLogMiddleware, pick_request_id
from .metrics import Metrics, MetricsMiddleware, route_template
from .registry import Registry
from .reloading import reloading
from .routes import ROUTERS
from .routes.v2 import ErrorEnvelope as V2ErrorEnvelope
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


def error_json(status: int, code: str, message: str, headers: dict[str, str] | None = None):
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


async def service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.payload(), exc.status, headers=headers)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    default = HTTPStatus(exc.status_code).phrase
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != default else None
    message = detail or HTTP_MESSAGES.get(exc.status_code, default.lower())
    code = HTTP_CODES.get(exc.status_code, "http_error")
    return error_json(exc.status_code, code, message, dict(exc.headers or {}))


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """The first problem as one sentence; the offending value is never echoed."""
    assert isinstance(exc, RequestValidationError)
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    where = {"query": "query parameter", "path": "path parameter", "header": "header"}
    if len(loc) >= 2 and loc[0] in where:
        subject = f"{where[loc[0]]} {loc[1]!r}"
    else:
        subject = "the request body"
    return error_json(422, "invalid_parameter", f"{subject}: {err.get('msg', 'is not valid')}")


class RequestIdMiddleware:
    """X-Request-ID on every response; unexpected errors logged with it and answered with a 500.

    Catching here rather than in an exception handler keeps the X-Request-ID header on the 500
    and stops the error being logged twice (Starlette re-raises after its handler).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = pick_request_id(dict(scope["headers"]).get(b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unexpected error in %s %s (request id %s)",
                scope["method"],
                route_template(scope),
                request_id,
            )
            if not started:
                message = f"internal error (request id {request_id})"
                payload = {"error": {"code": "internal_error", "message": message}}
                await send_error(send_with_id, 500, payload)


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
    """FastAPI, with the fast lane in front of its middleware stack (its own included)."""

    lane: FastLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.lane is not None:
            outcome = await self.lane.handle(scope, receive, send)
            if outcome is True:
                return
            if outcome is not False:  # the lane read the body: the app gets it from there
                receive = outcome
        await super().__call__(scope, receive, send)


def operation_id(route: APIRoute) -> str:
    return route.name


def create_app(settings: Settings, static_dir: Path | None = STATIC) -> FastAPI:
    """The app for these settings; the web page is served at / when static_dir has index.html."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.startup_error = None
        set_decode_threads(settings.decode_threads)
        try:
            app.state.registry = await Registry.load(settings, metrics)
        except ModelError as exc:
            app.state.startup_error = f"cannot start: {exc}"
            raise
        names = ", ".join(m.name for m in app.state.registry)
        log.info("ready: %s (default %s)", names, app.state.registry.default_name)
        try:
            # SIGHUP and file watch; the gRPC server when CONVSCOPE_GRPC_PORT is set
            async with (
                reloading(app.state.registry, metrics, settings),
                grpc_serving(app.state, settings),
            ):
                yield
        finally:
            app.state.registry = None

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

    # Added innermost first: the request id wraps everything, so even a 500 carries it.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(BodyDeadlineMiddleware, timeout=settings.body_timeout_s)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(V2ErrorEnvelope)  # /v2 errors in the protocol's shape, 413 and 500 too
    app.add_middleware(AccessLogMiddleware)  # one line per request, as the client saw it
    app.add_middleware(OneLineStartupError)
    # Before all of it: plain raw-body classifications are answered there (service/fastlane.py).
    app.lane = FastLane(settings, metrics, app.state)

    for router in ROUTERS:
        app.include_router(router)
    if static_dir is not None and (static_dir / "index.html").is_file():
        # Last, at "/": the API routes above take precedence over file names.
        app.mount("/", StaticFiles(directory=static_dir, html=True), name="web")
    return app


def create_app_from_env() -> FastAPI:
    """For uvicorn's ``factory=True`` with several workers: settings from CONVSCOPE_* only."""
    return create_app(Settings())
