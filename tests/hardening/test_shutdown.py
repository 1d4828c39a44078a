"""Graceful shutdown: on SIGTERM the requests in flight finish with 200, new connections are
refused, and the process exits 0; a client that never finishes cannot hold the exit past
CONVSCOPE_GRACEFUL_SHUTDOWN_S."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from hardening_harness import png_bytes

from tests.server import run_server

pytestmark = pytest.mark.e2e

UPLOAD_S = 2.0  # each in-flight request takes this long to send its body


def slow_body(data: bytes, seconds: float, pieces: int = 8) -> Iterator[bytes]:
    step = max(1, len(data) // pieces)
    for start in range(0, len(data), step):
        yield data[start : start + step]
        time.sleep(seconds / pieces)


def test_sigterm_lets_requests_in_flight_finish() -> None:
    with run_server() as server:
        results: list[int | str] = []
        started = threading.Barrier(9)

        def call(extras: bool) -> None:
            query = "?feature_maps=true&cam=true" if extras else ""
            with httpx.Client(base_url=server.url, timeout=60) as client:
                started.wait()
                try:
                    response = client.post(
                        f"/v1/classify{query}",
                        content=slow_body(png_bytes(), UPLOAD_S),
                        headers={"content-type": "image/png"},
                    )
                    results.append(response.status_code)
                except httpx.HTTPError as exc:
                    results.append(type(exc).__name__)

        threads = [threading.Thread(target=call, args=(i % 2 == 0,)) for i in range(8)]
        for t in threads:
            t.start()
        started.wait()
        time.sleep(UPLOAD_S / 3)  # every request is now mid-body
        server.signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # no new connections once stopping
            httpx.get(f"{server.url}/healthz", timeout=2)
        code = server.process.wait(timeout=30)
        for t in threads:
            t.join(timeout=30)
        assert results == [200] * 8, results
        assert code == 0, server.log()[-2000:]
        log = server.log()
        assert "Traceback" not in log, log[-3000:]
        assert log.count("POST /v1/classify 200") == 8, log[-3000:]


def test_a_stuck_client_cannot_hold_the_exit() -> None:
    env = {"CONVSCOPE_GRACEFUL_SHUTDOWN_S": "1", "CONVSCOPE_BODY_TIMEOUT_S": "600"}
    with run_server(env=env) as server:
        stuck = threading.Thread(target=_stuck_upload, args=(server.url,), daemon=True)
        stuck.start()
        time.sleep(1.0)
        start = time.monotonic()
        server.signal(signal.SIGTERM)
        code = server.process.wait(timeout=30)
        took = time.monotonic() - start
        assert took < 1 + 5, took  # the graceful window plus the lifespan's shutdown
        assert code == 0, server.log()[-2000:]


def _stuck_upload(url: str) -> None:
    """A body trickled over a minute: still in flight when the server is told to stop."""
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(
            f"{url}/v1/classify",
            content=slow_body(png_bytes(), 60, pieces=60),
            headers={"content-type": "image/png"},
            timeout=90,
        )
