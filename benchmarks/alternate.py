"""Server variants measured in turn, rounds in alternating order, with the peer harness's load.

    .venv/bin/python benchmarks/alternate.py VARIANTS.json [--rounds 3] [--seconds 5]
        [--cells png:1,png:8,png:64,jpg:1,jpg:8,jpg:64] [--ceiling]

For a machine that is not quiet: only ratios within one run mean anything, and the server's CPU
time per request (its whole process tree) moves much less with the load than req/s does.
VARIANTS.json is a list of ``{"name", "cwd", "args": [...], "env": {...}}``: ``python -m service``
runs in ``cwd``, so a checkout of an older commit (``git archive COMMIT | tar -x -C DIR``) is
measured beside the working tree, e.g.

    [{"name": "old", "cwd": "/tmp/convscope-old"}, {"name": "new", "cwd": "."},
     {"name": "one process", "cwd": ".", "args": ["--workers", "1"]}]

Each variant is started afresh per round (time to the first 200 from /readyz is recorded), then
wrk (1 thread, ../shared/bench/multipart.lua: a multipart upload in field ``file``) runs each cell
after a 1 s warm-up. ``--ceiling`` measures the harness's in-process ceiling (PNG, batches of 32,
2 processes, 1 thread) once per round. Prints every row and then medians: req/s, p99, server CPU
ms per request, peak RSS and PSS of the process tree (the harness's rss_monitor.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(os.environ.get("BENCH_HOME", ROOT.parent / "shared" / "bench"))
sys.path.insert(0, str(BENCH))
import rss_monitor  # noqa: E402

PAYLOADS = {"png": BENCH / "payloads" / "digit.png", "jpg": BENCH / "payloads" / "photo.jpg"}
MODEL = ROOT / "models" / "fashion-mnist" / "model.onnx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_cpu(root: int) -> float:
    kids, info = rss_monitor.scan()
    pids = rss_monitor.tree(root, kids)
    return sum(info[p][1] for p in pids if p in info) / rss_monitor.TICK


def tree_memory(root: int) -> tuple[float, float]:
    rss = pss = 0
    for pid in rss_monitor.tree(root):
        a, b = rss_monitor.mem_kb(pid)
        rss, pss = rss + a, pss + b
    return rss / 1024, pss / 1024


def start(variant: dict, port: int, logs: Path) -> tuple[subprocess.Popen[bytes], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    env.update(variant.get("env", {}))
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "warning", *variant.get("args", [])]
    t0 = time.perf_counter()
    with (logs / f"{variant['name']}.log").open("ab") as log:
        proc = subprocess.Popen(
            command, cwd=variant["cwd"], env=env, stdout=log, stderr=log, start_new_session=True
        )
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc, time.perf_counter() - t0
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{variant['name']} exited, see {logs}") from None
            time.sleep(0.01)


def wrk(port: int, payload: str, c: int, seconds: int) -> dict:
    env = {**os.environ, "BENCH_PAYLOAD": str(PAYLOADS[payload]), "BENCH_FIELD": "file"}
    url = f"http://127.0.0.1:{port}/v1/classify"
    out = ""
    for duration in (1, seconds):  # the warm-up, then the measurement
        command = ["wrk", "-t1", f"-c{c}", f"-d{duration}s", "--timeout", "30s"]
        command += ["-s", str(BENCH / "multipart.lua"), url]
        out = subprocess.run(command, env=env, capture_output=True, text=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCHJSON "))
    return json.loads(line.removeprefix("BENCHJSON "))


def ceiling() -> float:
    command = [sys.executable, str(BENCH / "peers" / "inprocess_ceiling.py"), str(PAYLOADS["png"])]
    command += ["--seconds", "4", "--procs", "2", "--threads", "1", "--modes", "batch32"]
    env = {**os.environ, "BENCH_MODEL": str(MODEL), "BENCH_MODEL_KIND": "convscope"}
    out = subprocess.run(command, env=env, capture_output=True, text=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCHJSON "))
    return float(json.loads(line.removeprefix("BENCHJSON "))["images_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--cells", default="png:1,png:8,png:64,jpg:1,jpg:8,jpg:64")
    ap.add_argument("--ceiling", action="store_true")
    ap.add_argument("--logs", type=Path, default=Path("/tmp/convscope-alternate"))
    args = ap.parse_args()
    variants = json.loads(args.variants.read_text())
    cells = [(p, int(c)) for p, c in (cell.split(":") for cell in args.cells.split(","))]
    args.logs.mkdir(parents=True, exist_ok=True)
    rows: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    ready: dict[str, list[float]] = {}
    ceilings = []
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for r in range(args.rounds):
        if args.ceiling:
            ceilings.append(ceiling())
            print(f"r{r} ceiling (PNG, batch 32, 2 processes): {ceilings[-1]:.0f}/s", flush=True)
        for variant in variants if r % 2 == 0 else variants[::-1]:
            name, port = variant["name"], free_port()
            proc, seconds = start(variant, port, args.logs)
            ready.setdefault(name, []).append(seconds)
            try:
                for payload, c in cells:
                    cpu0 = tree_cpu(proc.pid)
                    d = wrk(port, payload, c, args.seconds)
                    cpu_ms = 1000 * (tree_cpu(proc.pid) - cpu0) / max(1, d["requests"])
                    rss, pss = tree_memory(proc.pid)
                    bad = d["non_2xx"] + sum(d[k] for k in ("err_connect", "err_read"))
                    bad += d["err_write"] + d["err_timeout"]
                    row = (d["rps"], d["lat_p99_ms"], cpu_ms, bad, rss, pss)
                    rows.setdefault((name, f"{payload} c={c}"), []).append(row)
                    print(
                        f"r{r} {name:14s} {payload} c={c:<3d} {d['rps']:7.0f} req/s "
                        f"p99 {d['lat_p99_ms']:7.1f} ms  cpu {cpu_ms:.3f} ms/req  bad {bad}  "
                        f"rss {rss:.0f} pss {pss:.0f} MB  load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(60)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print("medians: req/s (p99 ms) [server CPU ms per request]")
    names = [v["name"] for v in variants]
    for payload, c in cells:
        key, parts = f"{payload} c={c}", []
        for n in names:
            xs = rows[(n, key)]
            rps, p99, cpu = (statistics.median(x[i] for x in xs) for i in range(3))
            parts.append(f"{n}: {rps:.0f} ({p99:.1f}) [{cpu:.3f}]")
        print(f"{key:10s} " + " | ".join(parts))
    if ceilings:
        ceil = statistics.median(ceilings)
        shares = [
            f"{n} {statistics.median(x[0] for x in rows[(n, 'png c=64')]) / ceil:.0%}"
            for n in names
            if (n, "png c=64") in rows
        ]
        print(f"ceiling {ceil:.0f}/s; PNG c=64 of it: " + ", ".join(shares))
    for n in names:
        xs = [x for (name, _), v in rows.items() if name == n for x in v]
        print(
            f"{n}: peak RSS {max(x[4] for x in xs):.0f} MB, PSS {max(x[5] for x in xs):.0f} MB, "
            f"ready in {statistics.median(ready[n]):.2f} s (median), non-2xx/socket errors "
            f"{sum(x[3] for x in xs)}"
        )


if __name__ == "__main__":
    main()
