"""Slow clients: C connections that trickle headers, trickle bodies or sit idle, reconnecting as
soon as the server drops them, while a few normal clients classify; prints what each side saw.

The server must keep answering the normal clients (p99 under a second) and must drop every slow
connection at its deadline (CONVSCOPE_HEADER_TIMEOUT_S, CONVSCOPE_BODY_TIMEOUT_S): a slow body
gets a 408 first. Exits 1 when a normal request fails or is slower than ``--max-p99``, or when
a slow connection outlives ``--max-hold`` seconds.

    .venv/bin/python benchmarks/slowloris.py                 # own server (deadlines 2 s / 3 s)
    .venv/bin/python benchmarks/slowloris.py --url http://127.0.0.1:8000 --seconds 30 --json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the one server harness
from tests import server as harness  # noqa: E402

TRICKLE_EVERY_S = 0.5


@dataclass
class Seen:
    held: dict[str, list[float]] = field(
        default_factory=lambda: {"headers": [], "body": [], "idle": []}
    )
    statuses: Counter[str] = field(default_factory=Counter)
    still_open: Counter[str] = field(default_factory=Counter)
    normal: list[float] = field(default_factory=list)
    normal_failures: Counter[str] = field(default_factory=Counter)


class SlowClient(asyncio.Protocol):
    """Keeps every byte the server sent, even when a reset follows (StreamReader would raise the
    reset and hide them)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed.is_set():
            self.transport.write(data)


async def slow_connection(
    host: str, port: int, kind: str, stop_at: float, max_hold: float, seen: Seen
) -> None:
    """One slow client: trickle (or idle) until the server drops it, then do it again (until
    ``stop_at``). A connection the server has not dropped after ``max_hold`` s is given up."""
    loop = asyncio.get_running_loop()
    while time.monotonic() < stop_at:
        try:
            _, client = await loop.create_connection(SlowClient, host, port)
        except OSError:
            seen.statuses["connect-refused"] += 1
            await asyncio.sleep(TRICKLE_EVERY_S)
            continue
        opened = time.monotonic()
        if kind == "headers":
            client.send(b"POST /v1/classify HTTP/1.1\r\nHost: slow\r\n")
        elif kind == "body":
            client.send(
                b"POST /v1/classify HTTP/1.1\r\nHost: slow\r\nContent-Type: image/png\r\n"
                b"Content-Length: 100000\r\n\r\n"
            )
        while not client.closed.is_set() and time.monotonic() < opened + max_hold:
            try:
                await asyncio.wait_for(client.closed.wait(), TRICKLE_EVERY_S)
            except TimeoutError:
                client.send(b"X-Slow: 1\r\n" if kind == "headers" else b"\x00" * (kind == "body"))
        if not client.closed.is_set():
            seen.still_open[kind] += 1  # held past max_hold: the server never dropped it
            if client.transport is not None:
                client.transport.close()
            continue
        seen.held[kind].append(time.monotonic() - opened)
        answer = bytes(client.data)
        status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "closed"
        seen.statuses[f"{kind} {status}"] += 1


async def normal_client(url: str, png: bytes, stop_at: float, seen: Seen) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            try:
                response = await client.post("/v1/classify", files={"file": ("a.png", png)})
            except httpx.HTTPError as exc:
                seen.normal_failures[type(exc).__name__] += 1
                continue
            seen.normal.append(time.perf_counter() - start)
            if response.status_code != 200:
                seen.normal_failures[str(response.status_code)] += 1
            await asyncio.sleep(0.05)


async def attack(url: str, seconds: float, connections: int, normal: int, max_hold: float) -> Seen:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    buf = io.BytesIO()
    Image.new("L", (28, 28), 90).save(buf, "PNG")
    seen = Seen()
    stop_at = time.monotonic() + seconds
    kinds = ["headers", "body", "headers", "body", "idle"]  # 40 % / 40 % / 20 %
    slow = [
        slow_connection(host, port, kinds[i % len(kinds)], stop_at, max_hold, seen)
        for i in range(connections)
    ]
    await asyncio.sleep(0)
    fast = [normal_client(url, buf.getvalue(), stop_at, seen) for _ in range(normal)]
    await asyncio.gather(*slow, *fast)
    return seen


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service; default: start one")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--normal", type=int, default=4, help="normal clients")
    parser.add_argument("--header-timeout", default="2", help="for the server started here")
    parser.add_argument("--body-timeout", default="3", help="for the server started here")
    parser.add_argument("--max-p99", type=float, default=1.0)
    parser.add_argument("--max-hold", type=float, default=8.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    server, url = None, args.url
    if url is None:
        env = {
            "CONVSCOPE_LOG_LEVEL": "warning",
            "CONVSCOPE_HEADER_TIMEOUT_S": args.header_timeout,
            "CONVSCOPE_BODY_TIMEOUT_S": args.body_timeout,
        }
        server = harness.start(env=env)
        url = server.url
    try:
        if server is not None:
            server.wait_ready()
        seen = asyncio.run(attack(url, args.seconds, args.connections, args.normal, args.max_hold))
    finally:
        if server is not None:
            server.stop()
    held = {k: round(max(v), 2) if v else None for k, v in seen.held.items()}
    result = {
        "normal_requests": len(seen.normal),
        "normal_failures": dict(seen.normal_failures),
        "normal_p50_ms": round(percentile(seen.normal, 50) * 1000, 1),
        "normal_p99_ms": round(percentile(seen.normal, 99) * 1000, 1),
        "slow_connections_dropped": {k: len(v) for k, v in seen.held.items()},
        "slow_longest_hold_s": held,
        "slow_answers": dict(seen.statuses),
        "slow_never_dropped": dict(seen.still_open),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"slow clients: {args.connections} for {args.seconds:.0f} s against {url}")
        for key, value in result.items():
            print(f"  {key}: {value}")
    longest = max((h for h in held.values() if h is not None), default=0.0)
    failed = (
        seen.normal_failures
        or not seen.normal
        or percentile(seen.normal, 99) > args.max_p99
        or seen.still_open
        or longest > args.max_hold
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
