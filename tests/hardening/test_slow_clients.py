"""Slow clients: 200 connections trickling headers or bodies (or idle) cannot stop normal requests
and are dropped at the server's read deadlines (``benchmarks/slowloris.py``, run short)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from tests.server import ROOT, clean_env, run_server

pytestmark = pytest.mark.e2e

HEADER_S, BODY_S = 2.0, 3.0
SLACK_S = 2.0  # a deadline fires within this of its time, on two busy cores


def test_slow_clients_are_dropped_and_normal_requests_stay_fast() -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "slowloris.py"), "--json"]
    command += ["--seconds", "8", "--connections", "200", "--normal", "4"]
    command += ["--header-timeout", str(HEADER_S), "--body-timeout", str(BODY_S)]
    command += ["--max-hold", str(BODY_S + SLACK_S + 1)]
    done = subprocess.run(
        command, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=180
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print("\n", result)
    assert result["normal_failures"] == {}, result
    assert result["normal_requests"] >= 20, result
    assert result["normal_p99_ms"] < 1000, result
    assert result["slow_never_dropped"] == {}, result
    dropped = result["slow_connections_dropped"]
    assert min(dropped.values()) >= 40, result  # every kind was dropped, again and again
    held = result["slow_longest_hold_s"]
    assert held["headers"] <= HEADER_S + SLACK_S, result
    assert held["idle"] <= HEADER_S + SLACK_S, result
    assert held["body"] <= HEADER_S + BODY_S + SLACK_S, result
    # A request whose body never arrives is answered, not just cut: 408 in the error shape.
    assert result["slow_answers"].get("body 408", 0) >= dropped["body"] * 0.9, result
    assert done.returncode == 0, done.stderr[-2000:]


def _exchange(port: int, chunks: list[bytes], pause: float) -> tuple[bytes, float]:
    """Send ``chunks`` with ``pause`` between them; return what came back and when it ended."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        start = time.monotonic()
        for chunk in chunks:
            try:
                s.sendall(chunk)
            except OSError:
                break
            time.sleep(pause)
        data = b""
        while True:
            try:
                part = s.recv(65536)
            except (TimeoutError, ConnectionError):
                break
            if not part:
                break
            data += part
        return data, time.monotonic() - start


def _one_response(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            v
            for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
            if k.strip().lower() == b"content-length"
        )
    )
    while len(body) < length:
        body += s.recv(65536)
    return data


def test_deadlines_leave_prompt_clients_alone() -> None:
    """A request sent in pieces, each well inside the deadlines, is served normally."""
    env = {"CONVSCOPE_HEADER_TIMEOUT_S": str(HEADER_S), "CONVSCOPE_BODY_TIMEOUT_S": str(BODY_S)}
    with run_server(env=env) as server:
        from hardening_harness import png_bytes

        body = png_bytes()
        head = (
            "POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        pieces = [head[:20], head[20:], body[:100], body[100:]]
        data, _ = _exchange(server.port, pieces, pause=0.4)
        assert data.startswith(b"HTTP/1.1 200"), data[:300]
        # Keep-alive: a second request on the same connection after a pause gets its own clock.
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
            get = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
            for _ in range(3):
                s.sendall(get)
                assert _one_response(s).startswith(b"HTTP/1.1 200")
                time.sleep(HEADER_S * 0.6)  # the sum of pauses is past the header deadline


def test_slow_body_gets_a_408_json_error() -> None:
    env = {"CONVSCOPE_HEADER_TIMEOUT_S": str(HEADER_S), "CONVSCOPE_BODY_TIMEOUT_S": str(BODY_S)}
    with run_server(env=env) as server:
        head = b"POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
        head += b"Content-Length: 1000\r\n\r\n"
        data, took = _exchange(server.port, [head] + [b"\x00"] * 20, pause=0.3)
        assert data.startswith(b"HTTP/1.1 408"), data[:300]
        assert b'"code":' in data.replace(b" ", b"") and b"request_timeout" in data, data
        assert BODY_S - 0.5 <= took <= BODY_S + SLACK_S + 0.3 * 2, took
        assert b"x-request-id" in data.lower()
        log = server.log()
        assert "Traceback" not in log and "ClientDisconnect" not in log, log[-3000:]
