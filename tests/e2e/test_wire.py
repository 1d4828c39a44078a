"""HTTP/1.1 on the wire against a real server, where the fast lane and the joined response
writes (service/deadlines.py: the head waits for its body) could go wrong: pipelined requests,
``Expect: 100-continue``, chunked uploads, keep-alive, a lone client next to a busy one, and a
refused upload that the client sends in full before it reads the answer.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import requests

from tests import images as pics

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service(service_factory: Any) -> Iterator[Any]:
    with service_factory() as s:
        yield s


@pytest.fixture(scope="module")
def picture(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> bytes:
    return pics.png(fashion_mnist[0][0])


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response off the socket (Content-Length bodies); leftovers stay in ``buffer``."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-head: {bytes(buffer)[:200]!r}"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    size = int(headers.get("content-length", "0"))
    body = bytearray(rest)
    while len(body) < size:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    buffer[:] = body[size:]
    return status, headers, bytes(body[:size])


def post(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n{extra}"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def test_pipelined_requests_get_their_answers_in_order(service: Any, picture: bytes) -> None:
    queries = ["?top_k=1", "?top_k=2", "?top_k=3&feature_maps=conv1", "?top_k=4", "?top_k=0"]
    with connect(service.url) as sock:
        sock.sendall(b"".join(post(f"/v1/classify{q}", picture) for q in queries))
        buffer = bytearray()
        answers = [read_response(sock, buffer) for _ in queries]
    assert [status for status, _, _ in answers] == [200, 200, 200, 200, 422]
    for k, (_, headers, body) in zip([1, 2, 3, 4], answers, strict=False):
        assert headers["content-type"] == "application/json"
        assert len(json.loads(body)["results"][0]["predictions"]) == k
    assert json.loads(answers[2][2])["results"][0]["feature_maps"][0]["layer"] == "conv1"


def test_expect_100_continue_then_the_body(service: Any, picture: bytes) -> None:
    with connect(service.url) as sock:
        head = post("/v1/classify", picture, "Expect: 100-continue\r\n")[: -len(picture)]
        sock.sendall(head)
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        assert bytes(buffer).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        del buffer[: len(b"HTTP/1.1 100 Continue\r\n\r\n")]
        sock.sendall(picture)
        status, _, body = read_response(sock, buffer)
    assert status == 200 and json.loads(body)["results"][0]["predictions"][0]["index"] == 9


def test_chunked_upload_in_pieces(service: Any, picture: bytes) -> None:
    pieces = [picture[i : i + 50] for i in range(0, len(picture), 50)]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    head = b"POST /v1/classify HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    with connect(service.url) as sock:
        sock.sendall(head)
        for i in range(0, len(chunked), 97):  # arrives in several reads
            sock.sendall(chunked[i : i + 97])
        status, _, body = read_response(sock, bytearray())
    assert status == 200 and json.loads(body)["results"][0]["predictions"][0]["index"] == 9


def test_keep_alive_serves_many_requests_and_other_routes(service: Any, picture: bytes) -> None:
    with httpx.Client(base_url=service.url) as client:
        for i in range(200):
            r = client.post("/v1/classify", content=picture)
            assert r.status_code == 200 and r.headers["content-length"] == str(len(r.content))
            if i % 50 == 0:
                assert client.get("/readyz").status_code == 200
                assert client.get("/v1/models").status_code == 200


def test_a_lone_client_and_a_busy_one_get_the_same_answers(
    service: Any, fashion_mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    """Lone requests run inline, concurrent ones in batches: the answers must not differ."""
    bodies = [pics.png(a) for a in fashion_mnist[0][:24]]
    with httpx.Client(base_url=service.url) as client:
        alone = [client.post("/v1/classify?top_k=10", content=b).json() for b in bodies]
    together: list[Any] = [None] * len(bodies)

    def worker(offset: int) -> None:
        with httpx.Client(base_url=service.url) as client:
            for i in range(offset, len(bodies), 8):
                together[i] = client.post("/v1/classify?top_k=10", content=bodies[i]).json()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together, strict=True):
        pa = {p["index"]: p["probability"] for p in a["results"][0]["predictions"]}
        pb = {p["index"]: p["probability"] for p in b["results"][0]["predictions"]}
        assert pa.keys() == pb.keys()
        assert max(abs(pa[k] - pb[k]) for k in pa) < 1e-5


def _post_with_http_client(url: str, body: bytes) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", "/v1/classify", body=body)  # the whole body, then the answer
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _chunks(total: int) -> Iterator[bytes]:
    for _ in range(total // 2**20):
        yield b"\0" * 2**20


@pytest.mark.parametrize("client", ["requests", "http.client", "requests, chunked"])
def test_a_client_sending_its_whole_body_first_reads_the_413(service: Any, client: str) -> None:
    """20 MB against the 10 MiB limit, sent in full before the answer is read: the server has
    answered (and half-closed) long before, and drains the rest rather than resetting."""
    body = b"\0" * (20 * 2**20)
    too_large = {
        "error": {
            "code": "payload_too_large",
            "message": f"the request body is larger than the limit of {10 * 2**20} bytes",
        }
    }
    if client == "http.client":
        status, content = _post_with_http_client(service.url, body)
    else:
        data = _chunks(len(body)) if client.endswith("chunked") else body
        r = requests.post(f"{service.url}/v1/classify", data=data, timeout=30)
        status, content = r.status_code, r.content
    assert (status, json.loads(content)) == (413, too_large)
