"""Hostile and awkward uploads, generated in memory (no fixtures on disk, nothing downloaded).

Each ``Hostile`` carries the bytes, the file name and content type a client would claim, and the
statuses that are right for it: 200 for pictures that are odd but valid, a specific 4xx for the
rest. Headers are crafted by hand where Pillow would refuse to write the file (bombs, broken
EXIF, lying dimensions), so the server sees exactly the bytes an attacker would send.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

BIG = 100_000  # a side whose square is far over any sane pixel limit (10^10 pixels)


@dataclass(frozen=True)
class Hostile:
    name: str
    data: bytes
    filename: str
    content_type: str
    ok: frozenset[int]  # statuses that are right for this upload


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(
    width: int,
    height: int,
    depth: int,
    colour: int,
    rows: bytes | None = None,
    extra: list[bytes] | None = None,
) -> bytes:
    """A PNG written by hand: ``rows`` are raw scanlines (filter byte included), deflated."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    if rows is None:
        rows = b"\x00" * 16
    idat = zlib.compress(rows, 9)
    chunks = [_png_chunk(b"IHDR", ihdr), *(extra or []), _png_chunk(b"IDAT", idat)]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks) + _png_chunk(b"IEND", b"")


def _pillow(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _gradient(width: int = 64, height: int = 64, mode: str = "RGB") -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x ^ y) & 255], -1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB").convert(mode)


def _jpeg_with_size(width: int, height: int) -> bytes:
    """A real JPEG whose SOF header is patched to claim ``width`` x ``height``."""
    data = bytearray(_pillow(_gradient(16, 16), "JPEG"))
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
    raise AssertionError("no SOF marker")


def _gif(width: int, height: int, frame: tuple[int, int], tail: bytes = b"") -> bytes:
    """GIF89a with a 2-colour table and one frame of ``frame`` size (LZW data of 1 pixel)."""
    screen = (
        b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00" * 3 + b"\xff" * 3
    )
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, frame[0], frame[1], 0)
    lzw = b"\x02\x02\x44\x01\x00"  # min code size 2, one sub-block: clear, 1, end
    return screen + image + lzw + b"\x3b" + tail


def _tiff(pages: list[tuple[int, int]], loop: bool = False) -> bytes:
    """Little-endian TIFF, one 8-bit grey IFD per page, all pointing at one 1-byte strip.

    ``loop``: the last IFD points back at the first (a cycle a naive reader never leaves).
    """
    strip_at = 8
    out = bytearray(b"II*\x00" + struct.pack("<I", 0) + b"\x80\x00")  # header, strip, pad
    ifd_offsets = []
    for index, (width, height) in enumerate(pages):
        ifd_at = len(out)
        ifd_offsets.append(ifd_at)
        entries = [
            (256, 4, 1, width),  # ImageWidth (LONG)
            (257, 4, 1, height),  # ImageLength
            (258, 3, 1, 8),  # BitsPerSample
            (259, 3, 1, 1),  # Compression: none
            (262, 3, 1, 1),  # Photometric: black is zero
            (273, 4, 1, strip_at),  # StripOffsets
            (277, 3, 1, 1),  # SamplesPerPixel
            (278, 4, 1, height),  # RowsPerStrip
            (279, 4, 1, 1),  # StripByteCounts
        ]
        out += struct.pack("<H", len(entries))
        for tag, kind, count, value in entries:
            packed = struct.pack("<HHI", tag, kind, count)
            packed += struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
            out += packed
        last = index == len(pages) - 1
        following = (ifd_offsets[0] if loop else 0) if last else ifd_at + 2 + 12 * 9 + 4
        out += struct.pack("<I", following)
    out[4:8] = struct.pack("<I", ifd_offsets[0])
    return bytes(out)


def _bmp_header_only(width: int, height: int) -> bytes:
    pixels_at = 14 + 40
    header = b"BM" + struct.pack("<IHHI", pixels_at + 16, 0, 0, pixels_at)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return header + info + b"\x00" * 16


