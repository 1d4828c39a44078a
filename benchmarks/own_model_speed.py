"""Does a model brought from elsewhere serve as fast as onnxruntime runs the original file?

In one process, side by side and interleaved: onnxruntime on the original float graph (fed
already-normalised float pixels) against onnxruntime on the adopted or exported contract file
(fed uint8 pixels; scaling, normalisation, layout change and softmax inside the graph), asking
only for ``probabilities`` as the service's classify path does. For the two PyTorch modules
the "original file" is a plain ``torch.onnx.export`` of the same module. A third column runs the
contract file cut down to ``image -> probabilities`` (onnx.utils.Extractor): onnxruntime runs
every node of a graph whatever is asked for, and the ``features/*`` outputs keep it from fusing
and re-laying-out some convolutions, so this column says what the preprocessing alone costs.

    .venv/bin/python benchmarks/own_model_speed.py [--rounds 15] [--calls 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import own_models as om  # noqa: E402


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def per_call_us(
    s: ort.InferenceSession, outputs: list[str], feeds: dict[str, np.ndarray], calls: int
) -> float:
    t = time.perf_counter()
    for _ in range(calls):
        s.run(outputs, feeds)
    return (time.perf_counter() - t) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="own-model-speed-") as tmp:
        measure(Path(tmp), args)


def probabilities_only(path: Path, out: Path) -> Path:
    model = onnx.utils.Extractor(onnx.load(str(path))).extract_model(["image"], ["probabilities"])
    model.metadata_props.extend(onnx.load(str(path)).metadata_props)
    onnx.save(model, str(out))
    return out


def measure(root: Path, args: argparse.Namespace) -> None:
    own = om.build_folder(root, REPO / "models" / "fashion-mnist" / "model.onnx")
    originals = dict(own.originals)
    for name, net in own.nets.items():  # the plain float export of the same module
        meta = session(own.models / name / "model.onnx", 1).get_inputs()[0].shape
        path = root / f"{name}-plain.onnx"
        torch.onnx.export(
            net,
            (torch.zeros(1, meta[3], meta[1], meta[2]),),
            str(path),
            input_names=["x"],
            dynamic_axes={"x": {0: "n"}},
            dynamo=False,
        )
        originals[name] = path
    print(
        f"onnxruntime {ort.__version__}, {args.threads} intra-op thread(s), median of "
        f"{args.rounds} interleaved rounds of {args.calls} calls"
    )
    print(
        f"{'model':<14} {'batch':>5} {'original us':>12} {'contract us':>12} {'ratio':>6} "
        f"{'probs-only us':>14} {'ratio':>6}"
    )
    for name in ["lenet5", "resnet-lite", "plain-torch", "keras-like"]:
        served = session(own.models / name / "model.onnx", args.threads)
        original = session(originals[name], args.threads)
        path = own.models / name / "model.onnx"
        pruned = session(probabilities_only(path, root / f"{name}-probs.onnx"), args.threads)
        h, _, c = served.get_inputs()[0].shape[1:]
        in_name, out_name = original.get_inputs()[0].name, original.get_outputs()[0].name
        for batch in args.batch:
            pixels = om.stripes(batch, h, c)[0]
            floats = om.original_input(name, own, pixels)
            a, b, p = [], [], []
            for _ in range(args.rounds):
                a.append(per_call_us(original, [out_name], {in_name: floats}, args.calls))
                b.append(per_call_us(served, ["probabilities"], {"image": pixels}, args.calls))
                p.append(per_call_us(pruned, ["probabilities"], {"image": pixels}, args.calls))
            ma, mb, mp = statistics.median(a), statistics.median(b), statistics.median(p)
            print(
                f"{name:<14} {batch:>5} {ma:>12.1f} {mb:>12.1f} {mb / ma:>6.2f} "
                f"{mp:>14.1f} {mp / ma:>6.2f}"
            )


if __name__ == "__main__":
    main()
