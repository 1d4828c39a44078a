"""Feature-map grids and CAM overlays: geometry, normalisation, colours and valid PNGs."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest
from PIL import Image

from service.render import (
    CAM_ALPHA,
    GUTTER,
    GUTTER_RGB,
    TURBO,
    VIRIDIS,
    cam_overlay,
    data_url,
    feature_grid,
)


def decode(png: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(png))
    assert im.format == "PNG" and im.mode == "RGB"
    return np.asarray(im)


def tile(grid: np.ndarray, meta: dict[str, int], k: int, width: int | None = None) -> np.ndarray:
    """Channel k's tile cut out of a decoded grid."""
    t, w = meta["tile"], width or meta["tile"]
    r, c = divmod(k, meta["cols"])
    return grid[r * (t + GUTTER) : r * (t + GUTTER) + t, c * (w + GUTTER) : c * (w + GUTTER) + w]


@pytest.mark.parametrize(
    ("channels", "side", "cols", "rows", "tile_px"),
    [
        (1, 28, 1, 1, 56),
        (8, 7, 3, 3, 49),
        (10, 3, 4, 3, 48),
        (32, 14, 6, 6, 56),
        (128, 7, 12, 11, 49),
        (64, 48, 8, 8, 48),
        (16, 60, 4, 4, 60),  # already big: no enlargement
    ],
)
def test_feature_grid_geometry(channels: int, side: int, cols: int, rows: int, tile_px: int):
    fmap = np.random.default_rng(channels).normal(size=(channels, side, side)).astype(np.float32)
    png, meta = feature_grid(fmap)
    assert meta == {"rows": rows, "cols": cols, "tile": tile_px, "channels": channels}
    assert cols == math.ceil(math.sqrt(channels))
    grid = decode(png)
    assert grid.shape == (
        rows * tile_px + (rows - 1) * GUTTER,
        cols * tile_px + (cols - 1) * GUTTER,
        3,
    )
    # Gutters between tiles, and empty cells after the last channel, are the gutter colour.
    if cols > 1:
        assert (grid[:, tile_px : tile_px + GUTTER] == GUTTER_RGB).all()
    for k in range(channels, rows * cols):
        assert (tile(grid, meta, k) == GUTTER_RGB).all()


