"""What the hardening tests add to the one server harness (tests/server.py): a normal picture,
percentiles, process checks and a raw HTTP client that keeps every byte the server sent.
"""

from __future__ import annotations

import asyncio
import os
import signal

from tests.server import Server


def png_bytes(side: int = 28, value: int = 128) -> bytes:
    """A plain greyscale PNG: the 'normal request' the tests send between attacks."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (side, side), value).save(buf, "PNG")
    return buf.getvalue()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(server: Server, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
    server.signal(sig)
    return server.process.wait(timeout=timeout)


class RawClient(asyncio.Protocol):
    """A raw HTTP/1.1 connection that keeps every byte the server sent, even when the server then
    resets the connection (asyncio's StreamReader raises the reset and hides such bytes)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = asyncio.Event()
        self.arrived = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(cls, "127.0.0.1", port)
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self.arrived.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def send(self, data: bytes) -> bool:
        """Write (waiting while the server is not reading); False once the connection is gone."""
        if self.closed.is_set() or self.transport is None:
            return False
        self.transport.write(data)
        await self._writable.wait()
        return not self.closed.is_set()

    def status(self) -> int | None:
        line, sep, _ = bytes(self.data).partition(b"\r\n")
        return int(line.split()[1]) if sep and line.startswith(b"HTTP/") else None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
