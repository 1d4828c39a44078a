"""Connection deadlines, so slow clients cannot hold connections: uvicorn has none of its own.

The request edge (service/edge.py) times the body of each request the app reads; this is the
layer below it, for what no request handler sees: ``DeadlineHttpToolsProtocol`` makes the
request line and headers arrive within ``header_timeout`` of the connection opening or the
request's first byte, gives whole messages a backstop (``body_timeout`` plus a grace) for bodies
the app never reads (a slow body sent to /healthz), answers late connections 408 (when any
request bytes came) and closes them. An answer given before the request body is in (the edge's
408 and 413 close the connection) is followed by a lingering close: half-close, then read and
drop what the client still sends, for a bounded time and size, so that a client that sends its
whole body before reading gets the answer rather than a reset.

uvicorn's ``timeout_keep_alive`` already closes connections idle between requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import balance
from .edge import error_body
from .errors import RequestTimeout

BACKSTOP_GRACE_S = 1.0  # the app's own 408 comes first; the connection layer only cleans up
# After an answer given before the body is in (408, 413): how long, and how much more of the
# upload, the connection reads and drops so that the client, which may send its whole body before
# reading (Python's requests and http.client do), reads the answer instead of a reset. 64 MiB
# covers the uploads a picture service sees refused (a 20 MB photo against the 10 MiB limit).
LINGER_S = 2.0
LINGER_MAX_BYTES = 64 * 1024 * 1024


def _raw_408(message: str) -> bytes:
    body = error_body(RequestTimeout(message))
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _CycleTransport:
    """The transport as uvicorn's request cycle sees it: its close() goes through the protocol,
    which lingers when the client is still sending (see ``_close``), and a response head is
    sent together with the body that follows it; all else passes through.

    uvicorn writes the head and the body of a response separately: two send() calls, and on
    loopback each costs about as much CPU as the whole of the fast lane's classification
    (benchmarks/README.md). The head is held until the next write, or the end of this turn
    of the event loop at the latest, so a plain answer leaves in one call.
    """

    def __init__(self, transport: asyncio.Transport, protocol: DeadlineHttpToolsProtocol) -> None:
        self._transport, self._protocol = transport, protocol
        self._head: bytes | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif data[:5] == b"HTTP/" and data[-4:] == b"\r\n\r\n":
            self._head = bytes(data)
            self._protocol.loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._protocol._close()

    def is_closing(self) -> bool:
        return self._protocol._lingering or self._transport.is_closing()


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a whole-message backstop, and a
    lingering close: an answer given before the request body is in (413, 408) is followed by a
    half-close and a short drain, because closing a socket with unread data sends a reset that
    can destroy the answer before the client reads it."""

    def __init__(
        self, *args: Any, header_timeout: float, body_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout, self.body_timeout = header_timeout, body_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self._in_request = False  # a request message has begun and not fully arrived
        self._lingering = False
        self._lingered = 0
        self._raw: asyncio.Transport | None = None
        self._balance = balance.current()  # None with one process
        self._moving = False  # told to close, for another worker to take the client's next

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._raw = transport
        self.transport = _CycleTransport(transport, self)  # type: ignore[assignment]
        self._arm(self.header_timeout, self._headers_late)
        if self._balance is not None:
            self._balance.opened()

    def data_received(self, data: bytes) -> None:
        if self._lingering:  # answered and closing: discard what the client still sends
            self._lingered += len(data)
            if self._lingered > LINGER_MAX_BYTES and self._raw is not None:
                self._raw.close()
            return
        super().data_received(data)

    def eof_received(self) -> None:
        if self._lingering and self._raw is not None:
            self._raw.close()  # the client has stopped sending: the linger is over
            return
        super().eof_received()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_request = True
        if self._deadline is None:  # a later request on a kept-alive connection
            self._arm(self.header_timeout, self._headers_late)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_timeout + BACKSTOP_GRACE_S, self._message_late)
        cycle = self.cycle
        if (
            self._balance is not None
            and not self._moving
            and cycle is not None
            and cycle.keep_alive
            and not self.pipeline  # a pipelined request behind it would be lost
            and self._balance.should_close()
        ):
            self._moving = True
            cycle.keep_alive = False  # the answer says `Connection: close`, then it closes

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._in_request = False

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._balance is not None:
            self._balance.closed(told_to_close=self._moving)
        super().connection_lost(exc)

    def _headers_late(self) -> None:
        self._deadline = None
        if self._raw is None or self._raw.is_closing():
            return
        idle = self.cycle is None or self.cycle.response_complete
        if self._in_request and idle:  # nothing else is being written on this connection
            self._raw.write(_raw_408("the request headers did not arrive in time"))
        self._abandon_cycle()
        self._close()

    def _message_late(self) -> None:
        self._deadline = None
        if self._raw is None or self._raw.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_started:
            self._raw.write(_raw_408("the request body did not arrive in time"))
        self._abandon_cycle()
        self._close()

    def _abandon_cycle(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            # The app's reads now see a disconnect and its writes are dropped.
            self.cycle.disconnected = True
            self.cycle.message_event.set()

    def _close(self) -> None:
        raw = self._raw
        if raw is None or self._lingering or raw.is_closing():
            return
        if not self._in_request or not raw.can_write_eof():
            raw.close()
            return
        # The client is still sending a request we have answered: send our FIN after the
        # answer, keep reading (and discarding) for a moment, then close.
        self._lingering = True
        self._disarm()
        with contextlib.suppress(Exception):
            raw.resume_reading()
        raw.write_eof()
        self._deadline = self.loop.call_later(LINGER_S, raw.close)


def http_protocol(header_timeout: float, body_timeout: float) -> Any:
    """The ``http`` argument for uvicorn.Config (a picklable partial, for worker processes)."""
    return functools.partial(
        DeadlineHttpToolsProtocol, header_timeout=header_timeout, body_timeout=body_timeout
    )
