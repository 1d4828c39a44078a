"""Test pictures in the formats people send, built from one uint8 numpy array.

Every builder takes a greyscale ``[H, W]`` (or ``[H, W, 1]``) or colour ``[H, W, 3]`` array and
returns file bytes that, decoded the way the service decodes (EXIF applied, first frame, alpha
over black), give back that array: exactly for the lossless builders in ``LOSSLESS``, within a
few grey levels for those in ``LOSSY``. The hostile builders at the end make what attackers and
broken cameras send. Shared by the imaging, API and end-to-end tests.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

# ImageOps.exif_transpose applies these for each Orientation value; the builder stores the
# inverse, so that applying EXIF gives the original back.
_EXIF_UNDO = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def to_image(a: np.ndarray) -> Image.Image:
    a = np.asarray(a, dtype=np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return Image.fromarray(a)


def _save(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def png(a: np.ndarray) -> bytes:
    return _save(to_image(a), "PNG")


def jpeg(a: np.ndarray, quality: int = 95, **params: object) -> bytes:
    return _save(to_image(a), "JPEG", quality=quality, subsampling=0, **params)


def progressive_jpeg(a: np.ndarray) -> bytes:
    return jpeg(a, progressive=True)


def cmyk_jpeg(a: np.ndarray) -> bytes:
    return _save(to_image(a).convert("RGB").convert("CMYK"), "JPEG", quality=95)


def rgba_png(a: np.ndarray, seed: int = 0) -> bytes:
    """Opaque where the picture is not black, fully transparent (random colour) where it is."""
    rgb = np.asarray(to_image(a).convert("RGB")).copy()
    alpha = np.where(rgb.max(axis=2) > 0, 255, 0).astype(np.uint8)
    noise = np.random.default_rng(seed).integers(0, 256, rgb.shape, dtype=np.uint8)
    rgb[alpha == 0] = noise[alpha == 0]
    return _save(Image.fromarray(np.dstack([rgb, alpha])), "PNG")


def la_png(a: np.ndarray) -> bytes:
    """Grey + alpha: grey 255 everywhere, the picture in the alpha channel (over black == a)."""
    grey = np.asarray(to_image(a).convert("L"))
    return _save(Image.fromarray(np.dstack([np.full_like(grey, 255), grey]), "LA"), "PNG")


def exif_rotated(a: np.ndarray, orientation: int = 6, fmt: str = "JPEG") -> bytes:
    """Pixels stored turned/flipped, with the Orientation tag that turns them back."""
    im = to_image(a).transpose(_EXIF_UNDO[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    params: dict[str, object] = {"quality": 95, "subsampling": 0} if fmt == "JPEG" else {}
    return _save(im, fmt, exif=exif.tobytes(), **params)


def palette_gif(a: np.ndarray) -> bytes:
    im = to_image(a)
    # A greyscale picture has at most 256 levels: an exact palette, no dithering.
    p = im.convert("P") if im.mode == "L" else im.quantize(256, dither=Image.Dither.NONE)
    return _save(p, "GIF")


def transparent_gif(a: np.ndarray) -> bytes:
    """Palette with a transparent index: black pixels point at a transparent red entry."""
    grey = np.asarray(to_image(a).convert("L"))
    idx = grey.copy()
    idx[grey == 0] = 0
    palette = [v for g in range(256) for v in (g, g, g)]
    palette[0:3] = [255, 0, 0]  # visible only if transparency is ignored
    p = Image.fromarray(idx, "P")
    p.putpalette(palette)
    return _save(p, "GIF", transparency=0)


def animated_gif(a: np.ndarray, frames: int = 5) -> bytes:
    """The picture first, then frames that differ from it (inverted, shifted)."""
    first = to_image(a).convert("L")
    rest = [Image.fromarray(np.roll(255 - np.asarray(first), k, axis=1)) for k in range(1, frames)]
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=True, append_images=rest, duration=50, loop=0)
    return buf.getvalue()


def webp(a: np.ndarray, lossless: bool = True) -> bytes:
    params: dict[str, object] = {"lossless": True} if lossless else {"quality": 95}
    return _save(to_image(a).convert("RGB"), "WEBP", **params)


def png16(a: np.ndarray) -> bytes:
    """16-bit greyscale with value*257: scaled back properly it is the 8-bit picture again."""
    grey = np.asarray(to_image(a).convert("L")).astype(np.uint16) * 257
    return _save(Image.fromarray(grey), "PNG")


def bmp(a: np.ndarray) -> bytes:
    return _save(to_image(a), "BMP")


def tiff(a: np.ndarray) -> bytes:
    return _save(to_image(a), "TIFF", compression="tiff_deflate")


def multipage_tiff(a: np.ndarray, pages: int = 3) -> bytes:
    first = to_image(a)
    rest = [Image.fromarray(255 - np.asarray(first)) for _ in range(pages - 1)]
    return _save(first, "TIFF", save_all=True, append_images=rest)


LOSSLESS: dict[str, Callable[[np.ndarray], bytes]] = {
    "png": png,
    "rgba_png": rgba_png,
    "la_png": la_png,
    "exif_png": lambda a: exif_rotated(a, 6, "PNG"),
    "palette_gif": palette_gif,
    "transparent_gif": transparent_gif,
    "animated_gif": animated_gif,
    "webp_lossless": webp,
    "png16": png16,
    "bmp": bmp,
    "tiff": tiff,
    "multipage_tiff": multipage_tiff,
}
LOSSY: dict[str, Callable[[np.ndarray], bytes]] = {
    "jpeg": jpeg,
    "progressive_jpeg": progressive_jpeg,
    "cmyk_jpeg": cmyk_jpeg,
    "exif_jpeg": exif_rotated,
    "webp_lossy": lambda a: webp(a, lossless=False),
}


# --- hostile pictures -------------------------------------------------------------------------


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int) -> bytes:
    """A real, valid 1-bit PNG of width x height black pixels: tiny file, huge picture."""
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    chunk = row * max(1, 4_000_000 // len(row))
    rows_per_chunk = len(chunk) // len(row)
    parts, left = [], height
    while left > 0:
        n = min(left, rows_per_chunk)
        parts.append(z.compress(chunk[: n * len(row)]))
        left -= n
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def png_text_bomb(a: np.ndarray, chunks: int = 80, inflated_mb: int = 50) -> bytes:
    """The picture plus zTXt chunks that each inflate to ``inflated_mb`` MB (tiny on disk)."""
    body = b"Comment\x00\x00" + zlib.compress(bytes(inflated_mb << 20), 9)
    data = png(a)
    text = _png_chunk(b"zTXt", body) * chunks
    return data[:33] + text + data[33:]  # right after IHDR (8 + 25 bytes)


def with_size(data: bytes, width: int, height: int) -> bytes:
    """The same file with the header claiming another size (PNG, JPEG, GIF, BMP, WebP VP8L)."""
    b = bytearray(data)
    if b.startswith(b"\x89PNG"):
        b[16:24] = struct.pack(">II", width, height)
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    elif b.startswith(b"\xff\xd8"):
        i = 2
        while b[i + 1] not in (0xC0, 0xC1, 0xC2):  # walk markers to the frame header
            i += 2 + struct.unpack(">H", b[i + 2 : i + 4])[0]
        b[i + 5 : i + 9] = struct.pack(">HH", height, width)
    elif b.startswith(b"GIF"):
        b[6:10] = struct.pack("<HH", width, height)
    elif b.startswith(b"BM"):
        b[18:26] = struct.pack("<ii", width, height)
    elif b[12:16] == b"VP8L":
        bits = struct.unpack("<I", b[21:25])[0] & ~((1 << 28) - 1)
        b[21:25] = struct.pack("<I", bits | (width - 1) | ((height - 1) << 14))
    else:
        raise ValueError("with_size: unsupported format")
    return bytes(b)


def malformed_exif_jpeg(a: np.ndarray) -> bytes:
    """A JPEG whose APP1 says Exif but holds garbage (a broken camera or a fuzzer)."""
    data = jpeg(a)
    body = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + bytes(range(256)) * 2
    app1 = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    return data[:2] + app1 + data[2:]


def truncated(data: bytes, fraction: float = 0.5) -> bytes:
    return data[: int(len(data) * fraction)]


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
    b'<rect width="28" height="28"/></svg>'
)
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
TEXT = b"this is not a picture, whatever its name says\n"
HTML = b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>"


def random_bytes(n: int = 4096, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def polyglot_gif(a: np.ndarray) -> bytes:
    """A valid GIF with a script and a zip-like tail appended (a classic polyglot)."""
    return palette_gif(a) + b"\n<script>alert(1)</script>\nPK\x05\x06" + bytes(18)
