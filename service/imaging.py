"""Pictures as people send them -> exactly the uint8 array the model expects.

Order matters: sniff the bytes -> open with the one Pillow plugin for that format -> pixel limit
from the header, before any pixel is decoded -> first frame -> JPEG draft -> EXIF orientation ->
16-bit scaled to 8 -> alpha composited over the model's background -> colour mode -> inversion of
light-background photos for dark-background models -> resize per the model's policy; for a
model whose input asks for ``framing: "trim"``, photos of an object are framed the way its
training pictures were instead (framing.py) and the last three steps are its. The
224 px display picture (what CAM overlays are drawn on) is made only when asked for: without it,
a plain classification decodes JPEGs at a smaller draft scale and skips a resize. Every
failure is a ServiceError with a 4xx status; nothing a client sends can make this raise anything
else.
"""

from __future__ import annotations

import io
import math
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from .errors import ServiceError, TooManyPixels, UndecodableImage, UnsupportedMediaType
from .framing import Framed, analysis_size, frame_object
from .spec import InputSpec

DISPLAY_SIDE = 224  # longest side of Prepared.display: big enough to see a heat map on
# Pillow format names each sniffed format may open as (a camera JPEG with extra pictures is MPO).
_PILLOW_FORMATS = {
    "PNG": ("PNG",),
    "JPEG": ("JPEG", "MPO"),
    "WEBP": ("WEBP",),
    "GIF": ("GIF",),
    "BMP": ("BMP",),
    "TIFF": ("TIFF",),
}
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}  # the DIB header versions that exist
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_CHUNKS = {b"tEXt", b"zTXt", b"iTXt"}
_HIGH_DEPTH = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_TRANSPARENT_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "CMYK", "I", "F"}  # what Image.reduce handles
_TIFF_PAGE_LIMIT = 1024  # counting pages walks every IFD in Python: a hostile file has ~10^5

# Shared by concurrent decodes, see _pillow_warnings_handled.
_quiet_lock = threading.Lock()
_quiet_users = 0
_quiet_window: warnings.catch_warnings[Any] | None = None


@dataclass
class Prepared:
    pixels: npt.NDArray[np.uint8]  # [H, W, C]: exactly the model input
    # [h, w, 3] RGB, same geometry, longest side DISPLAY_SIDE; None unless asked for
    display: npt.NDArray[np.uint8] | None
    info: dict[str, Any]  # what preprocessing found and did (reported to the client)


def sniff_format(data: bytes) -> str | None:
    """The raster format named by the first bytes, or None: names and headers are not trusted."""
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    # "BM" alone is two letters of text; also require a DIB header size that exists.
    if (
        data[:2] == b"BM"
        and len(data) >= 18
        and int.from_bytes(data[14:18], "little") in (_BMP_HEADER_SIZES)
    ):
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    return None


def prepare_image(
    data: bytes, spec: InputSpec, max_pixels: int, *, draft: bool = True, display: bool = False
) -> Prepared:
    """Decode and preprocess one uploaded picture for a model with input ``spec``.

    Raises UnsupportedMediaType (415) for anything but PNG/JPEG/WebP/GIF/BMP/TIFF,
    TooManyPixels (413) above ``max_pixels`` (checked before decoding) and UndecodableImage
    (400) for an empty, truncated or corrupt picture. ``display=True`` also makes
    ``Prepared.display``. ``draft=False`` turns off JPEG reduced-size decoding (for benchmarks
    and tests).
    """
    if not data:
        raise UndecodableImage("the picture is empty (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedMediaType(
            "not a supported picture: send PNG, JPEG, WebP, GIF, BMP or TIFF"
        )
    if fmt == "PNG":
        data = _without_png_text(data)
    try:
        with _pillow_warnings_handled():
            return _prepare(data, fmt, spec, max_pixels, draft, display)
    except ServiceError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TooManyPixels(f"the picture has too many pixels (limit {max_pixels})") from e
    except MemoryError as e:
        raise TooManyPixels("the picture needs more memory than allowed to decode") from e
    except Exception as e:  # any decoder failure is the picture's fault, never a 500
        raise UndecodableImage(
            f"the {fmt} picture could not be decoded (truncated or corrupt)"
        ) from e


