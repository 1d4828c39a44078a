"""Load benchmark: convscope and the plain FastAPI baseline under wrk, side by side, in one run.

All servers run at once: check one request of each kind answers 200, then for each payload
(28x28 PNG, 640x480 JPEG), body (raw; multipart) and concurrency (1, 8, 64; 1, 64), each server
in turn: a warm-up, then ``--duration`` seconds of wrk (1 thread, pinned to one core with
``taskset``; the servers are not pinned). Prints req/s, p50, p99, non-2xx, the server's CPU
time per request, the peak RSS of its whole process tree (sampled from /proc every 100 ms) and
convscope's mean batch size. Then the cost of extras (all feature maps and the CAM, concurrency
1), the in-process ceiling, the cold start, and the issue's targets as ratios.

    .venv/bin/python benchmarks/load.py                      # everything (about 7 minutes)
    .venv/bin/python benchmarks/load.py --duration 5 --concurrency 1,64 --bodies raw
    .venv/bin/python benchmarks/load.py --targets convscope \\
        --variant 'w2=--workers 2' --variant 'w1t2=CONVSCOPE_INTRA_OP_THREADS=2'

A variant is a name and a convscope configuration: ``--flag value`` tokens go on the command
line, ``NAME=value`` tokens (upper-case names: CONVSCOPE_*, MALLOC_ARENA_MAX, ...) into its
environment.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from targets import HERE, Target, convscope, harness, plain, with_port

WRK_DIR = HERE / "wrk"
PAGE = os.sysconf("SC_PAGE_SIZE")
EXTRAS_QUERY = "?feature_maps=true&cam=true"


# --- the server's process tree: RSS and CPU from /proc ---------------------------------------


def tree(pid: int) -> list[int]:
    pids, i = [pid], 0
    while i < len(pids):
        try:
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                with open(f"/proc/{pids[i]}/task/{task}/children") as f:
                    pids += [int(p) for p in f.read().split()]
        except OSError:
            pass  # exited meanwhile
        i += 1
    return pids


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / ticks


class RssSampler(threading.Thread):
    """Sum of RSS over the server and its children, every 100 ms; peak since the last reset."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.overall = pid, 0, 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.1):
            rss = rss_bytes(tree(self.pid))
            self.peak, self.overall = max(self.peak, rss), max(self.overall, rss)

    def reset(self) -> None:
        self.peak = 0


# --- one server ------------------------------------------------------------------------------


class Server:
    """One target under load: a process of the one server harness, and its RSS sampler."""

    def __init__(self, target: Target, port: int) -> None:
        self.target, self.port = target, port
        self.running = harness.start(target.command, port=port, env=target.env)
        self.proc = self.running.process
        self.sampler = RssSampler(self.proc.pid)

    def url(self, path: str) -> str:
        return f"{self.running.url}{path}"

    def wait_ready(self, timeout: float = 60) -> None:
        self.running.wait_ready(timeout)
        self.sampler.start()

    def output(self) -> str:
        return self.running.log()[-3000:]

    def stop(self) -> None:
        self.sampler.stopped.set()
        self.running.stop(10)


def check(server: Server, path: str, body: bytes, media: str, multipart: bool) -> None:
    """One request of the kind wrk will send must answer 200 with predictions."""
    if multipart:
        boundary = "checkBoundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p"\r\n'
                f"Content-Type: {media}\r\n\r\n"
            ).encode()
            + body
            + f"\r\n--{boundary}--\r\n".encode()
        )
        media = f"multipart/form-data; boundary={boundary}"
    request = urllib.request.Request(server.url(path), body, {"Content-Type": media})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            answer = r.read()
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{server.target.name} {path}: {e.code} {e.read()[:300]!r}") from e
    if b"predictions" not in answer:
        raise RuntimeError(f"{server.target.name} {path}: no predictions in {answer[:300]!r}")


# --- wrk ------------------------------------------------------------------------------------


@dataclass
class Row:
    target: str
    payload: str
    body: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    cpu_ms: float  # server CPU time per request (all processes)
    peak_rss_mb: float
    batch: float | None = None  # mean pictures per onnxruntime call (convscope's /metrics)


