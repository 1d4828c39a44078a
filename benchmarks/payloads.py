"""The two benchmark pictures, made the same way every time (fixed seed, fixed test image).

- ``png``: a real 28x28 Fashion-MNIST test image (a greyscale PNG, ~0.4 kB).
- ``jpeg``: a 640x480 photo-like RGB JPEG (quality 90): the same garment upscaled onto a textured,
  noisy, dark background with a colour cast, so it has the entropy of a photo (~110 kB) rather
  than the flat areas that make synthetic JPEGs unrealistically cheap to decode.

    .venv/bin/python benchmarks/payloads.py OUT_DIR      # writes fashion.png and photo.jpg
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

TEST_IMAGES = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
INDEX = 0  # the first test image (an ankle boot)
FILES = {"png": ("fashion.png", "image/png"), "jpeg": ("photo.jpg", "image/jpeg")}


def test_image(index: int = INDEX) -> np.ndarray:
    from training.data import read_idx  # imports torch: only the benchmark driver pays for it

    return np.ascontiguousarray(read_idx(TEST_IMAGES)[index])


def fashion_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, "L").save(buffer, format="PNG")
    return buffer.getvalue()


def photo_jpeg(image: np.ndarray, size: tuple[int, int] = (640, 480), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    # Texture: smoothed noise at two scales (cloth/wall-like), plus a gentle light gradient.
    coarse = Image.fromarray(rng.integers(0, 255, (h // 16, w // 16, 3), np.uint8)).resize(size)
    fine = rng.normal(0, 12, (h, w, 3))
    gradient = np.linspace(0, 30, w)[None, :, None]
    background = np.asarray(coarse.filter(ImageFilter.GaussianBlur(4)), np.float64) * 0.25
    background += 20 + gradient + fine
    # The garment, upscaled to most of the picture's height, tinted and blended in.
    side = int(h * 0.85)
    garment = Image.fromarray(image, "L").resize((side, side), Image.Resampling.BICUBIC)
    alpha = np.asarray(garment, np.float64)[..., None] / 255
    tint = np.array([235.0, 225.0, 210.0])
    x0, y0 = (w - side) // 2, (h - side) // 2
    region = background[y0 : y0 + side, x0 : x0 + side]
    region[:] = region * (1 - alpha) + tint * alpha + rng.normal(0, 6, region.shape)
    photo = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_all(index: int = INDEX) -> dict[str, bytes]:
    image = test_image(index)
    return {"png": fashion_png(image), "jpeg": photo_jpeg(image)}


def write_all(out_dir: Path, index: int = INDEX) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, data in make_all(index).items():
        paths[kind] = out_dir / FILES[kind][0]
        paths[kind].write_bytes(data)
    return paths


if __name__ == "__main__":
    for kind, path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else ".")).items():
        print(f"{kind}: {path} ({path.stat().st_size} bytes)")
