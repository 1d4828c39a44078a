"""The in-process ceiling: the service's decode + preprocessing + onnxruntime work, without HTTP.

Two processes (one per core), each with its own session (intra-op threads 1), each running
``service.imaging.prepare_image`` and ``session.run(["probabilities"])`` as fast as it can,
per picture or in batches of 32, on the same bytes the load benchmark sends. Prints pictures/s
(both processes together). No HTTP server can beat these figures on this machine.

    .venv/bin/python benchmarks/ceiling.py [--model-dir models] [--seconds 4] [--processes 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path

MAX_PIXELS = 40_000_000  # the service's default limit


@dataclass(frozen=True)
class Case:
    payload: str  # "png" | "jpeg"
    batch: int
    draft: bool = True

    @property
    def name(self) -> str:
        size = "per picture" if self.batch == 1 else f"batch {self.batch}"
        draft = "" if self.payload != "jpeg" else (", draft" if self.draft else ", no draft")
        return f"{self.payload}, {size}{draft}"


CASES = [
    Case("png", 1),
    Case("png", 32),
    Case("jpeg", 1),
    Case("jpeg", 32),
    Case("jpeg", 32, draft=False),
]


def _worker(
    model: str, data: bytes, case: Case, seconds: float, barrier: mp.synchronize.Barrier
) -> tuple[int, float]:
    import numpy as np
    import onnxruntime as ort

    from service.imaging import prepare_image
    from service.spec import ModelSpec

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    spec = ModelSpec.from_metadata("m", session.get_modelmeta().custom_metadata_map, model).input

    def step() -> int:
        pixels = [prepare_image(data, spec, MAX_PIXELS, draft=case.draft).pixels]
        pixels += [prepare_image(data, spec, MAX_PIXELS, draft=case.draft).pixels
                   for _ in range(case.batch - 1)]  # fmt: skip
        session.run(["probabilities"], {"image": np.stack(pixels)})
        return case.batch

    for _ in range(max(3, 64 // case.batch)):  # warm-up: allocator, caches, first-run costs
        step()
    barrier.wait()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += step()
    return count, time.perf_counter() - start


def measure(
    model: str, payloads: dict[str, bytes], cases: list[Case], seconds: float, processes: int
) -> dict[Case, float]:
    """Pictures/s of each case, all processes together."""
    ctx = mp.get_context("spawn")  # a clean interpreter: no torch threads inherited via fork
    results = {}
    with ctx.Manager() as manager, ctx.Pool(processes) as pool:
        for case in cases:
            barrier = manager.Barrier(processes)
            args = [(model, payloads[case.payload], case, seconds, barrier)] * processes
            runs = pool.starmap(_worker, args)
            results[case] = sum(n / t for n, t in runs)
    return results


def main() -> None:
    from payloads import make_all  # benchmarks/ is on sys.path when run as a script

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default="models")
    ap.add_argument("--model", default="fashion-mnist")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--processes", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    model = str(Path(args.model_dir) / args.model / "model.onnx")
    print(f"in-process ceiling: {model}, {args.processes} processes, intra-op threads 1")
    for case, rate in measure(model, make_all(), CASES, args.seconds, args.processes).items():
        print(f"  {case.name:28s} {rate:8.0f} pictures/s")


if __name__ == "__main__":
    main()
