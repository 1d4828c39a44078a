"""What the network sees, as PNG: feature maps as a grid of tiles, class activations as a heat map.

Colour maps are small lookup tables interpolated with numpy (no matplotlib in the service):
viridis for feature maps (perceptually uniform, readable in grey), turbo for the heat map.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import numpy.typing as npt
from PIL import Image

TILE_MIN = 48  # px: a 7x7 map is drawn 49x49, big enough to see its cells
GUTTER = 2  # px between tiles
GUTTER_RGB = (255, 255, 255)
CAM_ALPHA = 0.45  # heat map weight over the picture
PNG_LEVEL = 1  # zlib level: these PNGs go straight into a response, speed beats bytes

# 33 evenly spaced samples of matplotlib's viridis and turbo (hex RGB), interpolated to 256.
_VIRIDIS = (
    "440154 470d60 48186a 482374 472d7b 453781 424086 3e4989 3b528b 375b8d 33638d 2f6b8e "
    "2c728e 297a8e 26828e 23898e 21918c 1f988b 1fa088 22a785 28ae80 32b67a 3fbc73 4ec36b "
    "5ec962 70cf57 84d44b 98d83e addc30 c2df23 d8e219 ece51b fde725"
)
_TURBO = (
    "30123b 392a73 4040a2 4456c7 466be3 4680f6 4294ff 37a8fa 28bceb 1ccdd8 18ddc2 1fe9af "
    "32f298 4ef97d 6dfe62 8bff4b a4fc3c b9f635 cdec34 dfdf37 eecf3a f8be39 fdac34 fe962b "
    "fb7e21 f46617 eb500e df3f08 d02f05 be2102 a91601 920b01 7a0403"
)


def _lut(samples: str) -> npt.NDArray[np.uint8]:
    anchors = np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in samples.split()])
    x = np.linspace(0, 1, len(anchors))
    t = np.linspace(0, 1, 256)
    table = np.stack([np.interp(t, x, anchors[:, c]) for c in range(3)], axis=1)
    return np.rint(table).astype(np.uint8)


VIRIDIS = _lut(_VIRIDIS)  # [256, 3]
TURBO = _lut(_TURBO)


def feature_grid(fmap: np.ndarray) -> tuple[bytes, dict[str, int]]:
    """float [C, h, w] -> PNG with one tile per channel, ceil(sqrt(C)) columns.

    Each channel is min-max normalised on its own (a constant channel is flat, the lowest
    colour), coloured with viridis and enlarged by a whole factor with nearest neighbour so
    every activation stays a visible square. Returns (png, {"rows", "cols", "tile", "channels"});
    ``tile`` is the tile height in px (tiles are square for square maps).
    """
    f = np.asarray(fmap, dtype=np.float32)
    if f.ndim != 3 or 0 in f.shape:
        raise ValueError(f"feature_grid needs a non-empty [C, h, w] array, got shape {f.shape}")
    c, h, w = f.shape
    idx = _normalise(f.reshape(c, -1)).reshape(c, h, w)
    k = max(1, math.ceil(TILE_MIN / max(h, w)))
    th, tw = h * k, w * k
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)

    tiles = VIRIDIS[idx.repeat(k, axis=1).repeat(k, axis=2)]  # [C, th, tw, 3]
    # Lay the tiles out with their gutter to the right and below, then trim the last gutter.
    cells = np.empty((rows * cols, th + GUTTER, tw + GUTTER, 3), np.uint8)
    cells[:] = GUTTER_RGB
    cells[:c, :th, :tw] = tiles
    grid = cells.reshape(rows, cols, th + GUTTER, tw + GUTTER, 3).transpose(0, 2, 1, 3, 4)
    grid = grid.reshape(rows * (th + GUTTER), cols * (tw + GUTTER), 3)[:-GUTTER, :-GUTTER]
    meta = {"rows": rows, "cols": cols, "tile": th, "channels": c}
    return _png(grid), meta


def cam_overlay(cam: np.ndarray, display: np.ndarray) -> bytes:
    """Class-activation map [h, w] as a turbo heat map over ``display`` [H, W, 3] -> PNG.

    ReLU (only evidence for the class counts), scaled so the strongest cell is 1, upscaled
    bilinearly to the display size (pixel centres aligned, so cells land where the network
    looked) and blended over the picture.
    """
    c = np.asarray(cam, dtype=np.float32)
    shown = np.asarray(display, dtype=np.uint8)
    if c.ndim != 2 or 0 in c.shape or shown.ndim != 3 or shown.shape[2] != 3:
        raise ValueError(f"cam_overlay needs cam [h, w] and display [H, W, 3], got {c.shape}")
    c = np.maximum(np.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    peak = float(c.max())
    c = c / peak if peak > 0 else np.zeros_like(c)
    height, width = shown.shape[:2]
    up = np.asarray(Image.fromarray(c).resize((width, height), Image.Resampling.BILINEAR))
    heat = TURBO[np.clip(np.rint(up * 255), 0, 255).astype(np.uint8)]
    blend = (1 - CAM_ALPHA) * shown.astype(np.float32) + CAM_ALPHA * heat.astype(np.float32)
    return _png(np.rint(blend).astype(np.uint8))


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _normalise(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """Each row scaled to 0..255 on its own; constant rows (and NaN) become 0."""
    x = np.nan_to_num(rows.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo = x.min(axis=1, keepdims=True)
    span = x.max(axis=1, keepdims=True) - lo
    scale = np.divide(255.0, span, out=np.zeros_like(span), where=span > 0)
    return np.rint((x - lo) * scale).astype(np.uint8)


def _png(rgb: npt.NDArray[np.uint8]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, "PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()
