"""Photo-like renditions of Fashion-MNIST pictures: what a phone makes of a garment on a table.

Written from what cameras and rooms do, not from what the service's framing policy undoes
(this module knows nothing of it): every rendition draws, from its own seeded generator,

- the garment's size in the photo (60-220 px along its longest edge), a small rotation
  (+-6 degrees: nobody lays a shirt perfectly straight) and a position anywhere in a frame
  whose margins leave the garment 30-85 % of the frame's side, in a 4:3, 3:4 or square frame;
- a surface: a white sheet or table (reflectance 0.75-1.0 with faint texture) under a dark
  garment, or a dark table (0.02-0.12) under a light one;
- light: an ambient level plus a lamp with a Gaussian fall-off placed anywhere up to a frame
  outside the picture, so one side is brighter, and a white balance from warm to cool;
- the camera: exposure, sRGB-like gamma (1/2.0-1/2.4), sensor noise (shot + read noise, sigma
  2-8 levels), and a JPEG at quality 55-95.

Fashion-MNIST's values are the negated grey of product photos on white, so a garment's
reflectance is 1 - v/255 on a light surface and v/255 on a dark one (``kind``).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

KINDS = ("light", "dark")


@dataclass
class Rendition:
    jpeg: bytes
    size: tuple[int, int]  # width, height of the photo
    kind: str


def _lamp(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Illumination over the frame: ambient + one lamp; brightest/darkest between ~1.2 and ~3."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(-0.5, 1.5) * w, rng.uniform(-0.5, 1.5) * h
    spread = rng.uniform(0.5, 1.5) * max(h, w)
    lamp = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * spread**2))
    ambient = rng.uniform(0.3, 1.0)
    light = ambient + lamp
    return light / light.max()


def _texture(h: int, w: int, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Faint low-frequency unevenness of a cloth or a table top (a few per cent)."""
    small = rng.normal(0, 1, (max(2, h // 40), max(2, w // 40))).astype(np.float32)
    up = Image.fromarray(small, mode="F").resize((w, h), Image.Resampling.BICUBIC)
    return 1 + amount * np.asarray(up)


def render(picture: np.ndarray, kind: str, rng: np.random.Generator) -> Rendition:
    """One photo-like JPEG of a 28x28 uint8 Fashion-MNIST picture (light object on black)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    v = picture.reshape(28, 28).astype(np.float32) / 255
    # Garment reflectance (linear light) and its coverage mask, upscaled and slightly rotated.
    side = rng.uniform(60, 220)
    angle = rng.uniform(-6, 6)
    big = Image.fromarray(v, mode="F").resize((round(side), round(side)), Image.Resampling.BICUBIC)
    big = big.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=0.0)
    value = np.clip(np.asarray(big), 0, 1)
    oh, ow = value.shape
    fill = rng.uniform(0.3, 0.85)
    aspect = rng.choice([4 / 3, 3 / 4, 1.0])
    w = max(ow + 2, round(max(ow, oh * aspect) / fill))
    h = max(oh + 2, round(w / aspect))
    x0, y0 = int(rng.integers(0, w - ow + 1)), int(rng.integers(0, h - oh + 1))

    if kind == "light":  # a dark garment on a white sheet
        surface = rng.uniform(0.75, 1.0) * _texture(h, w, rng, 0.02)
        encoded = np.ones((h, w), np.float32)  # Fashion-MNIST's own white background
        encoded[y0 : y0 + oh, x0 : x0 + ow] = 1 - value
    else:  # a light garment on a dark table
        surface = rng.uniform(0.02, 0.12) * _texture(h, w, rng, 0.05)
        encoded = np.zeros((h, w), np.float32)
        encoded[y0 : y0 + oh, x0 : x0 + ow] = value
    # The source values are gamma-encoded grey: back to linear reflectance, then the scene.
    # On a light sheet the garment's share is what the sheet reflects; on a dark table the
    # garment adds to the table's own glow.
    reflect = encoded**2.2
    reflect = reflect * surface if kind == "light" else surface + (1 - surface) * reflect
    colour = np.array([1.0, rng.uniform(0.85, 1.0), rng.uniform(0.65, 1.0)], np.float32)
    if rng.random() < 0.3:  # a cool light instead of a warm one
        colour = colour[::-1].copy()
    garment_tint = np.array(rng.uniform(0.85, 1.0, 3), np.float32)
    tint_mask = np.zeros((h, w, 1), np.float32)
    tint_mask[y0 : y0 + oh, x0 : x0 + ow, 0] = value > 0.05
    scene = reflect[..., None] * np.where(tint_mask > 0, garment_tint, 1.0)
    linear = scene * _lamp(h, w, rng)[..., None] * colour
    exposure = rng.uniform(0.8, 1.15) / max(float(np.percentile(linear, 99)), 1e-3)
    if kind == "dark":
        exposure = rng.uniform(0.6, 1.0) / max(float(np.percentile(linear, 99.5)), 1e-3)
    linear = np.clip(linear * exposure, 0, 1)
    # Sensor: shot noise grows with the signal, read noise does not (in linear light).
    read, shot = rng.uniform(0.002, 0.008), rng.uniform(0.0, 0.01)
    linear = linear + rng.normal(0, 1, linear.shape) * np.sqrt(read**2 + shot**2 * linear)
    gamma = rng.uniform(2.0, 2.4)
    encoded_out = np.clip(linear, 0, 1) ** (1 / gamma)
    rgb = np.rint(encoded_out * 255 + rng.normal(0, rng.uniform(1, 3), encoded_out.shape))
    im = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(rng.integers(55, 96)))
    return Rendition(buf.getvalue(), (w, h), kind)


def render_set(x: np.ndarray, kind: str, seed: int = 0) -> list[Rendition]:
    """Renditions of every picture in ``x``; picture i always gets the same photo for a seed."""
    return [
        render(picture, kind, np.random.default_rng([seed, KINDS.index(kind), i]))
        for i, picture in enumerate(x)
    ]


def contact_sheet(tiles: list[list[Image.Image]], side: int = 112) -> Image.Image:
    """Rows of pictures, each fitted into a ``side`` square on white: for the model card."""
    rows, cols = len(tiles), max(len(r) for r in tiles)
    sheet = Image.new("RGB", (cols * (side + 4) + 4, rows * (side + 4) + 4), (255, 255, 255))
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            t = tile.convert("RGB")
            scale = side / max(t.size)
            t = t.resize(
                (max(1, round(t.width * scale)), max(1, round(t.height * scale))),
                Image.Resampling.NEAREST if max(tile.size) < side else Image.Resampling.LANCZOS,
            )
            x = 4 + c * (side + 4) + (side - t.width) // 2
            y = 4 + r * (side + 4) + (side - t.height) // 2
            sheet.paste(t, (x, y))
    return sheet


def noise_levels(photo: Image.Image) -> float:
    """Robust noise sigma of a photo's corner (a sanity check for tests)."""
    a = np.asarray(photo.convert("L"), np.float32)
    corner = a[: max(4, a.shape[0] // 10), : max(4, a.shape[1] // 10)]
    d = np.diff(corner, axis=1).ravel()
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2))
