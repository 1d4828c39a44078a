"""The "trim" framing policy (service/framing.py): phone-like photos of a garment are framed the
way Fashion-MNIST's pictures were made, and pictures that already look like them are untouched.

The photos are training/photos.py's renditions of real test pictures: a garment anywhere in a
larger frame, on a light sheet or a dark table, under a lamp's uneven light, with noise and JPEG.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.errors import ModelError
from service.imaging import prepare_image
from service.spec import InputSpec, ModelSpec
from training.data import read_idx
from training.photos import render

FASHION_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
PLAIN = InputSpec(28, 28, 1, "L", "pad", "dark")
TRIM = InputSpec(28, 28, 1, "L", "pad", "dark", "trim")
MAX_PIXELS = 40_000_000


@pytest.fixture(scope="module")
def test_pictures() -> np.ndarray:
    return read_idx(FASHION_TEST)[:200]


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def prepared(data: bytes, spec: InputSpec = TRIM, display: bool = False):
    return prepare_image(data, spec, MAX_PIXELS, display=display)


def photo(a: np.ndarray, kind: str, i: int) -> bytes:
    return render(a, kind, np.random.default_rng([7, i])).jpeg


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def test_pictures_like_the_training_data_are_left_exactly_as_they_were(
    test_pictures: np.ndarray,
) -> None:
    for a in test_pictures:
        framed, plain = prepared(png(a)), prepared(png(a), PLAIN)
        assert np.array_equal(framed.pixels, plain.pixels)
        assert framed.info["framing"]["applied"] is False
        assert framed.info["framing"]["reason"]


@pytest.mark.parametrize("kind", ["light", "dark"])
def test_a_photo_is_trimmed_sized_centred_on_black_and_looks_like_the_original(
    test_pictures: np.ndarray, kind: str
) -> None:
    scores = []  # over 200 pictures: the median of 40 sat in a gap (0.80 or 0.83 by chance)
    for i, a in enumerate(test_pictures):
        data = photo(a, kind, i)
        p = prepared(data)
        report = p.info["framing"]
        assert report["applied"] is True, report
        assert report["background"] == kind
        assert report["negated"] is (kind == "light")
        assert p.info["inverted"] is (kind == "light")
        g = p.pixels[:, :, 0]
        rows, cols = np.nonzero(g.max(axis=1))[0], np.nonzero(g.max(axis=0))[0]
        # the longest edge fills the input (its faintest ends may round to black), centred
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 >= 25
        assert abs(rows[0] - (27 - rows[-1])) <= 2 and abs(cols[0] - (27 - cols[-1])) <= 2
        assert g.max() >= 250  # the brightest ink at 255, like every Fashion-MNIST picture
        plain = prepared(data, PLAIN)  # what the service did before the policy
        scores.append((correlation(g, a), correlation(plain.pixels[:, :, 0], a)))
    framed, before = np.median(np.array(scores), axis=0)
    assert framed > 0.8, framed  # rotated by up to 6 degrees and resampled twice
    assert framed > before + 0.2, (framed, before)


def test_a_garments_dark_parts_on_a_dark_table_are_kept_not_cut_to_black(
    test_pictures: np.ndarray,
) -> None:
    # A dark hood or print stands only a little above a dark table: the garment's area the
    # network sees is what the original picture covers, as for a dark garment on a light sheet.
    coverage = []
    for i, a in enumerate(test_pictures):
        g = prepared(photo(a, "dark", i)).pixels[:, :, 0]
        coverage.append((g > 0).mean() / (a > 0).mean())
    assert np.median(coverage) > 0.965, np.median(coverage)  # 0.953 when cut at the tolerance


def test_uneven_light_is_flattened_not_kept_as_grey(test_pictures: np.ndarray) -> None:
    ranges, corners = [], []
    for i, a in enumerate(test_pictures[:20]):
        p = prepared(photo(a, "light", i))
        low, high = p.info["framing"]["background_range"]
        ranges.append(high - low)
        g = p.pixels[:, :, 0]
        corners.append(max(g[0, 0], g[0, -1], g[-1, 0], g[-1, -1]))
    assert max(ranges) > 40  # the lamp made the sheet uneven...
    assert max(corners) == 0  # ...and the network still sees black around the object


def test_the_box_and_display_picture_are_in_the_photo(test_pictures: np.ndarray) -> None:
    data = photo(test_pictures[1], "light", 1)
    width, height = Image.open(io.BytesIO(data)).size
    p = prepared(data, display=True)
    x0, y0, x1, y1 = p.info["framing"]["box"]
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert (x1 - x0) * (y1 - y0) < 0.8 * width * height  # the margin was trimmed away
    assert p.display is not None and max(p.display.shape[:2]) == 224


def test_a_plain_or_noisy_picture_is_used_as_it_is() -> None:
    rng = np.random.default_rng(0)
    texture = rng.normal(128, 70, (120, 160)).clip(0, 255).astype(np.uint8)  # no plain border
    report = prepared(png(np.dstack([texture] * 3))).info["framing"]
    assert report["applied"] is False and "no plain background" in report["reason"]
    blank = np.full((64, 64), 230, np.uint8)  # a sheet with nothing on it
    p = prepared(png(blank))
    assert p.pixels.shape == (28, 28, 1)


@pytest.mark.parametrize(
    ("framing", "mode", "message"),
    [("crop", "L", "unknown framing policy"), ("trim", "RGB", "input mode must be L")],
)
def test_the_contract_refuses_a_framing_it_cannot_do(framing: str, mode: str, message: str) -> None:
    inp = {"height": 28, "width": 28, "channels": 1 if mode == "L" else 3, "mode": mode,
           "resize": "pad", "background": "dark", "framing": framing}  # fmt: skip
    meta = {"labels": ["a", "b"], "input": inp, "layers": [], "temperature": 1.0, "version": "1"}
    props = {k: json.dumps(v) for k, v in meta.items()}
    with pytest.raises(ModelError, match=message):
        ModelSpec.from_metadata("test", props)
