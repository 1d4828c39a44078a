"""Cold start: from process start to the first 200 from ``/readyz``, median of 5.

    .venv/bin/python benchmarks/cold_start.py [--model-dir models] [--runs 5] [--variant N=ARGS]

Each run starts a fresh ``python -m service`` (and the plain FastAPI app for comparison), polls
``/readyz`` every 5 ms and stops the server once it answers 200.
"""

from __future__ import annotations

import argparse
import statistics
import time

from targets import Target, convscope, harness, plain, with_port


def cold_start(target: Target, runs: int) -> list[float]:
    """Seconds from process start to the first 200 from /readyz, one per run."""
    times = []
    for _ in range(runs):
        port = harness.free_port()
        start = time.perf_counter()
        server = harness.start(with_port(target, port).command, port=port, env=target.env)
        try:
            server.wait_ready(poll=0.005)
            times.append(time.perf_counter() - start)
        finally:
            server.stop()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default="models")
    ap.add_argument("--model", default="fashion-mnist")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--variant", action="append", default=[], help="NAME='ARGS AND ENV'")
    args = ap.parse_args()
    targets = [convscope("convscope", args.model_dir, 0), plain(args.model_dir, 0, args.model)]
    for variant in args.variant:
        name, _, spec = variant.partition("=")
        targets.append(convscope(name, args.model_dir, 0, spec))
    print(f"cold start: process start -> first 200 from /readyz, {args.runs} runs")
    for target in targets:
        times = cold_start(target, args.runs)
        shown = ", ".join(f"{t:.2f}" for t in times)
        print(f"  {target.name:22s} median {statistics.median(times):.2f} s  ({shown})")


if __name__ == "__main__":
    main()
