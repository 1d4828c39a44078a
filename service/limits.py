"""The request-body limit, enforced while the body streams in (pure ASGI middleware).

A ``Content-Length`` over the limit is refused before a byte is read; a body that is chunked,
or longer than its ``Content-Length`` claimed, is cut off as soon as it passes the limit. Either
way the client gets a 413 in the service's error shape and the server holds at most one chunk
beyond the limit in memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import PayloadTooLarge


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")


def declared_too_large(content_length: bytes | None, limit: int) -> bool:
    """A Content-Length over the limit: refused before a byte of the body is read."""
    return content_length is not None and content_length.isdigit() and int(content_length) > limit


async def send_error(send: Send, status: int, payload: Mapping[str, object]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for key, value in scope["headers"]:
            if key == b"content-length" and declared_too_large(value, limit):
                error = too_large(limit)
                await send_error(send, error.status, error.payload())
                return
        received, started = 0, False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge as error:
            # Normally the app's ServiceError handler has already answered; this covers readers
            # outside it (a body read by middleware or by a mounted app).
            if not started:
                await send_error(send, error.status, error.payload())
