"""Photo-like renditions (training/photos.py) and their evaluation through a real
``python -m service`` (training/photo_eval.py, ``evaluate --photos``), on real test pictures."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data import read_idx
from training.photo_eval import card_section, evaluate_photos
from training.photos import KINDS, render_set

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "fashion-mnist" / "model.onnx"
DATA = Path("/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def test_set() -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(DATA / "t10k-images-idx3-ubyte.gz")[:48]
    y = read_idx(DATA / "t10k-labels-idx1-ubyte.gz")[:48]
    return x, y


@pytest.mark.parametrize("kind", KINDS)
def test_renditions_are_seeded_photos_larger_than_the_picture(
    test_set: tuple[np.ndarray, np.ndarray], kind: str
) -> None:
    x = test_set[0][:6]
    first, again = render_set(x, kind, seed=3), render_set(x, kind, seed=3)
    assert [r.jpeg for r in first] == [r.jpeg for r in again]
    assert [r.jpeg for r in render_set(x, kind, seed=4)] != [r.jpeg for r in first]
    other = render_set(x, "dark" if kind == "light" else "light", seed=3)
    for r, o in zip(first, other, strict=True):
        im = Image.open(io.BytesIO(r.jpeg))
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == r.size
        assert min(im.size) > 60
        # the sheet is lighter than the table (a camera may expose a dark table up to mid-grey)
        border = float(np.asarray(im.convert("L"))[0].mean())
        border_other = float(np.asarray(Image.open(io.BytesIO(o.jpeg)).convert("L"))[0].mean())
        assert (border > border_other) == (kind == "light")


def test_photos_are_framed_and_classified_through_the_service(
    test_set: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y = test_set
    examples = tmp_path / "photos.png"
    result = evaluate_photos(MODEL, x, y, examples=examples)
    assert result.size == len(x)
    assert result.framed == {"original": 0.0, "light": 1.0, "dark": 1.0}
    # without the framing policy light-sheet photos scored about 30 points below the originals
    assert result.accuracy["original"] >= 0.85
    for kind in KINDS:
        assert result.accuracy[kind] >= result.accuracy["original"] - 0.15, result.accuracy
    with Image.open(examples) as sheet:
        assert sheet.size[0] > 0
    section = "\n".join(card_section(result, "python -m training evaluate M --photos 48"))
    assert "| photos: dark garment on a light sheet (JPEG) |" in section
