"""Real service processes for the hardening tests: start, wait, signal, read logs and peak RSS.

Each server is ``python -m service`` on a free loopback port, with its default worker processes
(a supervisor and one worker per core; memory is read from each of them). Its output goes to a
file the tests read.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
STARTUP_S = 90.0  # model loading shares two cores with other work in CI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any CONVSCOPE_* the caller had set, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    return {**base, **(env or {})}


def service_command(port: int, model_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "service",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model-dir",
        str(model_dir),
    ]


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def pids(self) -> list[int]:
        """The service's processes: the one started and its workers."""
        return [self.process.pid, *children(self.process.pid)]

    def peak_rss_mb(self) -> float:
        """The kernel's high-water mark of resident memory (VmHWM) of the service's largest
        process: the one that took the load."""
        return max(status_mb(pid, "VmHWM") for pid in self.pids())

    def rss_mb(self) -> float:
        return max(status_mb(pid, "VmRSS") for pid in self.pids())

    def wait_log(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            time.sleep(0.1)
        raise AssertionError(
            f"{text!r} did not appear in the log within {timeout} s:\n{self.log()}"
        )


@contextmanager
def run_server(
    model_dir: Path = MODELS, env: dict[str, str] | None = None, ready: bool = True
) -> Iterator[Server]:
    """A service process, ready (GET /readyz is 200) when yielded; stopped (and reaped) after."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="convscope-hardening-") as tmp:
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                service_command(port, model_dir),
                cwd=ROOT,
                env=clean_env(env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = Server(f"http://127.0.0.1:{port}", port, process, log_path)
        try:
            if ready:
                wait_ready(server)
            yield server
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def wait_ready(server: Server, timeout: float = STARTUP_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the service exited ({server.process.returncode}):\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service was not ready in {timeout:.0f} s:\n{server.log()}")


def start_and_exit(
    model_dir: Path, env: dict[str, str] | None = None, timeout: float = STARTUP_S
) -> subprocess.Popen[bytes]:
    """Start a service that is expected to refuse to start; the caller collects it."""
    return subprocess.Popen(
        service_command(free_port(), model_dir),
        cwd=ROOT,
        env=clean_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


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