def _prepare(
    data: bytes, fmt: str, spec: InputSpec, max_pixels: int, draft: bool, want_display: bool
) -> Prepared:
    im: Image.Image = Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS[fmt])
    if im.format not in _PILLOW_FORMATS[fmt]:
        raise UndecodableImage(f"the picture claims to be {fmt} but is not")
    width, height = im.size
    if width * height > max_pixels:
        raise TooManyPixels(
            f"the picture has {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    info: dict[str, Any] = {
        "format": fmt,
        "width": width,
        "height": height,
        "mode": im.mode,
        "frames": _count_frames(im),  # frame 0 is what gets classified
        "exif_rotated": False,
        "alpha_flattened": False,
        "inverted": False,
        "scaled_16bit": False,
        "resize": "none",
    }

    model_size = (spec.width, spec.height)
    if not want_display and fmt == "PNG" and im.size == model_size and im.mode == spec.mode:
        ready = _ready_as_is(im, spec, info)
        if ready is not None:
            return ready
    # Without a display picture, decoding and shrinking only need to serve the model's input;
    # framing needs more: the object may be a small part of the photo.
    display_size = _display_size(spec) if want_display else model_size
    decode_size = analysis_size(model_size) if spec.framing == "trim" else model_size
    orientation = _orientation(im)
    transposed = orientation in (5, 6, 7, 8)
    if draft and fmt == "JPEG":
        # A grey model with no display picture wants the luma alone: libjpeg then decodes it
        # (the JPEG's own Y) without upsampling and converting the chroma, a fifth of the work.
        mode = "L" if spec.mode == "L" and not want_display else im.mode
        _draft(im, mode, decode_size, display_size, spec.resize, transposed)
    im.load()
    im = _shrink(im, decode_size, display_size, spec.resize, transposed)
    if orientation in range(2, 9):
        try:
            im = ImageOps.exif_transpose(im)
            info["exif_rotated"] = True
        except Exception:  # malformed EXIF: the picture as stored is still a picture
            pass

    if im.mode in _HIGH_DEPTH:
        im, info["scaled_16bit"] = _to_8bit(im)
    bg = 255 if spec.background == "light" else 0
    im, info["alpha_flattened"] = _flatten_alpha(im, bg)
    if im.mode not in ("L", "RGB"):
        im = im.convert("L" if im.mode == "1" else "RGB")

    if spec.framing == "trim":
        framed = frame_object(im, model_size, spec.background)
        if isinstance(framed, Framed):
            return _framed(im, framed, spec, info, display_size if want_display else None)
        info["framing"] = framed

    # Inversion is decided on the picture's content: what the model sees of it, before padding.
    if spec.background == "dark" and _border_median(_content(im, model_size, spec.resize)) > 127:
        info["inverted"] = True

    model_in = im.convert(spec.mode) if im.mode != spec.mode else im
    if model_in.size != model_size:
        model_in = _fit(model_in, model_size, spec.resize, upscale=Image.Resampling.LANCZOS)
        info["resize"] = spec.resize
    if info["inverted"]:
        model_in = ImageOps.invert(model_in)
    model_in = _pad(model_in, model_size, bg)
    pixels = np.asarray(model_in, dtype=np.uint8).reshape(spec.height, spec.width, spec.channels)
    shown = None
    if want_display:
        fit = _fit(im, display_size, spec.resize, upscale=Image.Resampling.NEAREST)
        display = _pad(fit, display_size, 255 - bg if info["inverted"] else bg)
        shown = np.asarray(display.convert("RGB") if display.mode != "RGB" else display)
    return Prepared(pixels=np.ascontiguousarray(pixels), display=shown, info=info)


