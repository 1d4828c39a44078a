"""Real servers for end-to-end tests: the service (tests/server.py, the one server harness),
and a static site on another port (another origin) for the cross-origin checks.

Handed out as factory fixtures (pytest runs with --import-mode=importlib, so test modules cannot
import this file): ``with service_factory({"CONVSCOPE_API_KEYS": "k"}) as svc: ... svc.url``.
"""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from tests.server import run_server


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
    """``run_server(env=..., model_dir=...)``: a context manager running a real service."""
    return lambda env=None, **kw: run_server(env=env, **kw)


@pytest.fixture(scope="session")
def site_factory() -> Any:
    """``StaticSite(folder)``: a context manager serving a plain page from another origin."""
    return StaticSite