def batches(server: Server) -> tuple[float, float] | None:
    """(onnxruntime calls, pictures in them) so far, from /metrics; None without those metrics."""
    try:
        with urllib.request.urlopen(server.url("/metrics"), timeout=5) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    total = {"count": 0.0, "sum": 0.0}
    for line in text.splitlines():
        for key in total:
            if line.startswith(f"convscope_batch_size_{key}{{"):
                total[key] += float(line.rsplit(" ", 1)[1])
    return (total["count"], total["sum"]) if total["count"] else None


def wrk(url: str, script: str, body: Path, media: str, c: int, seconds: float, core: int) -> dict:
    command = ["taskset", "-c", str(core), "wrk", "-t1", f"-c{c}", f"-d{max(1, round(seconds))}s"]
    command += ["--latency", "--timeout", "10s", "-s", str(WRK_DIR / f"{script}.lua"), url]
    env = {**os.environ, "BENCH_LUA_DIR": str(WRK_DIR), "BENCH_BODY": str(body)}
    env["BENCH_TYPE"] = media
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH "))
    return json.loads(line.removeprefix("BENCH "))


def measure(
    server: Server,
    label: str,
    payload: str,
    body: str,
    c: int,
    files: dict[str, tuple[Path, str]],
    args: argparse.Namespace,
    query: str = "",
) -> Row:
    path, media = files[payload]
    url = server.url(server.target.path + query)
    if args.warmup > 0:
        wrk(url, body, path, media, c, args.warmup, args.wrk_core)
    pids = tree(server.proc.pid)
    before = batches(server) if server.target.extras else None
    server.sampler.reset()
    cpu0 = cpu_seconds(pids)
    r = wrk(url, body, path, media, c, args.duration, args.wrk_core)
    cpu = cpu_seconds(pids) - cpu0
    after = batches(server) if before else None
    calls = after[0] - before[0] if before and after else 0
    # /metrics adds up every worker process, so both reads count all the batches.
    batch = (after[1] - before[1]) / calls if before and after and calls > 0 else None
    sock = r["connect"] + r["read"] + r["write"] + r["timeout"]
    return Row(
        label,
        payload,
        body,
        c,
        rps=r["requests"] / (r["duration_us"] / 1e6),
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        non_2xx=r["non_2xx"],
        socket_errors=sock,
        cpu_ms=1000 * cpu / max(1, r["requests"]),
        peak_rss_mb=server.sampler.peak / 2**20,
        batch=batch,
    )


def medians(runs: list[Row]) -> list[Row]:
    groups: dict[tuple, list[Row]] = {}
    for r in runs:
        groups.setdefault((r.target, r.payload, r.body, r.concurrency), []).append(r)
    out = []
    for (target, payload, body, c), rs in groups.items():
        med = {
            k: statistics.median(getattr(r, k) for r in rs)
            for k in ("rps", "p50_ms", "p99_ms", "cpu_ms")
        }
        sizes = [r.batch for r in rs if r.batch is not None]
        row = Row(target, payload, body, c, **med, non_2xx=0, socket_errors=0, peak_rss_mb=0)
        row.non_2xx = sum(r.non_2xx for r in rs)
        row.socket_errors = sum(r.socket_errors for r in rs)
        row.peak_rss_mb = max(r.peak_rss_mb for r in rs)
        row.batch = statistics.median(sizes) if sizes else None
        out.append(row)
    return out


def print_row(row: Row) -> None:
    errors = f"{row.non_2xx}" + (f" (+{row.socket_errors} socket)" if row.socket_errors else "")
    batch = "-" if row.batch is None else f"{row.batch:.1f}"
    print(
        f"| {row.target:22s} | {row.payload:5s} | {row.body:9s} | {row.concurrency:3d} "
        f"| {row.rps:8.0f} | {row.p50_ms:7.2f} | {row.p99_ms:7.2f} | {errors:>7s} "
        f"| {row.cpu_ms:6.2f} | {row.peak_rss_mb:6.0f} | {batch:>5s} |",
        flush=True,
    )


HEADER = (
    "| server                 | pic   | body      |   c |    req/s | p50 ms  | p99 ms  | non-2xx "
    "| CPU ms | RSS MB | batch |\n"
    "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"
)


# --- the run ----------------------------------------------------------------------------------


