"""Pictures as people send them: every format, orientation, depth, alpha and size, and the
hostile ones, built from real Fashion-MNIST test images (tests/images.py)."""

from __future__ import annotations

import io
import time
import tracemalloc
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service import imaging
from service.errors import ServiceError, TooManyPixels, UndecodableImage, UnsupportedMediaType
from service.imaging import DISPLAY_SIDE, prepare_image, sniff_format
from service.spec import InputSpec, ModelSpec
from tests import images as pics
from training.data import read_idx

FASHION_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
MODEL = Path(__file__).resolve().parents[2] / "models" / "fashion-mnist" / "model.onnx"
SPEC = InputSpec(28, 28, 1, "L", "pad", "dark")  # the Fashion-MNIST contract
MAX_PIXELS = 40_000_000
INFO_KEYS = {"format", "width", "height", "mode", "frames", "exif_rotated", "alpha_flattened"}
INFO_KEYS |= {"inverted", "scaled_16bit", "resize"}


@pytest.fixture(scope="module")
def items() -> np.ndarray:
    """Six real test pictures [6, 28, 28] (t-shirt, trouser, pullover, ... as they come)."""
    return read_idx(FASHION_TEST)[:6]


def prep(data: bytes, spec: InputSpec = SPEC, max_pixels: int = MAX_PIXELS, **kw: bool):
    """With the display picture, which most of these tests also check."""
    return prepare_image(data, spec, max_pixels, **{"display": True, **kw})


def grey(p) -> np.ndarray:
    return p.pixels[:, :, 0].astype(int)


def photo_on_table(a: np.ndarray, size: tuple[int, int], side: int, seed: int = 0) -> np.ndarray:
    """A phone photo of the item: dark object on a white table, upscaled, noisy, RGB."""
    obj = Image.fromarray(255 - a).resize((side, side), Image.Resampling.BICUBIC)
    table = Image.new("L", size, 255)
    table.paste(obj, ((size[0] - side) // 2, (size[1] - side) // 2))
    noisy = np.asarray(table) + np.random.default_rng(seed).normal(0, 6, (size[1], size[0]))
    g = np.clip(noisy, 0, 255).astype(np.uint8)
    return np.dstack([g, g, g])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n", "PNG"),
        (b"\xff\xd8\xff\xe0", "JPEG"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WEBP"),
        (b"GIF87a", "GIF"),
        (b"GIF89a", "GIF"),
        (b"BM" + bytes(12) + (40).to_bytes(4, "little"), "BMP"),
        (b"II*\x00", "TIFF"),
        (b"MM\x00*", "TIFF"),
        (b"BM is a pair of letters", None),  # text that starts like a bitmap
        (pics.SVG, None),
        (pics.PDF, None),
        (pics.TEXT, None),
        (pics.HTML, None),
        (b"", None),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),
    ],
)
def test_sniff_format_reads_magic_bytes_only(data: bytes, expected: str | None) -> None:
    assert sniff_format(data) == expected


def test_model_input_of_a_28x28_png_is_the_original_bytes(items: np.ndarray) -> None:
    import onnxruntime as ort

    meta = ort.InferenceSession(str(MODEL)).get_modelmeta().custom_metadata_map
    spec = ModelSpec.from_metadata("fashion-mnist", meta).input
    for a in items:
        p = prep(pics.png(a), spec)
        assert p.pixels.dtype == np.uint8 and p.pixels.flags.c_contiguous
        assert p.pixels.shape == (spec.height, spec.width, spec.channels)
        assert p.pixels.tobytes() == a.tobytes()
        assert p.info == {
            "format": "PNG",
            "width": 28,
            "height": 28,
            "mode": "L",
            "frames": 1,
            "exif_rotated": False,
            "alpha_flattened": False,
            "inverted": False,
            "scaled_16bit": False,
            "resize": "none",
            "framing": {
                "policy": "trim",
                "applied": False,
                "background": "dark",
                "reason": "dark background, object spans the frame: used as it is",
            },
        }


# What each lossless builder must report besides the pixels.
FLAGS: dict[str, dict[str, object]] = {
    "png": {"format": "PNG", "mode": "L"},
    "rgba_png": {"format": "PNG", "mode": "RGBA", "alpha_flattened": True},
    "la_png": {"format": "PNG", "mode": "LA", "alpha_flattened": True},
    "exif_png": {"format": "PNG", "exif_rotated": True},
    "palette_gif": {"format": "GIF", "mode": "P", "alpha_flattened": False},
    "transparent_gif": {"format": "GIF", "mode": "P", "alpha_flattened": True},
    "animated_gif": {"format": "GIF", "frames": 5},
    "webp_lossless": {"format": "WEBP"},
    "png16": {"format": "PNG", "mode": "I;16", "scaled_16bit": True},
    "bmp": {"format": "BMP"},
    "tiff": {"format": "TIFF"},
    "multipage_tiff": {"format": "TIFF", "frames": 3},
}


