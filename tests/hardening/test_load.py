"""Load: a short soak (mixed traffic, concurrency 64) gets no 5xx; concurrent oversized uploads,
with and without Content-Length, get a quick 413 while the server's peak RSS stays low.

The 60-second soak is ``benchmarks/soak.py`` with its defaults; this runs it for a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
import pytest
from hardening_harness import RawClient, png_bytes

from tests.server import ROOT, Server, clean_env, run_server

pytestmark = pytest.mark.e2e

SOAK_SECONDS = 8
LIMIT = 2 * 1024 * 1024  # the test server's CONVSCOPE_MAX_UPLOAD_BYTES
SENT_AT_MOST = 60 * 1024 * 1024  # an attacker would send forever; the test stops here
CHUNK = 64 * 1024
PEAK_RSS_MB = 300.0
QUICK_S = 10.0  # loose: two cores, shared with whatever else runs


def test_short_soak_has_no_server_errors(server: Server) -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--url", server.url]
    command += ["--seconds", str(SOAK_SECONDS), "--concurrency", "64", "--json"]
    done = subprocess.run(
        command, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=120
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status_5xx"] == 0, result
    assert result["transport_errors"] == 0, (result["errors"], server.log_path.read_text()[-4000:])
    assert result["unexpected"] == {}, result
    assert result["requests"] >= 64, result
    assert done.returncode == 0, done.stderr


@dataclass
class Upload:
    kind: str
    status: int | None = None
    seconds: float = float("nan")
    sent: int = 0
    closed: bool = False  # the server closed the connection after answering


async def oversized(port: int, kind: str) -> Upload:
    """Send far more than the limit the way ``kind`` says; note when the answer came."""
    upload = Upload(kind)
    client = await RawClient.connect(port)
    boundary = "b0undary"
    head = "POST /v1/classify HTTP/1.1\r\nHost: test\r\n"
    if kind == "multipart-chunked":
        head += f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
    else:
        head += "Content-Type: image/png\r\n"
    if kind in ("content-length", "expect-100"):
        head += f"Content-Length: {200 * 1024 * 1024}\r\n"
    else:
        head += "Transfer-Encoding: chunked\r\n"
    if kind == "expect-100":
        head += "Expect: 100-continue\r\n"
    start = time.perf_counter()
    await client.send((head + "\r\n").encode())
    prefix = b""
    if kind == "multipart-chunked":
        prefix = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"'
            "\r\nContent-Type: image/png\r\n\r\n"
        ).encode() + png_bytes()
    payload = prefix + b"\x00" * (CHUNK - len(prefix))
    deadline = start + QUICK_S
    while kind != "expect-100" and client.status() is None and upload.sent < SENT_AT_MOST:
        frame = payload
        if kind != "content-length":
            frame = f"{len(payload):x}\r\n".encode() + payload + b"\r\n"
        try:
            sent = await asyncio.wait_for(client.send(frame), deadline - time.perf_counter())
        except TimeoutError:
            break
        if not sent:
            break
        upload.sent += len(payload)
        payload = b"\x00" * CHUNK
    try:
        while client.status() is None and not client.closed.is_set():
            client.arrived.clear()
            await asyncio.wait_for(client.arrived.wait(), max(0.01, deadline - time.perf_counter()))
        upload.status = client.status()
        upload.seconds = time.perf_counter() - start
        await asyncio.wait_for(client.closed.wait(), 5)
        upload.closed = True
    except TimeoutError:
        pass
    finally:
        client.close()
    return upload


KINDS = ["content-length", "expect-100", "chunked", "multipart-chunked"]


async def _burst(port: int, each: int) -> list[Upload]:
    return await asyncio.gather(*(oversized(port, kind) for kind in KINDS for _ in range(each)))


def test_oversized_uploads_get_413_quickly_in_little_memory() -> None:
    with run_server(env={"CONVSCOPE_MAX_UPLOAD_BYTES": str(LIMIT)}) as server:
        before = server.peak_rss_mb()
        uploads = asyncio.run(_burst(server.port, each=8))
        peak = server.peak_rss_mb()
        statuses = {(u.kind, u.status) for u in uploads}
        assert statuses == {(kind, 413) for kind in KINDS}, uploads
        slowest = max(u.seconds for u in uploads)
        assert slowest < QUICK_S, uploads
        # Far less than offered went out: the answer came (and the socket closed) early.
        assert all(u.sent < SENT_AT_MOST / 2 for u in uploads), uploads
        assert all(u.closed for u in uploads), [u for u in uploads if not u.closed]
        assert peak < PEAK_RSS_MB, f"peak RSS {peak:.0f} MB (before the burst {before:.0f} MB)"
        print(f"\n413 for {len(uploads)} uploads, slowest {slowest:.2f} s, peak RSS {peak:.0f} MB")


def test_big_pictures_under_the_pixel_limit_stay_in_little_memory() -> None:
    """A few-kB PNG can decode to 100+ MB: the picture is box-reduced right after decoding, so
    the steps after it work on a small copy. RGBA still needs one full-size premultiplied copy
    for a correct reduction, hence its looser bound."""
    from hostile_pictures import _idat_bomb

    with run_server() as server:
        for colour, channels, bound_mb in [(0, 1, PEAK_RSS_MB), (2, 3, PEAK_RSS_MB), (6, 4, 450)]:
            data = _idat_bomb(6000, colour, channels)  # 36 Mpx, under the 40 Mpx default
            response = httpx.post(
                f"{server.url}/v1/classify",
                content=data,
                headers={"content-type": "image/png"},
                timeout=120,
            )
            assert response.status_code == 200, response.text
            peak = server.peak_rss_mb()
            assert peak < bound_mb, f"{channels} channels: peak RSS {peak:.0f} MB"
