"""Where gRPC meets the request path: one wrapper every call passes, like the HTTP edge.

Request id (metadata ``x-request-id``, returned in the trailing metadata), API key (metadata
``authorization: Bearer <key>`` or ``x-api-key``; health calls stay open, as on /v2), the
message-size limit, the service's errors as gRPC status codes with the same sentences, and one
metrics observation and access line per call (method ``GRPC``, the call's full name as path and
route, the HTTP status the same error gets over HTTP).

The first block below is the part of the request edge's public API this module uses (the names
and signatures of service/edge.py, issue 13, written at the same time); until that lands it
forwards to today's pieces. At the merge it becomes ``from ..edge import internal_error,
log_unexpected, record, request_id, require_key, too_large`` and nothing else here changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from ..edge import internal_error, log_unexpected, record, request_id, require_key, too_large
from ..errors import BadRequest, PayloadTooLarge, ServiceError
from ..settings import Settings

# ---- gRPC --------------------------------------------------------------------------------------

METHOD = "GRPC"
# The HTTP status of a service error -> the gRPC code that says the same.
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
CLIENT_LEFT = 499  # as on HTTP: the call was cancelled before an answer

Work = Callable[[Any, Any], Awaitable[Any]]


def status_code(http_status: int) -> grpc.StatusCode:
    return STATUS_CODES.get(http_status, grpc.StatusCode.INTERNAL)


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    pairs = context.invocation_metadata() or ()
    return {k.lower(): v for k, v in pairs if isinstance(v, str)}  # "-bin" values are bytes


def _client(peer: str | None) -> str | None:
    # "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "unix:/path"
    if not peer or ":" not in peer:
        return None
    kind, address = peer.split(":", 1)
    if kind == "ipv6":
        return address.rsplit(":", 1)[0].strip("[]")
    return address.rsplit(":", 1)[0] if kind == "ipv4" else address


@dataclass(frozen=True)
class Gate:
    """Wraps each call's work: ``gate.call(name, work, ...)`` is a grpc.aio unary behaviour."""

    service: str  # "inference.GRPCInferenceService"
    state: Any  # the app's state: settings, metrics, registry (None until loaded)

    def call(
        self,
        name: str,
        work: Work,
        *,
        open_call: bool = False,
        parse: Callable[[bytes], Any] | None = None,
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        """``parse``: the call receives the raw message, checked against the size limit here
        (our sentence) and then parsed, rather than refused by gRPC with its own words."""
        route = f"/{self.service}/{name}"
        settings: Settings = self.state.settings

        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            metadata = _metadata(context)
            rid = request_id(metadata.get("x-request-id"))
            trailing = (("x-request-id", rid),)
            context.set_trailing_metadata(trailing)
            status, error = 200, None
            try:
                if not open_call:
                    require_key(settings, metadata.get("authorization"), metadata.get("x-api-key"))
                if parse is not None:
                    request = _parsed(request, parse, settings.max_upload_bytes)
                response = await work(request, self.state)
            except ServiceError as exc:
                status, error = exc.status, exc
            except asyncio.CancelledError:
                status = CLIENT_LEFT
                raise
            except Exception:
                log_unexpected(METHOD, route, rid)
                status, error = 500, internal_error(rid)
            finally:
                record(
                    self.state.metrics,
                    method=METHOD,
                    path=route,
                    route=route,
                    status=status,
                    seconds=time.perf_counter() - started,
                    request_id=rid,
                    client=_client(context.peer()),
                )
            if error is not None:
                await context.abort(status_code(error.status), error.message, trailing)
            return response

        return behaviour


def _parsed(data: bytes, parse: Callable[[bytes], Any], limit: int) -> Any:
    if len(data) > limit:
        error: PayloadTooLarge = too_large(limit)
        raise error
    try:
        return parse(data)
    except DecodeError:
        raise BadRequest("the request is not a valid message of this call's type") from None