@pytest.mark.parametrize("kind", sorted(pics.LOSSLESS))
def test_lossless_formats_give_the_pngs_pixels(kind: str, items: np.ndarray) -> None:
    for a in items:
        p = prep(pics.LOSSLESS[kind](a))
        np.testing.assert_array_equal(p.pixels[:, :, 0], a, err_msg=kind)
        assert {k: p.info[k] for k in FLAGS[kind]} == FLAGS[kind]
        assert p.info["inverted"] is False and p.info["resize"] == "none"


@pytest.mark.parametrize("kind", sorted(pics.LOSSY))
def test_lossy_formats_are_within_a_few_grey_levels(kind: str, items: np.ndarray) -> None:
    for a in items:
        p = prep(pics.LOSSY[kind](a))
        diff = np.abs(grey(p) - a)
        assert diff.mean() < 2.0 and diff.max() <= 16, (kind, diff.mean(), diff.max())
        assert p.info["exif_rotated"] is (kind == "exif_jpeg")
        assert p.info["inverted"] is False


@pytest.mark.parametrize("orientation", range(2, 9))
def test_every_exif_orientation_is_undone(orientation: int, items: np.ndarray) -> None:
    a = items[0]
    stored = Image.open(io.BytesIO(pics.exif_rotated(a, orientation, "PNG")))
    assert np.asarray(stored).tobytes() != a.tobytes()  # the file really holds it turned
    p = prep(pics.exif_rotated(a, orientation, "PNG"))
    assert p.info["exif_rotated"] is True
    np.testing.assert_array_equal(p.pixels[:, :, 0], a)


def test_colour_under_transparent_pixels_does_not_matter(items: np.ndarray) -> None:
    a = items[1]
    first, second = prep(pics.rgba_png(a, seed=1)), prep(pics.rgba_png(a, seed=2))
    assert pics.rgba_png(a, seed=1) != pics.rgba_png(a, seed=2)
    np.testing.assert_array_equal(first.pixels, second.pixels)
    np.testing.assert_array_equal(first.pixels[:, :, 0], a)
    # A light-background model composites over white: transparent pixels become 255.
    light = prep(pics.rgba_png(a), InputSpec(28, 28, 1, "L", "pad", "light"))
    np.testing.assert_array_equal(light.pixels[:, :, 0], np.where(a > 0, a, 255))


def test_16bit_pictures_are_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    data = pics._save(Image.fromarray(ramp), "PNG")
    p = prep(data, InputSpec(16, 16, 1, "L", "pad", None))
    out = p.pixels[:, :, 0].ravel().astype(int)
    assert p.info["scaled_16bit"] is True
    assert out[0] == 0 and out[-1] == 255
    assert (np.diff(out) >= 0).all() and len(np.unique(out)) > 200  # a ramp, not a wall at 255
    np.testing.assert_allclose(out, ramp.ravel() / 257, atol=0.5)


@pytest.mark.parametrize("index", range(6))
def test_photo_with_a_light_background_is_inverted_back(index: int, items: np.ndarray) -> None:
    a = items[index]
    photo = pics.jpeg(photo_on_table(a, (300, 200), 200, seed=index), quality=90)
    p = prep(photo, InputSpec(28, 28, 1, "L", "crop", "dark"))
    assert p.info["inverted"] is True and p.info["resize"] == "crop"
    assert p.info["width"] == 300 and p.info["height"] == 200 and p.info["mode"] == "RGB"
    assert np.abs(grey(p) - a).mean() < 15
    # The display keeps the photo as sent (light), only the model input is inverted.
    assert np.median(p.display[:4]) > 200 and np.median(p.pixels[:1]) < 50


def test_inversion_only_for_dark_background_models(items: np.ndarray) -> None:
    photo = pics.png(photo_on_table(items[0], (200, 200), 180))
    for background in ("light", None):
        p = prep(photo, InputSpec(28, 28, 1, "L", "pad", background))
        assert p.info["inverted"] is False and p.pixels.mean() > 127
    dark_photo = pics.png(255 - photo_on_table(items[0], (200, 200), 180))
    assert prep(dark_photo).info["inverted"] is False