def _framed(
    im: Image.Image,
    framed: Framed,
    spec: InputSpec,
    info: dict[str, Any],
    display_size: tuple[int, int] | None,
) -> Prepared:
    """The framing policy's pixels; the display picture is the photo's crop, same geometry."""
    info.update(framing=framed.report, inverted=framed.report["negated"], resize=spec.resize)
    pixels = np.asarray(framed.pixels, dtype=np.uint8).reshape(spec.height, spec.width, 1)
    shown = None
    if display_size is not None:
        crop = im.crop(framed.box).convert("RGB")
        fit = _fit(crop, display_size, "pad", upscale=Image.Resampling.NEAREST)
        colour = framed.background * 3 if len(framed.background) == 1 else framed.background
        canvas = Image.new("RGB", display_size, colour)
        canvas.paste(fit, ((display_size[0] - fit.width) // 2, (display_size[1] - fit.height) // 2))
        shown = np.asarray(canvas)
    return Prepared(pixels=np.ascontiguousarray(pixels), display=shown, info=info)


def _ready_as_is(im: Image.Image, spec: InputSpec, info: dict[str, Any]) -> Prepared | None:
    """A PNG already at the model's size and mode (what MNIST-style clients send): decoded and
    used as it is, skipping the steps that would leave it unchanged. None when any of them
    would not (transparency, EXIF, several frames): the full path then handles it. The same
    pixels and report as the full path (tests compare them); a third of its time."""
    if info["frames"] != 1 or "transparency" in im.info:
        return None
    im.load()
    if "exif" in im.info:  # an eXIf chunk may carry an orientation
        return None
    if spec.framing == "trim":
        framed = frame_object(im, im.size, spec.background)
        if isinstance(framed, Framed):  # what the full path would make of it, analysed once
            return _framed(im, framed, spec, info, None)
        info["framing"] = framed
    a = np.asarray(im, dtype=np.uint8).reshape(spec.height, spec.width, spec.channels)
    if spec.background == "dark" and _border_median(im) > 127:
        info["inverted"] = True
        a = 255 - a
    return Prepared(pixels=np.ascontiguousarray(a), display=None, info=info)


@contextmanager
def _pillow_warnings_handled() -> Iterator[None]:
    """Inside: Pillow's warnings about odd files are silent and its bomb warning is an error.

    Warning filters are process-wide, so concurrent decodes (worker threads) share one
    window: the first to enter installs the filters, the last to leave restores them.
    """
    global _quiet_users, _quiet_window
    with _quiet_lock:
        if _quiet_users == 0:
            window = warnings.catch_warnings()
            window.__enter__()
            warnings.filterwarnings("ignore", module=r"PIL(\..*)?")
            warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
            _quiet_window = window
        _quiet_users += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_users -= 1
            if _quiet_users == 0 and _quiet_window is not None:
                _quiet_window.__exit__(None, None, None)
                _quiet_window = None


def _without_png_text(data: bytes) -> bytes:
    """Drop tEXt/zTXt/iTXt chunks: the model needs no text, and a zTXt chunk is a zip bomb
    that Pillow would inflate up to 64 MB per picture. Malformed tails are left for Pillow."""
    spans: list[tuple[int, int]] = []
    pos, end = len(_PNG_SIGNATURE), len(data)
    while pos + 12 <= end:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        nxt = pos + 12 + length
        if nxt > end or kind == b"IEND":
            break
        if kind in _PNG_TEXT_CHUNKS:
            spans.append((pos, nxt))
        pos = nxt
    if not spans:
        return data
    kept, start = [], 0
    for a, b in spans:
        kept.append(data[start:a])
        start = b
    kept.append(data[start:])
    return b"".join(kept)


def _count_frames(im: Image.Image) -> int:
    """Frames or pages; a damaged later frame does not spoil the first. Leaves frame 0 selected."""
    n = 1
    try:
        if im.format == "TIFF":  # at most _TIFF_PAGE_LIMIT pages (seek reads IFDs, no pixels)
            while n < _TIFF_PAGE_LIMIT:
                im.seek(n)
                n += 1
        else:  # GIF skips frame data (~1 µs a frame); PNG, WebP and MPO have it in a header
            n = int(getattr(im, "n_frames", 1))
    except Exception:
        pass
    if im.tell() != 0:
        im.seek(0)
    return n


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # malformed EXIF: no rotation
        return 1


def _display_size(spec: InputSpec) -> tuple[int, int]:
    scale = DISPLAY_SIDE / max(spec.width, spec.height)
    return max(1, round(spec.width * scale)), max(1, round(spec.height * scale))


def _fit_size(size: tuple[int, int], target: tuple[int, int], policy: str) -> tuple[float, float]:
    """The size the whole picture is scaled to under ``policy`` (before padding/cropping)."""
    (w, h), (tw, th) = size, target
    if policy == "stretch":
        return float(tw), float(th)
    pick = min if policy == "pad" else max
    s = pick(tw / w, th / h)
    return w * s, h * s


def _draft(
    im: Image.Image,
    mode: str,
    model_size: tuple[int, int],
    display_size: tuple[int, int],
    policy: str,
    transposed: bool,
) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale, keeping at least twice the model's
    resolution (so the antialiased resize still has detail to average) and the display's;
    decoding to ``mode`` (only RGB to L changes anything)."""
    w, h = im.size
    if transposed:
        w, h = h, w
    mw, mh = _fit_size((w, h), model_size, policy)
    dw, dh = _fit_size((w, h), display_size, policy)
    need = (math.ceil(max(2 * mw, dw)), math.ceil(max(2 * mh, dh)))
    if transposed:
        need = (need[1], need[0])
    scaled = need[0] < im.size[0] // 2 and need[1] < im.size[1] // 2
    if scaled or mode != im.mode:
        im.draft(mode, need if scaled else None)


def _shrink(
    im: Image.Image,
    model_size: tuple[int, int],
    display_size: tuple[int, int],
    policy: str,
    transposed: bool,
) -> Image.Image:
    """Box-reduce a decoded picture many times larger than anything made from it, before the
    steps that copy it (EXIF rotation, alpha, colour, resizing) do so at full size: a 140 kB
    6000x6000 RGBA PNG otherwise takes the process to ~800 MB. At least 3x the largest target
    is kept, what ``resize(reducing_gap=3)`` would have kept anyway."""
    w, h = im.size
    if transposed:
        w, h = h, w
    mw, mh = _fit_size((w, h), model_size, policy)
    dw, dh = _fit_size((w, h), display_size, policy)
    factor = int(min(w / (3 * max(mw, dw)), h / (3 * max(mh, dh))))
    if factor < 2 or im.mode not in _REDUCIBLE:
        return im
    return im.reduce(factor)  # LA/RGBA are reduced premultiplied, as resize would


def _to_8bit(im: Image.Image) -> tuple[Image.Image, bool]:
    """16-bit (and 32-bit/float) greyscale scaled to 0..255 over its full range, not clipped."""
    a = np.asarray(im)
    scaled: np.ndarray
    if im.mode.startswith("I;16"):
        scaled = (a.astype(np.uint32) * 255 + 32767) // 65535
    elif im.mode == "I" and a.size and a.min() >= 0 and a.max() <= 255:
        scaled = a  # an 8-bit picture stored as 32-bit integers
    elif im.mode == "I" and a.size and a.min() >= 0 and a.max() <= 65535:
        scaled = (a.astype(np.int64) * 255 + 32767) // 65535
    elif im.mode == "F" and a.size and np.nanmin(a) >= 0 and np.nanmax(a) <= 1:
        scaled = np.rint(np.nan_to_num(a) * 255)
    else:  # an unknown range: stretch what is there
        f = np.nan_to_num(a.astype(np.float64))
        lo, hi = (float(f.min()), float(f.max())) if f.size else (0.0, 0.0)
        scaled = np.rint((f - lo) * (255 / (hi - lo))) if hi > lo else np.zeros_like(f)
    return Image.fromarray(scaled.astype(np.uint8)), True


def _flatten_alpha(im: Image.Image, bg: int) -> tuple[Image.Image, bool]:
    """Composite over the model's background; the colour under transparent pixels is lost."""
    if im.mode not in _TRANSPARENT_MODES and "transparency" not in im.info:
        return im, False
    grey = im.mode in ("L", "LA", "La", "1") or (im.mode == "P" and _palette_is_grey(im))
    rgba = im.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] == 255:  # declared alpha, every pixel opaque
        flat = rgba.convert("RGB")
        return (flat.convert("L") if grey else flat), False
    base = Image.new("RGBA", rgba.size, (bg, bg, bg, 255))
    flat = Image.alpha_composite(base, rgba).convert("RGB")
    return (flat.convert("L") if grey else flat), True


def _palette_is_grey(im: Image.Image) -> bool:
    pal = im.getpalette("RGB") or []
    rgb = np.asarray(pal, dtype=np.uint8).reshape(-1, 3)
    return bool((rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all())


def _fit(
    im: Image.Image, target: tuple[int, int], policy: str, *, upscale: Image.Resampling
) -> Image.Image:
    """Resize per policy; "pad" returns the scaled picture without its padding (see _pad)."""
    w, h = im.size
    tw, th = target
    box: tuple[float, float, float, float] | None = None
    if policy == "pad":
        fw, fh = _fit_size((w, h), target, policy)
        size = (max(1, min(tw, round(fw))), max(1, min(th, round(fh))))
    elif policy == "crop":  # the centred source region with the target's aspect ratio
        cw, ch = min(w, h * tw / th), min(h, w * th / tw)
        x0, y0 = (w - cw) / 2, (h - ch) / 2
        box = (x0, y0, x0 + cw, y0 + ch)
        size = target
    else:
        size = target
    if size == (w, h) and box is None:
        return im
    src_w, src_h = (box[2] - box[0], box[3] - box[1]) if box else (w, h)
    if min(size[0] / src_w, size[1] / src_h) >= 2:  # a big upscale (tiny pictures)
        return im.resize(size, upscale, box=box)
    # reducing_gap: a fast box reduction first, then Lanczos for the last factor of 3
    return im.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)


def _content(im: Image.Image, target: tuple[int, int], policy: str) -> Image.Image:
    """The part of the picture that a fit to ``target`` keeps: all of it, or the centred crop."""
    if policy != "crop":
        return im
    (w, h), (tw, th) = im.size, target
    cw, ch = min(w, round(h * tw / th)), min(h, round(w * th / tw))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return im if (cw, ch) == (w, h) else im.crop((x0, y0, x0 + max(1, cw), y0 + max(1, ch)))


def _pad(im: Image.Image, target: tuple[int, int], bg: int) -> Image.Image:
    if im.size == target:
        return im
    canvas = Image.new(im.mode, target, bg if im.mode == "L" else (bg, bg, bg))
    canvas.paste(im, ((target[0] - im.size[0]) // 2, (target[1] - im.size[1]) // 2))
    return canvas


def _border_median(im: Image.Image) -> float:
    """Median brightness of a ring ~2 % of the short side wide around the picture."""
    a = np.asarray(im.convert("L") if im.mode != "L" else im)
    h, w = a.shape
    t = max(1, round(min(h, w) / 50))
    ring = np.concatenate([a[:t].ravel(), a[-t:].ravel(), a[:, :t].ravel(), a[:, -t:].ravel()])
    ring.sort()  # np.median's own checks cost more than sorting a few hundred bytes
    n = len(ring)
    return (float(ring[(n - 1) // 2]) + float(ring[n // 2])) / 2