def _exif_jpeg(exif: bytes) -> bytes:
    """A JPEG with ``exif`` (the TIFF structure after 'Exif\\0\\0') as its APP1 segment."""
    plain = _pillow(_gradient(40, 20), "JPEG")
    payload = b"Exif\x00\x00" + exif
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return plain[:2] + app1 + plain[2:]


def _broken_exif_ifd() -> bytes:
    """Orientation 6 in an IFD that claims 65535 entries and points past the end."""
    ifd = struct.pack("<H", 0xFFFF) + struct.pack("<HHII", 0x0112, 3, 1, 6)
    ifd += struct.pack("<HHII", 0x8769, 4, 1, 0x7FFFFFF0)  # Exif sub-IFD far out of range
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def _exif_orientation_wrong_type() -> bytes:
    """Orientation as a 1000-byte ASCII string at an offset outside the segment."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHII", 0x0112, 2, 1000, 0x00FFFFFF) + b"\x00" * 4
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def _animated_gif(frames: int) -> bytes:
    images = [Image.new("P", (16, 16), i % 256) for i in range(frames)]
    for i, im in enumerate(images):
        im.putpalette([(i + c) % 256 for c in range(768)])
        im.putpixel((i % 16, (i // 16) % 16), (i + 7) % 256)  # no two frames alike
    return _pillow(images[0], "GIF", save_all=True, append_images=images[1:], duration=10, loop=0)


def _animated_png(frames: int) -> bytes:
    images = [Image.new("L", (16, 16), i % 256) for i in range(frames)]
    return _pillow(images[0], "PNG", save_all=True, append_images=images[1:], duration=10)


def _multipage_tiff(pages: int) -> bytes:
    images = [_gradient(24, 24, "L").rotate(i) for i in range(pages)]
    return _pillow(images[0], "TIFF", save_all=True, append_images=images[1:])


def _palette_with_transparency() -> bytes:
    im = _gradient(32, 32).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _pillow(im, "PNG", transparency=0)


def _rgb16_png() -> bytes:
    rows = b"".join(
        b"\x00" + b"".join(struct.pack(">HHH", x * 4000, y * 4000, 65535) for x in range(16))
        for y in range(16)
    )
    return _png(16, 16, 16, 2, rows)


def _grey16_png() -> bytes:
    a = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64).astype(np.uint16)
    return _pillow(Image.fromarray(a), "PNG")  # uint16 -> mode I;16


def _cmyk_jpeg() -> bytes:
    return _pillow(_gradient(48, 48, "CMYK"), "JPEG")


def _progressive_jpeg() -> bytes:
    return _pillow(_gradient(96, 64), "JPEG", progressive=True, quality=85)


def _text_bomb(kind: bytes) -> bytes:
    """A 28x28 PNG carrying ~100 MB of zeros deflated into a ~100 KB text chunk."""
    zeros = zlib.compress(b"\x00" * 100_000_000, 9)
    if kind == b"zTXt":
        body = b"Comment\x00\x00" + zeros
    else:  # iTXt, compressed
        body = b"Comment\x00\x01\x00en\x00\x00" + zeros
    rows = b"".join(b"\x00" + bytes(range(28)) for _ in range(28))
    return _png(28, 28, 8, 0, rows, extra=[_png_chunk(kind, body)])


def _many_text_chunks(count: int = 50_000) -> bytes:
    chunk = _png_chunk(b"tEXt", b"k\x00v")
    rows = b"".join(b"\x00" + bytes(28) for _ in range(28))
    return _png(28, 28, 8, 0, rows, extra=[chunk] * count)


def _iccp_bomb() -> bytes:
    profile = zlib.compress(b"\x00" * 50_000_000, 9)
    rows = b"".join(b"\x00" + bytes(28) for _ in range(28))
    return _png(28, 28, 8, 0, rows, extra=[_png_chunk(b"iCCP", b"icc\x00\x00" + profile)])


def _idat_bomb(side: int, colour: int, channels: int) -> bytes:
    """``side`` x ``side`` of zeros: a few KB on the wire, side^2 x channels bytes decoded."""
    rows = (b"\x00" + b"\x00" * side * channels) * side
    return _png(side, side, 8, colour, rows)


def _broken_crc_png() -> bytes:
    data = bytearray(_pillow(_gradient(20, 20), "PNG"))
    data[29:33] = b"\xde\xad\xbe\xef"  # IHDR CRC
    return bytes(data)


def _png_zip_polyglot() -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("payload.js", "alert(document.domain)")
    return _pillow(_gradient(28, 28, "L"), "PNG") + archive.getvalue()


def _gif_js_polyglot() -> bytes:
    """GIF89a whose screen width bytes are '/*', with JavaScript after the trailer."""
    width = int.from_bytes(b"/*", "little")  # 10799
    return _gif(width, 1, (1, 1), tail=b"*/=1;alert(document.domain);//")


def _html_in_png_text() -> bytes:
    chunk = _png_chunk(b"tEXt", b"Comment\x00<script>alert(1)</script>")
    rows = b"".join(b"\x00" + bytes(range(28)) for _ in range(28))
    return _png(28, 28, 8, 0, rows, extra=[chunk])


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


OK = frozenset({200})
UNDECODABLE = frozenset({400})
UNSUPPORTED = frozenset({415})
TOO_BIG = frozenset({413})
EMPTY = frozenset({400, 422})  # an empty part (400) or no picture at all (422)

_SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
_SVG += b'<script>alert(1)</script><rect width="28" height="28"/></svg>'
_PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Count 0"
_PDF += b"/Kids[]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"

# name -> (factory, claimed file name, claimed content type, right statuses)
_CASES: dict[str, tuple[Callable[[], bytes], str, str, frozenset[int]]] = {
    "zero-bytes": (lambda: b"", "empty.png", "image/png", EMPTY),
    "truncated-png": (
        lambda: _half(_pillow(_gradient(), "PNG")),
        "t.png",
        "image/png",
        UNDECODABLE,
    ),
    "truncated-jpeg": (
        lambda: _half(_pillow(_gradient(), "JPEG")),
        "t.jpg",
        "image/jpeg",
        UNDECODABLE,
    ),
    "png-header-only": (lambda: b"\x89PNG\r\n\x1a\n", "h.png", "image/png", UNDECODABLE),
    "png-broken-crc": (_broken_crc_png, "crc.png", "image/png", UNDECODABLE),
    "text-named-png": (lambda: b"hello, I am text\n" * 4, "text.png", "image/png", UNSUPPORTED),
    "svg": (lambda: _SVG, "x.svg", "image/svg+xml", UNSUPPORTED),
    "pdf": (lambda: _PDF, "x.pdf", "application/pdf", UNSUPPORTED),
    "psd": (lambda: b"8BPS\x00\x01" + bytes(64), "x.psd", "image/vnd.adobe.photoshop", UNSUPPORTED),
    "random-bytes": (
        lambda: np.random.default_rng(7).bytes(4096),
        "noise.jpg",
        "image/jpeg",
        UNSUPPORTED,
    ),
    "bomb-png-dimensions": (lambda: _png(BIG, BIG, 8, 0), "bomb.png", "image/png", TOO_BIG),
    "bomb-png-rgba-100000x1000": (lambda: _png(BIG, 1000, 8, 6), "bomb.png", "image/png", TOO_BIG),
    "bomb-jpeg-dimensions": (lambda: _jpeg_with_size(65500, 65500), "b.jpg", "image/jpeg", TOO_BIG),
    "bomb-gif-dimensions": (
        lambda: _gif(65535, 65535, (65535, 65535)),
        "b.gif",
        "image/gif",
        TOO_BIG,
    ),
    "bomb-bmp-dimensions": (
        lambda: _bmp_header_only(50_000, 50_000),
        "b.bmp",
        "image/bmp",
        TOO_BIG,
    ),
    "bomb-tiff-dimensions": (lambda: _tiff([(BIG, BIG)]), "b.tif", "image/tiff", TOO_BIG),
    "bomb-png-ztxt": (lambda: _text_bomb(b"zTXt"), "z.png", "image/png", OK),
    "bomb-png-itxt": (lambda: _text_bomb(b"iTXt"), "i.png", "image/png", OK),
    "png-50000-text-chunks": (_many_text_chunks, "many.png", "image/png", OK),
    "bomb-png-iccp": (_iccp_bomb, "icc.png", "image/png", frozenset({200, 400})),
    "large-but-allowed-grey-6000": (lambda: _idat_bomb(6000, 0, 1), "g.png", "image/png", OK),
    "aspect-1x10000": (
        lambda: _pillow(_gradient(1, 10000, "L"), "PNG"),
        "tall.png",
        "image/png",
        OK,
    ),
    "aspect-10000x1": (lambda: _pillow(_gradient(10000, 1), "PNG"), "wide.png", "image/png", OK),
    "one-pixel": (
        lambda: _pillow(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "1.png",
        "image/png",
        OK,
    ),
    "grey-16bit": (_grey16_png, "g16.png", "image/png", OK),
    "rgb-16bit": (_rgb16_png, "rgb16.png", "image/png", OK),
    "palette-transparency": (_palette_with_transparency, "p.png", "image/png", OK),
    "rgba": (lambda: _pillow(_gradient(30, 30, "RGBA"), "PNG"), "a.png", "image/png", OK),
    "cmyk-jpeg": (_cmyk_jpeg, "cmyk.jpg", "image/jpeg", OK),
    "progressive-jpeg": (_progressive_jpeg, "prog.jpg", "image/jpeg", OK),
    "exif-broken-ifd": (lambda: _exif_jpeg(_broken_exif_ifd()), "e.jpg", "image/jpeg", OK),
    "exif-orientation-wrong-type": (
        lambda: _exif_jpeg(_exif_orientation_wrong_type()),
        "e2.jpg",
        "image/jpeg",
        OK,
    ),
    "exif-garbage": (lambda: _exif_jpeg(b"MM\x00*garbage" * 3), "e3.jpg", "image/jpeg", OK),
    "animated-gif-1500-frames": (lambda: _animated_gif(1500), "anim.gif", "image/gif", OK),
    "animated-png-500-frames": (lambda: _animated_png(500), "anim.png", "image/png", OK),
    "multipage-tiff-40": (lambda: _multipage_tiff(40), "pages.tif", "image/tiff", OK),
    "tiff-5000-pages": (lambda: _tiff([(1, 1)] * 5000), "many.tif", "image/tiff", OK),
    "tiff-ifd-loop": (
        lambda: _tiff([(4, 4)] * 3, loop=True),
        "loop.tif",
        "image/tiff",
        frozenset({200, 400}),
    ),
    "polyglot-png-zip": (_png_zip_polyglot, "poly.png", "image/png", OK),
    "polyglot-gif-js": (_gif_js_polyglot, "poly.gif", "image/gif", frozenset({200, 400})),
    "png-with-script-text": (_html_in_png_text, "s.png", "image/png", OK),
    "png-claimed-as-jpeg": (
        lambda: _pillow(_gradient(28, 28), "PNG"),
        "liar.jpg",
        "image/jpeg",
        OK,
    ),
}


def cases() -> list[Hostile]:
    return [
        Hostile(name, factory(), filename, content_type, ok)
        for name, (factory, filename, content_type, ok) in _CASES.items()
    ]


def case_names() -> list[str]:
    return list(_CASES)


def build(name: str) -> Hostile:
    factory, filename, content_type, ok = _CASES[name]
    return Hostile(name, factory(), filename, content_type, ok)
