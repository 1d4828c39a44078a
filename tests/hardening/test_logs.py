"""Logs: with CONVSCOPE_LOG_FORMAT=json every line is a JSON object, one per request with method,
path, status, duration and the request id returned as X-Request-ID; nothing a client uploads,
no file path and no traceback reaches a log line or an error body."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from hardening_harness import png_bytes

from tests.server import MODELS, Server, run_server

pytestmark = pytest.mark.e2e

SECRET = "upload-secret-7f3a9c"  # sent inside uploads and queries; must never be logged


@pytest.fixture(scope="module")
def json_server() -> Iterator[Server]:
    with run_server(env={"CONVSCOPE_LOG_FORMAT": "json"}) as server:
        yield server


def lines(server: Server) -> list[dict[str, object]]:
    out = []
    for raw in server.log().splitlines():
        if raw.strip():
            out.append(json.loads(raw))  # every line, uvicorn's own included, is JSON
    return out


def requests_logged(server: Server) -> list[dict[str, object]]:
    return [line for line in lines(server) if line.get("logger") == "service.access"]


def test_every_line_is_json_and_each_request_has_one_line(json_server: Server) -> None:
    sent: list[tuple[str, str, int, str]] = []
    with httpx.Client(base_url=json_server.url, timeout=30) as client:
        calls = [
            ("GET", "/healthz", {}),
            ("POST", "/v1/classify", {"files": {"file": ("a.png", png_bytes())}}),
            ("POST", "/v1/classify", {"files": {"file": ("b.png", f"{SECRET}".encode())}}),
            ("GET", "/v1/models/no-such-model", {}),
            ("POST", f"/v1/classify?top_k={SECRET}", {"content": png_bytes()}),
        ]
        for method, path, kwargs in calls:
            response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
            request_id = response.headers["x-request-id"]
            sent.append((method, path.split("?")[0], response.status_code, request_id))
        # A caller's own id is kept when it is sane, replaced when it is not.
        own = client.get("/healthz", headers={"x-request-id": "trace-42.a_b"})
        assert own.headers["x-request-id"] == "trace-42.a_b"
        sent.append(("GET", "/healthz", 200, "trace-42.a_b"))
        bad = client.get("/healthz", headers={"x-request-id": b"x\xe2\x80\xa8 {}" + b"y" * 500})
        assert bad.headers["x-request-id"] != "" and "y" * 100 not in bad.headers["x-request-id"]
        sent.append(("GET", "/healthz", 200, bad.headers["x-request-id"]))

    # A line is written just after its answer is sent: give the last ones a moment.
    deadline = time.monotonic() + 5
    while True:
        logged = requests_logged(json_server)
        by_id = {line["request_id"]: line for line in logged}
        if all(s[3] in by_id for s in sent) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(by_id) == len(logged), "a request id appears twice"
    for method, path, status, request_id in sent:
        line = by_id[request_id]
        assert (line["method"], line["path"], line["status"]) == (method, path, status), line
        assert isinstance(line["duration_ms"], float | int) and line["duration_ms"] >= 0
        assert {"time", "level", "message"} <= set(line)
    assert [s for _, _, s, _ in sent] == [200, 200, 415, 404, 422, 200, 200]


def test_logs_hold_no_upload_path_or_traceback(json_server: Server) -> None:
    with httpx.Client(base_url=json_server.url, timeout=30) as client:
        for data in (f"{SECRET}".encode(), b"\x89PNG\r\n\x1a\n" + SECRET.encode()):
            response = client.post("/v1/classify", files={"file": (f"{SECRET}.png", data)})
            assert 400 <= response.status_code < 500
            assert SECRET not in response.text
        client.post(f"/v1/classify?feature_maps={SECRET}", files={"file": ("a", png_bytes())})
    text = json_server.log()
    assert SECRET not in text
    assert "Traceback" not in text
    assert str(MODELS) not in "\n".join(json.dumps(line) for line in requests_logged(json_server))


def test_text_logs_by_default_carry_the_request_id(server: Server) -> None:
    response = httpx.get(f"{server.url}/healthz", timeout=10)
    request_id = response.headers["x-request-id"]
    line = server.wait_log(request_id, timeout=5).splitlines()
    mine = [ln for ln in line if request_id in ln]
    assert len(mine) == 1 and "GET /healthz 200" in mine[0], mine
