"""Soak: N seconds at concurrency C of mixed traffic; prints counts by status, latency and peak RSS.

Correctness under load, not throughput (benchmarks/load.py measures that with wrk): every request
must get its right status (200 for pictures, 4xx for the hostile ones mixed in) and no request
may get a 5xx or lose its connection. Exits 1 otherwise, so it can gate a release.

    .venv/bin/python benchmarks/soak.py                          # own server, 60 s at 64
    .venv/bin/python benchmarks/soak.py --seconds 10 --concurrency 32 --url http://127.0.0.1:8000
    .venv/bin/python benchmarks/soak.py --json                   # one JSON line for scripts

Without ``--url`` it starts ``python -m service`` itself (one process) and also reports that
process's peak resident memory (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the one server harness
from tests import server as harness  # noqa: E402


@dataclass(frozen=True)
class Kind:
    name: str
    weight: int
    path: str
    content: bytes
    content_type: str
    multipart: bool
    ok: frozenset[int]


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def request_kinds() -> list[Kind]:
    rng = np.random.default_rng(0)
    garment = Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), "L")
    photo = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), "RGB")
    png, jpeg = _encode(garment, "PNG"), _encode(photo, "JPEG", quality=90)
    ok, bad = frozenset({200}), frozenset({400, 413, 415, 422})
    return [
        Kind("png-multipart", 50, "/v1/classify", png, "image/png", True, ok),
        Kind("jpeg-raw", 15, "/v1/classify", jpeg, "image/jpeg", False, ok),
        Kind("extras", 10, "/v1/classify?feature_maps=true&cam=true", png, "image/png", True, ok),
        Kind("truncated", 10, "/v1/classify", jpeg[: len(jpeg) // 3], "image/jpeg", False, bad),
        Kind("not-a-picture", 10, "/v1/classify", b"%PDF-1.4\n" * 50, "image/png", True, bad),
        Kind("health", 5, "/healthz", b"", "", False, ok),
    ]


def schedule(kinds: list[Kind]) -> list[Kind]:
    """A fixed interleaving with the kinds' weights (deterministic, no RNG in the hot loop)."""
    slots: list[Kind] = []
    for kind in kinds:
        slots += [kind] * kind.weight
    step = 37  # coprime with 100: spreads each kind through the cycle
    return [slots[(i * step) % len(slots)] for i in range(len(slots))]


@dataclass
class Tally:
    statuses: Counter[tuple[str, int]]
    errors: Counter[str]
    latencies: dict[str, list[float]]
    unexpected: Counter[tuple[str, int]]


async def worker(
    client: httpx.AsyncClient, plan: list[Kind], offset: int, stop_at: float, tally: Tally
) -> None:
    i = offset
    while time.monotonic() < stop_at:
        kind = plan[i % len(plan)]
        i += 1
        start = time.perf_counter()
        try:
            if kind.path == "/healthz":
                response = await client.get(kind.path)
            elif kind.multipart:
                files = {"file": ("picture", kind.content, kind.content_type)}
                response = await client.post(kind.path, files=files)
            else:
                headers = {"content-type": kind.content_type}
                response = await client.post(kind.path, content=kind.content, headers=headers)
        except httpx.HTTPError as exc:
            tally.errors[f"{kind.name}: {type(exc).__name__}"] += 1
            continue
        tally.latencies[kind.name].append(time.perf_counter() - start)
        tally.statuses[(kind.name, response.status_code)] += 1
        if response.status_code not in kind.ok:
            tally.unexpected[(kind.name, response.status_code)] += 1


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


async def soak(url: str, seconds: float, concurrency: int) -> tuple[Tally, float]:
    plan = schedule(request_kinds())
    tally = Tally(Counter(), Counter(), defaultdict(list), Counter())
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        started = time.monotonic()
        stop_at = started + seconds
        await asyncio.gather(
            *(worker(client, plan, i * 7, stop_at, tally) for i in range(concurrency))
        )
        elapsed = time.monotonic() - started
    return tally, elapsed


def summary(tally: Tally, elapsed: float, rss: float | None) -> dict[str, object]:
    every = [x for values in tally.latencies.values() for x in values]
    fivexx = sum(n for (_, status), n in tally.statuses.items() if status >= 500)
    return {
        "seconds": round(elapsed, 1),
        "requests": len(every),
        "requests_per_s": round(len(every) / elapsed, 1) if elapsed else 0,
        "status_5xx": fivexx,
        "transport_errors": sum(tally.errors.values()),
        "unexpected": {f"{k} -> {s}": n for (k, s), n in sorted(tally.unexpected.items())},
        "errors": dict(tally.errors),
        "statuses": {f"{k} {s}": n for (k, s), n in sorted(tally.statuses.items())},
        "p50_ms": round(percentile(every, 50) * 1000, 1),
        "p99_ms": round(percentile(every, 99) * 1000, 1),
        "p99_ms_by_kind": {
            k: round(percentile(v, 99) * 1000, 1) for k, v in sorted(tally.latencies.items())
        },
        "server_peak_rss_mb": None if rss is None else round(rss, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service; default: start one")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--model-dir", default=str(ROOT / "models"))
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)

    server, url = None, args.url
    if url is None:  # one process, so its peak RSS (VmHWM) is the server's
        port = harness.free_port()
        command = harness.service_command(port, args.model_dir)
        server = harness.start(command, port=port, env={"CONVSCOPE_LOG_LEVEL": "warning"})
        url = server.url
    try:
        if server is not None:
            server.wait_ready()
        tally, elapsed = asyncio.run(soak(url, args.seconds, args.concurrency))
        rss = server.peak_rss_mb() if server is not None else None
    finally:
        if server is not None:
            server.stop()
    result = summary(tally, elapsed, rss)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"soak: {args.seconds:.0f} s at concurrency {args.concurrency} against {url}")
        for key, value in result.items():
            print(f"  {key}: {value}")
    failed = result["status_5xx"] or result["transport_errors"] or result["unexpected"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