def main() -> None:
    from payloads import FILES, write_all

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default="models")
    ap.add_argument("--model", default="fashion-mnist")
    ap.add_argument("--targets", default="convscope,plain", help="convscope, plain")
    ap.add_argument("--variant", action="append", default=[], help="NAME='ARGS AND ENV'")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per row")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per row")
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument(
        "--multipart-concurrency", default="1,64", help="for multipart bodies (keeps the run short)"
    )
    ap.add_argument("--payloads", default="png,jpeg")
    ap.add_argument("--bodies", default="raw,multipart")
    ap.add_argument("--repeat", type=int, default=1, help="runs of the matrix (medians shown)")
    ap.add_argument("--wrk-core", type=int, default=1)
    ap.add_argument("--no-extras", action="store_true")
    ap.add_argument("--no-ceiling", action="store_true")
    ap.add_argument("--ceiling-seconds", type=float, default=4.0)
    ap.add_argument("--cold-starts", type=int, default=5, help="0 to skip")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    args = ap.parse_args()

    levels = {
        "raw": [int(c) for c in args.concurrency.split(",")],
        "multipart": [int(c) for c in args.multipart_concurrency.split(",")],
    }
    payloads, bodies = args.payloads.split(","), args.bodies.split(",")
    work = Path(tempfile.mkdtemp(prefix="convscope-bench-"))
    paths = write_all(work)
    files = {k: (paths[k], FILES[k][1]) for k in paths}
    raw = {k: p.read_bytes() for k, p in paths.items()}

    targets: list[Target] = []
    for name in args.targets.split(","):
        if name == "convscope":
            targets.append(convscope("convscope", args.model_dir, 0))
        elif name == "plain":
            targets.append(plain(args.model_dir, 0, args.model))
        elif name:
            ap.error(f"unknown target {name!r}")
    for variant in args.variant:
        name, _, spec = variant.partition("=")
        targets.append(convscope(name, args.model_dir, 0, spec))

    cores = os.cpu_count()
    print(f"# convscope load benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {cores} cores")
    print(f"# load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"# wrk 1 thread pinned to core {args.wrk_core} (taskset -c {args.wrk_core}); servers "
        f"not pinned; {args.warmup:g} s warm-up + {args.duration:g} s per row"
    )
    print("# payloads: " + ", ".join(f"{k} {p.stat().st_size} bytes" for k, p in paths.items()))
    for t in targets:
        env = " ".join(f"{k}={v}" for k, v in t.env.items())
        print(f"# {t.name}: {env} {shlex.join(t.command[1:])}".replace(" --port 0", ""))
    print(
        "# CPU ms: server CPU time per request (all its processes); RSS: peak of the process tree"
    )
    print("# batch: mean pictures per onnxruntime call during the row (convscope's /metrics)")
    print()
    print(HEADER)

    # Every server runs for the whole matrix; each row measures them one after the other, so
    # a change in the machine's load hits all of them alike.
    servers: list[Server] = []
    try:
        for target in targets:
            port = harness.free_port()
            servers.append(Server(with_port(target, port), port))
        for server in servers:
            server.wait_ready()
            for payload in payloads:
                for body in bodies:
                    media = files[payload][1]
                    check(server, server.target.path, raw[payload], media, body == "multipart")
        runs: list[Row] = []
        for rep in range(args.repeat):
            if args.repeat > 1:
                print(f"| run {rep + 1} of {args.repeat} |||||||||")
            for payload in payloads:
                for body in bodies:
                    for c in levels[body]:
                        for server in servers:
                            row = measure(server, server.target.name, payload, body, c, files, args)
                            runs.append(row)
                            print_row(row)
            for server in servers:
                if server.target.extras and not args.no_extras:
                    query = EXTRAS_QUERY
                    row = measure(server, server.target.name, "png", "raw", 1, files, args, query)
                    row.body = "raw+extras"
                    runs.append(row)
                    print_row(row)
        peaks = {s.target.name: s.sampler.overall / 2**20 for s in servers}
    finally:
        for server in servers:
            server.stop()

    rows = medians(runs) if args.repeat > 1 else runs
    if args.repeat > 1:
        print(f"\nmedians of {args.repeat} runs (RSS: the highest)\n")
        print(HEADER)
        for row in rows:
            print_row(row)
    print()
    for name, peak in peaks.items():
        print(f"peak RSS of {name} over all its rows: {peak:.0f} MB")

    ceiling: dict[str, float] = {}
    if not args.no_ceiling:
        from ceiling import CASES
        from ceiling import measure as measure_ceiling

        model = str(Path(args.model_dir) / args.model / "model.onnx")
        print(f"\nin-process ceiling (2 processes, 1 intra-op thread, {args.ceiling_seconds:g} s):")
        for case, rate in measure_ceiling(model, raw, CASES, args.ceiling_seconds, 2).items():
            ceiling[case.name] = rate
            print(f"  {case.name:28s} {rate:8.0f} pictures/s")

    starts: dict[str, list[float]] = {}
    if args.cold_starts:
        from cold_start import cold_start

        print(f"\ncold start (process start -> first 200 from /readyz, {args.cold_starts} runs):")
        for target in targets:
            times = cold_start(target, args.cold_starts)
            starts[target.name] = times
            shown = ", ".join(f"{t:.2f}" for t in times)
            print(f"  {target.name:22s} median {statistics.median(times):.2f} s  ({shown})")

    summarise(rows, ceiling, starts, peaks)
    print(f"\n# load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": [vars(r) for r in rows],
                    "ceiling": ceiling,
                    "cold_start": starts,
                    "peak_rss_mb": peaks,
                },
                indent=1,
            )
        )


