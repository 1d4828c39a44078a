"""Real servers for end-to-end tests: the service as a uvicorn process, and a static site on
another port (another origin) for the cross-origin checks.

Handed out as factory fixtures (pytest runs with --import-mode=importlib, so test modules cannot
import this file): ``with start_service({"CONVSCOPE_API_KEYS": "k"}) as svc: ... svc.url``.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
STARTUP_S = 90.0  # model loading shares two cores with a training run in CI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    sites: dict[str, Any] = field(default_factory=dict)


@contextmanager
def start_service(
    env: dict[str, str] | None = None, model_dir: Path | None = None
) -> Iterator[Service]:
    """`python -m service` on a free loopback port, ready (GET /readyz is 200) when yielded."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    cmd = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--model-dir", str(model_dir or ROOT / "models")]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            cmd, cwd=ROOT, env={**clean, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process, log)
            yield Service(url, process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Any) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the service exited ({process.returncode}):\n{log.read().decode()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    log.seek(0)
    raise RuntimeError(f"the service was not ready in {STARTUP_S:.0f} s:\n{log.read().decode()}")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class StaticSite:
    """A plain page served by http.server on its own port: a different origin from the API."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "index.html").write_text(
            "<!doctype html><html lang='en'><meta charset='utf-8'>"
            "<title>another site</title><body><h1>Another site</h1></body></html>"
        )
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StaticSite:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture(scope="session")
def service_factory() -> Any:
    """``start_service(env)``: a context manager running a real service with that environment."""
    return start_service


@pytest.fixture(scope="session")
def site_factory() -> Any:
    """``StaticSite(folder)``: a context manager serving a plain page from another origin."""
    return StaticSite
