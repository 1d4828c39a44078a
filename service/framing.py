"""The "trim" framing policy: a photo of one object on a plain background, framed the way
Fashion-MNIST framed its pictures.

Fashion-MNIST's conversion (Xiao et al., 2017): trim the edges close to the colour of the
corner pixels (within 5 % of the maximum intensity), resize the longest edge to 28, sharpen,
extend the shortest edge to 28 and centre, negate, 8-bit grey. A phone photo differs from a
product thumbnail in ways that conversion never met, so each step is adapted:

1. background: a smooth surface (quadratic in x and y, of the grey) fitted robustly to a ring
   along the border, so a lamp that lights one side more is followed, not averaged; ring pixels
   the object covers are rejected as outliers.
2. flat-field: a light background is divided out (light falls on the object as on the sheet,
   so this also removes the tint) and negated; a dark one is subtracted in linear light and what
   stands above it divided by it. Either way the background lands at 0, black like the training
   pictures, and the object is "ink". Which of the two it is: whether the object is darker or
   lighter than the fitted surface.
3. trim: the bounding box of the ink above the tolerance (5 %, or 4 sigma of the border's noise
   when that is more), on a 3x3-smoothed copy, counting only rows and columns with enough of it.
4. the background below half the tolerance set to exactly 0; the box resized, longest edge to the
   model's size; sharpened as the anchor did; the brightest ink brought to 255 (every
   Fashion-MNIST picture reaches 254-255); centred on black.

A picture that already looks like the training data (dark, black background, object spanning
the frame) is left alone: ``frame_object`` returns its report alone and the caller goes on as
before.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from PIL import Image, ImageFilter

TOLERANCE = 0.05  # Fashion-MNIST's trim: within 5 % of the maximum intensity
NOISE_SIGMAS = 4.0  # ... or this many noise sigmas, so sensor noise is never mistaken for ink
KEEP = 0.5  # ink inside the box is kept down to this share of the tolerance
FILL_AS_IS = 0.8  # a dark picture whose object spans this much of the frame is used as it is
PLAIN_NOISE_LIMIT = 16.0  # levels: a border noisier than this is not a plain background
AS_IS = "dark background, object spans the frame: used as it is"
GAMMA = 2.2  # cameras encode light with about this power (sRGB)
MAX_GAIN = 4.0  # the ink's brightest brought to 255, by at most this factor (a faint object)
ANALYSIS_FACTOR = 4  # analyse at up to 4x the model size (112 px): averages noise, stays cheap
RING = 0.03  # border ring width, as a fraction of the short side
# Fashion-MNIST sharpened with a Gaussian of radius and sigma 1.0 after subsampling.
SHARPEN = ImageFilter.UnsharpMask(radius=1.0, percent=50, threshold=0)
_UPPER = np.triu_indices(6)  # the normal matrix's distinct entries, row by row
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L"


@dataclass
class Framed:
    pixels: Image.Image  # mode L at the model's size, in the model's polarity
    box: tuple[int, int, int, int]  # the object in the picture's pixels: x0, y0, x1, y1 (end excl.)
    report: dict[str, Any]  # what was found and done, for the response's preprocessing
    border: np.ndarray  # the background's pixels along the border [n, channels]

    @functools.cached_property
    def background(self) -> tuple[int, ...]:
        """The background's mean colour, to pad the display picture with (only it needs it)."""
        return tuple(round(float(v)) for v in self.border.mean(axis=0))


def analysis_size(model_size: tuple[int, int]) -> tuple[int, int]:
    """The resolution the decoder must keep for the policy (the object may be a small part)."""
    return model_size[0] * ANALYSIS_FACTOR, model_size[1] * ANALYSIS_FACTOR


