"""Decode + preprocess time per picture (median), with and without JPEG draft decoding.

    .venv/bin/python benchmarks/preprocess_speed.py [--repeat 50] [--model PATH/model.onnx]

Pictures: a real 28x28 Fashion-MNIST test image as PNG, and phone-photo-like JPEGs (the same
item, inverted onto a light noisy table) at 640x480 and 3000x2000. Prints one line per case.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.imaging import prepare_image  # noqa: E402
from service.spec import InputSpec, ModelSpec  # noqa: E402

FASHION_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def load_spec(model: Path) -> InputSpec:
    try:
        import onnxruntime as ort

        meta = ort.InferenceSession(str(model)).get_modelmeta().custom_metadata_map
        return ModelSpec.from_metadata(model.parent.name, meta).input
    except Exception as e:  # no model yet: the Fashion-MNIST contract
        print(f"(spec from defaults: {e})")
        return InputSpec(28, 28, 1, "L", "pad", "dark")


def item() -> np.ndarray:
    try:
        from training.data import read_idx

        return read_idx(FASHION_TEST)[0]
    except Exception:
        a = np.zeros((28, 28), np.uint8)
        a[6:22, 8:20] = 200
        return a


def encode(a: np.ndarray, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, fmt, **params)
    return buf.getvalue()


def photo(a: np.ndarray, width: int, height: int) -> bytes:
    side = int(min(width, height) * 0.8)
    obj = Image.fromarray(255 - a).resize((side, side), Image.Resampling.BICUBIC)
    table = Image.new("L", (width, height), 255)
    table.paste(obj, ((width - side) // 2, (height - side) // 2))
    rng = np.random.default_rng(0)
    g = np.clip(np.asarray(table) + rng.normal(0, 6, (height, width)), 0, 255).astype(np.uint8)
    return encode(np.dstack([g, (g * 0.9).astype(np.uint8), g]), "JPEG", quality=90)


def median_ms(data: bytes, spec: InputSpec, repeat: int, draft: bool) -> float:
    prepare_image(data, spec, 40_000_000, draft=draft)  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        prepare_image(data, spec, 40_000_000, draft=draft)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--model", type=Path, default=REPO / "models/fashion-mnist/model.onnx")
    args = parser.parse_args()
    spec = load_spec(args.model)
    a = item()
    cases = [
        ("28x28 PNG", encode(a, "PNG"), (True,)),
        ("640x480 JPEG", photo(a, 640, 480), (True, False)),
        ("3000x2000 JPEG", photo(a, 3000, 2000), (True, False)),
    ]
    print(f"input {spec.height}x{spec.width}x{spec.channels} {spec.resize}, repeat {args.repeat}")
    for name, data, drafts in cases:
        repeat = max(5, args.repeat // 5) if "3000" in name else args.repeat
        for draft in drafts:
            label = "" if name.endswith("PNG") else (" draft" if draft else " full decode")
            ms = median_ms(data, spec, repeat, draft)
            print(f"{name + label:28s} {len(data) / 1024:8.1f} KiB  median {ms:7.2f} ms")


if __name__ == "__main__":
    main()