def test_each_channel_is_normalised_on_its_own_and_enlarged_with_nearest() -> None:
    base = np.arange(49, dtype=np.float32).reshape(7, 7)
    fmap = np.stack([base, base * 4 - 2, -base, np.full((7, 7), 3.5, np.float32)])
    png, meta = feature_grid(fmap)
    grid = decode(png)
    t0, t1, t2, t3 = (tile(grid, meta, k) for k in range(4))
    np.testing.assert_array_equal(t0, t1)  # same pattern, any scale or offset
    assert (t0[0, 0] == VIRIDIS[0]).all() and (t0[-1, -1] == VIRIDIS[255]).all()
    assert (t2[0, 0] == VIRIDIS[255]).all() and (t2[-1, -1] == VIRIDIS[0]).all()
    assert (t3 == VIRIDIS[0]).all()  # a constant channel is flat, no division by zero
    # Nearest neighbour: every activation is a uniform 7x7 block.
    blocks = t0.reshape(7, 7, 7, 7, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()


def test_non_finite_and_non_square_maps_render() -> None:
    fmap = np.random.default_rng(0).normal(size=(3, 4, 6)).astype(np.float32)
    fmap[0, 0, 0], fmap[1, 1, 1], fmap[2] = np.nan, np.inf, -np.inf
    png, meta = feature_grid(fmap)
    assert meta == {"rows": 2, "cols": 2, "tile": 32, "channels": 3}  # 4x6 enlarged 8x: 32x48
    grid = decode(png)
    assert grid.shape == (2 * 32 + GUTTER, 2 * 48 + GUTTER, 3)
    assert (tile(grid, meta, 3, width=48) == GUTTER_RGB).all()


@pytest.mark.parametrize("shape", [(7, 7), (0, 7, 7), (2, 0, 3), (1, 2, 3, 4)])
def test_feature_grid_rejects_what_is_not_c_h_w(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="C, h, w"):
        feature_grid(np.zeros(shape, np.float32))


@pytest.mark.parametrize("display_shape", [(224, 224, 3), (112, 224, 3), (224, 150, 3)])
def test_cam_overlay_has_the_display_size_and_heat_where_the_map_is_high(display_shape) -> None:
    display = np.full(display_shape, 128, np.uint8)
    cam = np.zeros((7, 7), np.float32)
    cam[0, 0] = 3.0  # the network looked at the top-left corner
    cam[6, 6] = -2.0  # negative evidence is clipped by the ReLU
    out = decode(cam_overlay(cam, display))
    assert out.shape == display_shape
    hot = np.rint((1 - CAM_ALPHA) * 128 + CAM_ALPHA * TURBO[255].astype(float))
    cold = np.rint((1 - CAM_ALPHA) * 128 + CAM_ALPHA * TURBO[0].astype(float))
    np.testing.assert_allclose(out[0, 0], hot, atol=1)
    np.testing.assert_allclose(out[-1, -1], cold, atol=1)
    assert out[0, 0, 0] > out[-1, -1, 0] and out[0, 0, 2] < out[-1, -1, 2]  # red vs blue


def test_cam_upscaling_is_bilinear_and_aligned() -> None:
    cam = np.array([[0.0, 1.0]], np.float32)  # left cell cold, right cell hot
    out = decode(cam_overlay(cam, np.zeros((10, 40, 3), np.uint8))).astype(float)
    # Over black the overlay is CAM_ALPHA * TURBO[level]: read the level back per column.
    table = CAM_ALPHA * TURBO.astype(float)
    level = np.argmin(((out[5, :, None, :] - table[None]) ** 2).sum(axis=2), axis=1)
    assert level[0] == 0 and level[-1] == 255
    assert (np.diff(level) >= 0).all()  # a ramp from the cold cell to the hot one
    assert (level[:10] == 0).all() and (level[30:] == 255).all()  # flat beyond cell centres
    assert 100 <= level[20] <= 155  # halfway between the centres


@pytest.mark.parametrize("value", [0.0, -1.0, np.nan])
def test_cam_without_positive_evidence_is_a_plain_tint(value: float) -> None:
    display = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    out = decode(cam_overlay(np.full((7, 7), value, np.float32), display))
    expected = np.rint((1 - CAM_ALPHA) * display + CAM_ALPHA * TURBO[0].astype(float))
    np.testing.assert_allclose(out, expected, atol=1)


def test_cam_overlay_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError):
        cam_overlay(np.zeros((1, 7, 7), np.float32), np.zeros((224, 224, 3), np.uint8))
    with pytest.raises(ValueError):
        cam_overlay(np.zeros((7, 7), np.float32), np.zeros((224, 224), np.uint8))


def test_data_url_round_trips() -> None:
    png, _ = feature_grid(np.ones((2, 5, 5), np.float32))
    url = data_url(png)
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == png


def test_colour_maps_run_dark_to_light_and_cold_to_hot() -> None:
    assert VIRIDIS.shape == TURBO.shape == (256, 3) and VIRIDIS.dtype == np.uint8
    luminance = VIRIDIS @ np.array([0.299, 0.587, 0.114])
    assert (np.diff(luminance[::8]) > 0).all() and (np.diff(luminance) > -1).all()  # brighter
    assert tuple(VIRIDIS[0]) == (0x44, 0x01, 0x54) and tuple(VIRIDIS[-1]) == (0xFD, 0xE7, 0x25)
    assert TURBO[0, 2] > TURBO[0, 0] and TURBO[-1, 0] > TURBO[-1, 2]  # blue -> red