def bands(width: int = 60, height: int = 30) -> np.ndarray:
    """Three vertical bands 40 | 100 | 160: where each lands shows the geometry."""
    a = np.empty((height, width), np.uint8)
    a[:, : width // 3], a[:, width // 3 : 2 * width // 3], a[:, 2 * width // 3 :] = 40, 100, 160
    return a


@pytest.mark.parametrize(
    ("policy", "content_rows", "left", "right"),
    [
        ("pad", (7, 21), 40, 160),  # 60x30 fits as 28x14, centred: rows 7..20, zero padding
        ("crop", (0, 28), 40, 160),  # the centre 30x30: a sliver of each outer band
        ("stretch", (0, 28), 40, 160),
    ],
)
def test_resize_policies_give_the_right_geometry(
    policy: str, content_rows: tuple[int, int], left: int, right: int
) -> None:
    p = prep(pics.png(bands()), InputSpec(28, 28, 1, "L", policy, "dark"))
    g = grey(p)
    top, bottom = content_rows
    assert p.info["resize"] == policy and p.pixels.shape == (28, 28, 1)
    assert (g[:top] == 0).all() and (g[bottom:] == 0).all()
    assert (g[top:bottom] > 0).all()
    assert abs(g[top + 1, 0] - left) <= 3 and abs(g[top + 1, -1] - right) <= 3
    assert abs(g[top + 1, 14] - 100) <= 3
    if policy == "crop":  # only 5 of 30 source columns are outer bands: ~4-5 of 28
        assert (np.abs(g[top + 1] - 100) <= 15).sum() >= 17
    else:  # a third of the width each
        assert 7 <= (np.abs(g[top + 1] - 100) <= 15).sum() <= 10
    # The display has the same geometry at 224x224: padding rows scale by 8.
    d = p.display
    assert d.shape == (DISPLAY_SIDE, DISPLAY_SIDE, 3)
    assert (d[: max(0, top * 8 - 1)] == 0).all() and (d[bottom * 8 + 1 :] == 0).all()
    assert (d[top * 8 + 2 : bottom * 8 - 2] > 0).all()


def test_non_square_model_input_and_display() -> None:
    spec = InputSpec(20, 40, 3, "RGB", "pad", None)
    colour = np.zeros((50, 50, 3), np.uint8)
    colour[..., 0] = 200  # red square
    p = prep(pics.png(colour), spec)
    assert p.pixels.shape == (20, 40, 3) and p.display.shape == (112, 224, 3)
    # The square fits as 20x20 in the middle of 40 columns: red there, padding around.
    assert (p.pixels[:, 10:30, 0] == 200).all() and (p.pixels[:, 10:30, 1:] == 0).all()
    assert (p.pixels[:, :10] == 0).all() and (p.pixels[:, 30:] == 0).all()
    assert (p.display[:, 56:168, 0] == 200).all() and (p.display[:, :55] == 0).all()


def test_tiny_pictures_are_upscaled_and_shown_as_blocks() -> None:
    a = np.array([[0, 255], [255, 0]], np.uint8)
    p = prep(pics.png(a), InputSpec(28, 28, 1, "L", "stretch", None))
    assert p.pixels.shape == (28, 28, 1) and p.info["resize"] == "stretch"
    assert p.pixels[0, 0, 0] < 64 and p.pixels[0, -1, 0] > 191  # corners keep their value
    assert set(np.unique(p.display)) == {0, 255}  # nearest neighbour: crisp cells, no blur


def test_big_jpeg_draft_decode_matches_the_full_decode(items: np.ndarray) -> None:
    photo = pics.jpeg(photo_on_table(items[0], (1600, 1200), 1000), quality=90)
    spec = InputSpec(28, 28, 1, "L", "pad", "dark")
    fast, full = prep(photo, spec), prep(photo, spec, draft=False)
    assert fast.info == full.info
    assert np.abs(fast.pixels.astype(int) - full.pixels).max() <= 3
    assert np.abs(fast.display.astype(int) - full.display).mean() < 3


def test_draft_decodes_big_jpegs_smaller_but_keeps_twice_the_detail(
    items: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import JpegImagePlugin

    sizes: list[tuple[int, int]] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):  # type: ignore[no-untyped-def]
        result = real_draft(self, mode, size)
        sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    photo = pics.jpeg(photo_on_table(items[0], (1600, 1200), 1000), quality=90)
    prep(photo, InputSpec(28, 28, 1, "L", "pad", "dark"))
    (decoded,) = sizes
    assert decoded[0] < 1600 / 2  # at least 4x fewer pixels decoded
    assert decoded[0] >= DISPLAY_SIDE and decoded[1] >= 2 * 21  # display and 2x the 28x21 fit
    sizes.clear()
    prep(pics.jpeg(items[0]))  # a small JPEG is decoded at full size
    assert sizes == []
    # Framing analyses at up to 112 px, from twice that: decoding only the analysis size (160x120
    # here) cost 1.25 points of accuracy on light-sheet photos (93.50 -> 92.25 % on 2,000).
    phone = pics.jpeg(photo_on_table(items[0], (640, 480), 300), quality=90)
    prep(phone, InputSpec(28, 28, 1, "L", "pad", "dark", "trim"), display=False)
    (decoded,) = sizes
    assert decoded == (320, 240)


BOMBS: dict[str, Callable[[np.ndarray], bytes]] = {
    "png 30000x30000 (real data)": lambda a: pics.png_bomb(30000, 30000),
    "png 7000x7000 (under Pillow's own guard)": lambda a: pics.png_bomb(7000, 7000),
    "png header 100000x100000": lambda a: pics.with_size(pics.png(a), 100_000, 100_000),
    "jpeg header 60000x60000": lambda a: pics.with_size(pics.jpeg(a), 60_000, 60_000),
    "gif header 65535x65535": lambda a: pics.with_size(pics.palette_gif(a), 65535, 65535),
    "bmp header 50000x50000": lambda a: pics.with_size(pics.bmp(a), 50_000, 50_000),
    "webp header 16384x16384": lambda a: pics.with_size(pics.webp(a), 16384, 16384),
}


@pytest.mark.parametrize("kind", list(BOMBS))
def test_decompression_bombs_are_413_before_decoding(kind: str, items: np.ndarray) -> None:
    data = BOMBS[kind](items[0])
    start = time.perf_counter()
    with pytest.raises(TooManyPixels) as e:
        prep(data)
    assert time.perf_counter() - start < 1.0  # refused from the header, nothing decoded
    assert e.value.status == 413 and e.value.code == "too_many_pixels"


@pytest.mark.parametrize(("side", "limit"), [(10_000, 10**9), (20_000, 10**10)])
def test_pillows_bomb_warning_and_error_become_413(
    side: int, limit: int, items: np.ndarray
) -> None:
    # Limits above Pillow's MAX_IMAGE_PIXELS: its warning (side 10000) and its error (20000)
    # fire inside Image.open; both must come out as TooManyPixels, not as a warning or a 500.
    with pytest.raises(TooManyPixels):
        prep(pics.with_size(pics.png(items[0]), side, side), max_pixels=limit)


def test_pixel_limit_is_the_configured_one(items: np.ndarray) -> None:
    photo = pics.png(photo_on_table(items[0], (100, 80), 60))
    assert prep(photo, max_pixels=8000).pixels.shape == (28, 28, 1)
    with pytest.raises(TooManyPixels, match="100x80"):
        prep(photo, max_pixels=7999)


def test_png_text_bomb_is_skipped_without_inflating(items: np.ndarray) -> None:
    data = pics.png_text_bomb(items[0], chunks=40, inflated_mb=50)  # 2 GB of text if inflated
    tracemalloc.start()
    try:
        p = prep(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(p.pixels[:, :, 0], items[0])
    assert peak < 3 * len(data) + (1 << 20), peak


@pytest.mark.parametrize(
    "data",
    [pics.SVG, pics.PDF, pics.TEXT, pics.HTML, pics.random_bytes(), b"BM" + bytes(100)],
    ids=["svg", "pdf", "text", "html", "random", "bm-zeros"],
)
def test_what_is_not_a_supported_picture_is_415(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as e:
        prep(data)
    assert e.value.status == 415
    assert "PNG" in e.value.message and "<" not in e.value.message  # names formats, no echo


BROKEN: dict[str, Callable[[np.ndarray], bytes]] = {
    "zero bytes": lambda a: b"",
    "png signature only": lambda a: b"\x89PNG\r\n\x1a\n",
    "png half": lambda a: pics.truncated(pics.png(a), 0.5),
    "png without IEND and half its IDAT": lambda a: pics.png(a)[:-40],
    "jpeg half": lambda a: pics.truncated(pics.jpeg(a), 0.5),
    "jpeg header only": lambda a: pics.jpeg(a)[:200],
    "gif header only": lambda a: pics.palette_gif(a)[:13],
    "webp half": lambda a: pics.truncated(pics.webp(a, lossless=False), 0.5),
    "tiff header only": lambda a: pics.tiff(a)[:8],
    "bmp half": lambda a: pics.truncated(pics.bmp(a), 0.5),
    "jpeg magic then pdf": lambda a: b"\xff\xd8\xff" + pics.PDF,
    "png magic then random": lambda a: b"\x89PNG\r\n\x1a\n" + pics.random_bytes(500),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_truncated_or_corrupt_pictures_are_400(kind: str, items: np.ndarray) -> None:
    with pytest.raises(UndecodableImage) as e:
        prep(BROKEN[kind](items[0]))
    assert e.value.status == 400 and e.value.code == "undecodable_image"


def _mode_png(a: np.ndarray, mode: str, **params: object) -> bytes:
    return pics._save(Image.fromarray(a).convert(mode), "PNG", **params)


def _tiff_of(array: np.ndarray) -> bytes:
    return pics._save(Image.fromarray(array), "TIFF")


def _many_frames_gif(a: np.ndarray) -> bytes:
    return pics.animated_gif(a, frames=300)


ODD_BUT_VALID: dict[str, Callable[[np.ndarray], bytes]] = {
    "malformed exif": pics.malformed_exif_jpeg,
    "1x1": lambda a: pics.png(a[:1, :1]),
    "10000x1": lambda a: pics.png(np.tile(a[14], 358)[:10000].reshape(1, -1)),
    "1x10000": lambda a: pics.png(np.tile(a[:, 14], 358)[:10000].reshape(-1, 1)),
    "polyglot gif": pics.polyglot_gif,
    "300-frame gif": _many_frames_gif,
    "bilevel": lambda a: _mode_png(a, "1"),
    "palette png with tRNS": lambda a: _mode_png(a, "P", transparency=0),
    "rgb png with tRNS": lambda a: _mode_png(a, "RGB", transparency=(0, 0, 0)),
    "32-bit int tiff": lambda a: _tiff_of(a.astype(np.int32) * 1000),
    "float tiff 0..1": lambda a: _tiff_of(a.astype(np.float32) / 255),
    "float tiff with nan": lambda a: _tiff_of(np.where(a > 0, np.nan, 0).astype(np.float32)),
    "colour cmyk": lambda a: pics.cmyk_jpeg(np.dstack([a, a // 2, 255 - a])),
    "mpo (camera jpeg with a second picture)": lambda a: pics._save(
        Image.fromarray(a),
        "MPO",
        save_all=True,
        append_images=[Image.fromarray(255 - a)],
        quality=95,
    ),
    "ycbcr tiff": lambda a: pics._save(
        Image.fromarray(np.dstack([a, a, a])).convert("YCbCr"), "TIFF"
    ),
}


@pytest.mark.parametrize("kind", list(ODD_BUT_VALID))
def test_odd_but_valid_pictures_are_accepted(kind: str, items: np.ndarray) -> None:
    p = prep(ODD_BUT_VALID[kind](items[0]))
    assert p.pixels.shape == (28, 28, 1) and p.pixels.dtype == np.uint8
    assert p.display.shape == (224, 224, 3) and p.display.dtype == np.uint8
    assert set(p.info) == INFO_KEYS


def test_exact_results_for_some_odd_pictures(items: np.ndarray) -> None:
    a = items[0]
    np.testing.assert_array_equal(grey(prep(pics.polyglot_gif(a))), a)
    np.testing.assert_array_equal(grey(prep(_mode_png(a, "RGB", transparency=(0, 0, 0)))), a)
    np.testing.assert_array_equal(grey(prep(_tiff_of(a.astype(np.float32) / 255))), a)
    many = prep(_many_frames_gif(a))
    assert many.info["frames"] == 300
    np.testing.assert_array_equal(grey(many), a)
    assert prep(pics.malformed_exif_jpeg(a)).info["exif_rotated"] is False
    mpo = prep(ODD_BUT_VALID["mpo (camera jpeg with a second picture)"](a))
    assert mpo.info["format"] == "JPEG" and mpo.info["frames"] == 2
    assert np.abs(grey(mpo) - a).mean() < 2


def test_mutated_files_never_escape_as_anything_but_4xx(items: np.ndarray) -> None:
    """A small fuzz: flipped bytes in every format give a picture or a 4xx ServiceError."""
    rng = np.random.default_rng(7)
    seeds = [f(items[2]) for f in (*pics.LOSSLESS.values(), *pics.LOSSY.values())]
    outcomes = {"ok": 0, "4xx": 0}
    for data in seeds:
        for _ in range(12):
            b = bytearray(data)
            for pos in rng.integers(8, len(b), size=rng.integers(1, 6)):
                b[pos] = int(rng.integers(0, 256))
            try:
                p = prep(bytes(b))
                assert p.pixels.shape == (28, 28, 1)
                outcomes["ok"] += 1
            except ServiceError as e:
                assert 400 <= e.status < 500
                outcomes["4xx"] += 1
    assert outcomes["ok"] > 0 and outcomes["4xx"] > 0


def _hostile_mix(a: np.ndarray) -> list[bytes]:
    return [
        pics.png(a),
        pics.malformed_exif_jpeg(a),
        pics.with_size(pics.png(a), 10_000, 10_000),
        pics.truncated(pics.jpeg(a)),
        pics.SVG,
        pics.rgba_png(a),
        pics.exif_rotated(a),
        pics.png_text_bomb(a, chunks=4, inflated_mb=20),
    ]


def _outcome(data: bytes) -> str | bytes:
    try:
        return prep(data).pixels.tobytes()
    except ServiceError as e:
        return e.code


def test_no_warning_escapes_and_filters_are_restored(items: np.ndarray) -> None:
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for data in _hostile_mix(items[0]):
            _outcome(data)
    assert [str(w.message) for w in caught] == []
    assert warnings.filters == before


def test_concurrent_decodes_agree_with_serial_ones(items: np.ndarray) -> None:
    work = [d for a in items[:3] for d in _hostile_mix(a)] * 3
    serial = [_outcome(d) for d in work]
    before = list(warnings.filters)
    with ThreadPoolExecutor(max_workers=6) as pool:
        parallel = list(pool.map(_outcome, work))
    assert parallel == serial
    assert warnings.filters == before
    assert {"too_many_pixels", "undecodable_image", "unsupported_media_type"} <= set(serial)


def _png_with(a: np.ndarray, **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(a).save(buffer, format="PNG", **params)  # type: ignore[arg-type]
    return buffer.getvalue()


def test_pngs_at_the_model_size_take_the_short_path_with_the_same_result(
    items: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PNG already at the model's size and mode skips most steps (imaging._ready_as_is);
    with the display picture asked for, the full path runs: both must agree, including on
    the PNGs the short path has to refuse."""
    a = items[1]
    light = 255 - a
    colour = np.dstack([a, a // 2, 255 - a])
    exif = Image.Exif()
    exif[0x0112] = 3  # rotated 180 degrees
    apng_frames = [Image.fromarray(a), Image.fromarray(light)]
    apng = io.BytesIO()
    apng_frames[0].save(apng, format="PNG", save_all=True, append_images=apng_frames[1:])
    grey, rgb = SPEC, InputSpec(28, 28, 3, "RGB", "crop", "dark")
    cases = [
        (pics.png(a), grey, {"inverted": False}),
        (pics.png(light), grey, {"inverted": True}),  # light background: inverted both ways
        (_png_with(a, pnginfo=_text_chunk()), grey, {"inverted": False}),
        (_png_with(a, exif=exif.tobytes()), grey, {"exif_rotated": True}),  # refused: rotated
        (_png_with(a, transparency=0), grey, {"alpha_flattened": True}),  # refused: tRNS
        (apng.getvalue(), grey, {"frames": 2}),  # refused: two frames
        (_png_with(colour), rgb, {"mode": "RGB", "resize": "none"}),
        (_png_with(colour), grey, {"mode": "RGB"}),  # RGB for a greyscale model: converted
    ]
    took: list[bool] = []
    real = imaging._ready_as_is

    def spy(*args: object) -> object:
        result = real(*args)  # type: ignore[arg-type]
        took.append(result is not None)
        return result

    monkeypatch.setattr(imaging, "_ready_as_is", spy)
    for data, spec, expected in cases:
        short, full = prepare_image(data, spec, MAX_PIXELS), prep(data, spec)
        assert short.display is None and full.display is not None
        np.testing.assert_array_equal(short.pixels, full.pixels)
        assert short.info == full.info and expected.items() <= full.info.items(), full.info
    # Taken for the plain ones, refused for EXIF, tRNS and frames; not tried for RGB -> L.
    assert took == [True, True, True, False, False, False, True]


def _text_chunk() -> object:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a text chunk, dropped before decoding")
    return info