def summarise(
    rows: list[Row], ceiling: dict[str, float], starts: dict[str, list[float]], peaks: dict
) -> None:
    """The issue's targets, for every convscope configuration that was measured."""

    def find(target: str, payload: str, body: str, c: int) -> Row | None:
        for r in rows:
            if (r.target, r.payload, r.body, r.concurrency) == (target, payload, body, c):
                return r
        return None

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    names = [n for n in dict.fromkeys(r.target for r in rows) if n != "plain FastAPI"]
    print("\ntargets (raw body; multipart in brackets where measured):")
    for name in names:
        print(f"  {name}:")
        for body in ("raw", "multipart"):
            png64, jpg64 = find(name, "png", body, 64), find(name, "jpeg", body, 64)
            base64_ = find("plain FastAPI", "png", body, 64)
            png1, base1 = find(name, "png", body, 1), find("plain FastAPI", "png", body, 1)
            png8 = find(name, "png", body, 8)
            tag = f"[{body}]"
            if png64 and "png, batch 32" in ceiling:
                share = png64.rps / ceiling["png, batch 32"]
                print(
                    f"    {tag} PNG c=64 {png64.rps:.0f}/s = {share:.0%} of ceiling "
                    f"(>= 70 %: {verdict(share >= 0.7)})"
                )
            if png64 and base64_:
                x = png64.rps / base64_.rps
                print(
                    f"    {tag} PNG c=64 = {x:.2f}x plain FastAPI ({base64_.rps:.0f}/s) "
                    f"(>= 3x: {verdict(x >= 3)})"
                )
                cap = ceiling.get("png, batch 32", 0)
                if cap and 3 * base64_.rps > cap:  # say so: no server could meet it here
                    print(
                        f"      (3x plain FastAPI = {3 * base64_.rps:.0f}/s is above the "
                        f"in-process ceiling {cap:.0f}/s: unreachable on this machine)"
                    )
            if jpg64 and "jpeg, batch 32, draft" in ceiling:
                share = jpg64.rps / ceiling["jpeg, batch 32, draft"]
                print(
                    f"    {tag} JPEG c=64 {jpg64.rps:.0f}/s = {share:.0%} of ceiling with draft "
                    f"(>= 70 %: {verdict(share >= 0.7)})"
                )
            if png1 and base1:
                x = png1.rps / base1.rps
                print(
                    f"    {tag} PNG c=1 {png1.rps:.0f}/s = {x:.2f}x plain FastAPI "
                    f"({base1.rps:.0f}/s) (>= 1x: {verdict(x >= 1)})"
                )
            if png8:
                print(
                    f"    {tag} PNG c=8 p99 {png8.p99_ms:.1f} ms (< 25 ms: "
                    f"{verdict(png8.p99_ms < 25)})"
                )
        if name in starts:
            med = statistics.median(starts[name])
            print(f"    cold start median {med:.2f} s (< 1 s: {verdict(med < 1)})")
        if name in peaks:
            print(f"    peak RSS {peaks[name]:.0f} MB (< 250 MB: {verdict(peaks[name] < 250)})")


if __name__ == "__main__":
    main()