def frame_object(
    im: Image.Image, model_size: tuple[int, int], model_background: str | None
) -> Framed | dict[str, Any]:
    """Frame the object of an L or RGB picture; a report dict alone when it is used as it is."""
    if _looks_like_training_data(im):
        return {"policy": "trim", "applied": False, "background": "dark", "reason": AS_IS}
    work = _analysis_copy(im, model_size)
    a = np.asarray(work, dtype=np.float32)
    if a.ndim == 2:
        a = a[..., None]
    h, w, _ = a.shape
    gray = _luma(a)
    ring, yy, xx, design, pairs = _ring(h, w)
    kept, coef = _background_fit(gray[yy, xx], design, pairs)
    ky, kx = yy[kept], xx[kept]
    # One surface, of the grey: the light's tint scales garment and sheet alike, so the grey
    # ratio below removes it as per-channel ratios would, at a third of the cost.
    bg_gray = _surface(coef, h, w)
    light = _object_is_darker(_box3(gray - bg_gray), ky, kx, _median(bg_gray[ring]))
    # light: reflectance relative to the lit sheet, negated; dark: what stands above the table
    ink = 1.0 - gray / np.maximum(bg_gray, 1.0) if light else (gray - bg_gray) / 255.0
    ink = np.clip(ink, 0.0, 1.0).astype(np.float32)
    smooth = _box3(ink)
    noise = 1.4826 * _mad(smooth[ky, kx])
    tolerance = max(TOLERANCE, NOISE_SIGMAS * noise)
    box = _bounding_box(smooth > tolerance)
    report: dict[str, Any] = {
        "policy": "trim",
        "applied": False,
        "background": "light" if light else "dark",
        "background_range": [round(float(bg_gray.min()), 1), round(float(bg_gray.max()), 1)],
        "noise": round(noise * 255, 2),
        "tolerance": round(tolerance * 255, 2),
    }
    x0, y0, x1, y1 = box or (0, 0, w, h)
    fill = max((x1 - x0) / w, (y1 - y0) / h)
    # Black somewhere along the border: Fashion-MNIST-like, a photo's table is never that dark.
    if not light and fill >= FILL_AS_IS and float(bg_gray.min()) <= 2:
        report["reason"] = AS_IS
        return report
    if noise * 255 > PLAIN_NOISE_LIMIT:  # the object covers the border: nothing to fit to
        report["reason"] = "no plain background at the border: used as it is"
        return report

    if not light:
        # In linear light (sRGB ~ 2.2, not gamma-encoded values, which would flatten the
        # garment's mid-tones) the table's glow is subtracted and what stands above it divided
        # by the table: the lamp lights garment and table alike, so this flat-fields its
        # uneven light as the division does for a light sheet. The brightest ink is then 1.
        lin, table = (gray / 255.0) ** GAMMA, (bg_gray / 255.0) ** GAMMA
        ratio = np.maximum(lin - table, 0) / np.maximum(table, 1e-3)
        inside = ratio[smooth > tolerance]
        top = float(np.percentile(inside, 99.9)) if inside.size else 0.0  # not one hot pixel
        if top > 0:
            ink = np.clip(ratio / top, 0, 1) ** (1 / GAMMA)
    # The background brought to black below half the tolerance that found the box: a garment's
    # dark parts (a hood, a print) stand only a little above a dark table, and cutting them at
    # the full tolerance cost 2 points of accuracy on dark-table photos.
    ink = np.where(smooth > KEEP * tolerance, ink, 0.0)
    crop = Image.fromarray(np.rint(ink[y0:y1, x0:x1] * 255).astype(np.uint8), mode="L")
    tw, th = model_size
    scale = min(tw / crop.width, th / crop.height)
    size = (max(1, min(tw, round(crop.width * scale))), max(1, min(th, round(crop.height * scale))))
    sharpened = scale < 1
    if size != crop.size:
        crop = crop.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if sharpened:
        crop = crop.filter(SHARPEN)
    # Every Fashion-MNIST picture reaches 254-255 at its brightest: so does the photo's ink.
    peak = cast(int, crop.getextrema()[1])  # (low, high): one band
    gain = min(MAX_GAIN, 255 / peak) if peak else 1.0
    if gain > 1:
        crop = Image.fromarray(np.rint(np.asarray(crop) * gain).clip(0, 255).astype(np.uint8))
    canvas = Image.new("L", model_size, 0)
    canvas.paste(crop, ((tw - size[0]) // 2, (th - size[1]) // 2))
    if model_background == "light":
        canvas = Image.eval(canvas, lambda v: 255 - v)
    sx, sy = im.width / w, im.height / h
    picture_box = (
        math.floor(x0 * sx),
        math.floor(y0 * sy),
        min(im.width, math.ceil(x1 * sx)),
        min(im.height, math.ceil(y1 * sy)),
    )
    report.update(
        applied=True,
        reason=None if box else "no object found above the tolerance: the whole picture",
        box=list(picture_box),
        object_size=list(size),
        negated=light != (model_background == "light"),
        sharpened=sharpened,
        gain=round(gain, 3),
        centred=True,
    )
    return Framed(canvas, picture_box, report, a[ky, kx])


def _luma(a: np.ndarray) -> np.ndarray:
    """[h, w, 1 or 3] -> [h, w] grey (written out: a matmul would be a threaded BLAS call)."""
    if a.shape[2] == 1:
        return a[..., 0]
    return _LUMA[0] * a[..., 0] + _LUMA[1] * a[..., 1] + _LUMA[2] * a[..., 2]


def _looks_like_training_data(im: Image.Image) -> bool:
    """The cheap test first (~30 us; the analysis takes ~2 ms): a black border (median <= 2
    levels, no lamp and no noise there) and an object spanning the frame. Nearly every
    Fashion-MNIST picture passes it, so pictures like the test set cost what they did."""
    a = np.asarray(im.convert("L") if im.mode != "L" else im)
    h, w = a.shape
    t = max(1, round(min(h, w) * RING))
    # the ring's median is <= 2 when more than half its pixels are (counted, not sorted: cheaper)
    strips = (a[:t], a[-t:], a[t:-t, :t], a[t:-t, -t:])
    lit = sum(int(np.count_nonzero(s > 2)) for s in strips)
    if 2 * lit >= sum(s.size for s in strips):
        return False
    box = _bounding_box(a > 255 * TOLERANCE)
    return box is not None and max((box[2] - box[0]) / w, (box[3] - box[1]) / h) >= FILL_AS_IS


def _object_is_darker(residual: np.ndarray, ky: np.ndarray, kx: np.ndarray, level: float) -> bool:
    """Whether the object is darker than its background (a light sheet: negate), decided by
    which way the pixels off the fitted surface go, not by the background's level alone: a
    camera exposes a dark table under a small dark garment up to mid-grey. The level decides
    only when too little stands out either way."""
    noise = 1.4826 * _mad(residual[ky, kx])
    step = max(255 * TOLERANCE, NOISE_SIGMAS * noise)
    darker = int(np.count_nonzero(residual < -step))
    lighter = int(np.count_nonzero(residual > step))
    if darker + lighter < 0.005 * residual.size or 0.5 < darker / max(lighter, 1) < 2:
        return level > 127
    return darker > lighter


def _analysis_copy(im: Image.Image, model_size: tuple[int, int]) -> Image.Image:
    limit = max(analysis_size(model_size))
    if max(im.size) <= limit:
        return im
    s = limit / max(im.size)
    size = (max(1, round(im.width * s)), max(1, round(im.height * s)))
    return im.resize(size, Image.Resampling.BOX)  # an average: the noise estimate stays honest


# ~0.5 MB an entry at 112 px; a camera's photos come in one or two sizes
@functools.lru_cache(maxsize=16)
def _ring(h: int, w: int) -> tuple[np.ndarray, ...]:
    """The border ring's mask, rows, columns, quadratic design [6, n] (1, u, v, u^2, v^2, uv)
    and the design's distinct products [21, n] (the normal equations' terms, the upper
    triangle: the matrix is symmetric): fixed for a picture size, so made once for each."""
    t = max(1, round(min(h, w) * RING))
    ring = np.zeros((h, w), dtype=bool)
    ring[:t] = ring[-t:] = True
    ring[:, :t] = ring[:, -t:] = True
    yy, xx = np.nonzero(ring)
    u, v = _coordinates(h, w)
    uk, vk = u[0, xx], v[yy, 0]
    design = np.stack([np.ones_like(uk), uk, vk, uk * uk, vk * vk, uk * vk])
    pairs = np.ascontiguousarray(design[_UPPER[0]] * design[_UPPER[1]])
    for a in (ring, yy, xx, design, pairs):
        a.flags.writeable = False  # shared by every call
    return ring, yy, xx, design, pairs


def _median(v: np.ndarray) -> float:
    """np.median of a 1-D array without its checks (a dozen per picture: they cost more than
    the partition)."""
    n = v.size
    if n == 0:
        return 0.0
    k = n // 2
    if n % 2:
        return float(np.partition(v, k)[k])
    part = np.partition(v, (k - 1, k))
    return (float(part[k - 1]) + float(part[k])) / 2


def _mad(v: np.ndarray) -> float:
    return _median(np.abs(v - _median(v)))


@functools.lru_cache(maxsize=16)
def _coordinates(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Column and row coordinates scaled to -1..1, as a row and a column vector (shared)."""
    u = np.linspace(-1, 1, w, dtype=np.float64)[None, :]
    v = np.linspace(-1, 1, h, dtype=np.float64)[:, None]
    u.flags.writeable = v.flags.writeable = False
    return u, v


def _background_fit(
    gray_ring: np.ndarray, design: np.ndarray, pairs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which ring pixels are background, and the surface fitted to them: robust fits,
    rejecting what the object covers.

    Starts from the median level; each round fits the surface to the pixels kept and keeps
    those within 3 robust sigmas (at least 2 levels) of it.
    """
    kept = np.ones(gray_ring.shape, dtype=bool)
    model = np.full(gray_ring.shape, _median(gray_ring))
    coef = None
    for _ in range(3):
        residual = gray_ring - model
        scale = max(2.0, 3 * 1.4826 * _mad(residual[kept]))
        new = np.abs(residual) <= scale
        if new.sum() < max(12, 0.25 * len(gray_ring)):
            break
        kept = new
        coef = _solve(design, pairs, kept, gray_ring)
        model = np.einsum("i,in->n", coef, design)
    if coef is None:
        coef = _solve(design, pairs, kept, gray_ring)
    return kept, coef


def _solve(
    design: np.ndarray, pairs: np.ndarray, kept: np.ndarray, target: np.ndarray
) -> np.ndarray:
    """Least squares over the ``kept`` columns by the normal equations, summed with einsum as
    weighted sums of the cached products: no BLAS call, whose threads only spin on a busy
    machine (numpy's lstsq took 30 ms here on a loaded 2-core box), and no copy of the kept."""
    if np.count_nonzero(kept) < 12:  # too little background to fit a slope to: its level alone
        return np.array([_median(target[kept]), 0, 0, 0, 0, 0])
    weight = kept.astype(np.float64)
    normal = np.empty((6, 6))
    normal[_UPPER] = np.einsum("kn,n->k", pairs, weight)
    normal.T[_UPPER] = normal[_UPPER]
    normal.flat[::7] += 1e-9
    return np.linalg.solve(normal, np.einsum("in,n->i", design, weight * target))


def _surface(coef: np.ndarray, h: int, w: int) -> np.ndarray:
    """The fitted quadratic over the whole picture, clipped to 0..255: a row's terms, a
    column's and their product, summed in place (the pixels' float32; a third of the time)."""
    u, v = _coordinates(h, w)
    row = (coef[0] + coef[1] * u + coef[3] * u * u).astype(np.float32)
    col = (coef[2] * v + coef[4] * v * v).astype(np.float32)
    full = np.multiply(v.astype(np.float32), (coef[5] * u).astype(np.float32))
    full += row
    full += col
    return np.clip(full, 0, 255, out=full)


def _box3(a: np.ndarray) -> np.ndarray:
    """3x3 mean, edges repeated: separable, in place (np.pad and nine shifted sums cost twice)."""
    row = a.astype(np.float32)
    row[:, 1:] += a[:, :-1]
    row[:, :-1] += a[:, 1:]
    row[:, 0] += a[:, 0]
    row[:, -1] += a[:, -1]
    out = row.copy()
    out[1:] += row[:-1]
    out[:-1] += row[1:]
    out[0] += row[0]
    out[-1] += row[-1]
    out /= 9.0
    return out


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """x0, y0, x1, y1 (ends exclusive) of rows and columns holding enough of the mask: a stray
    speck of noise or dust in a row of background does not widen the box."""
    h, w = mask.shape
    need_w, need_h = round(0.01 * w), round(0.01 * h)
    rows = np.asarray(mask.sum(axis=1) >= need_w if need_w > 1 else mask.any(axis=1))
    cols = np.asarray(mask.sum(axis=0) >= need_h if need_h > 1 else mask.any(axis=0))
    if not rows.any():
        return None
    y0, y1 = int(rows.argmax()), h - int(rows[::-1].argmax())
    x0, x1 = int(cols.argmax()), w - int(cols[::-1].argmax())
    return x0, y0, x1, y1
