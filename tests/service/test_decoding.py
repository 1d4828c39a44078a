"""Where a picture is decoded: small PNGs on the event loop, everything else in a worker thread."""

from __future__ import annotations

import asyncio
import io
import threading

import numpy as np
import pytest
from PIL import Image

from service import decoding
from service.decoding import INLINE_PNG_BYTES, Decoders, decodes_quickly
from service.imaging import Prepared
from service.spec import InputSpec


def encoded(size: tuple[int, int], fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0]), dtype=np.uint8)
    Image.fromarray(pixels, "L").save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "quick"),
    [
        (encoded((28, 28)), True),
        (encoded((64, 64)), True),
        (encoded((65, 64)), False),  # more pixels than INLINE_PNG_PIXELS
        (encoded((28, 28), "JPEG"), False),  # decoded in C: worth a thread
        (encoded((28, 28), "GIF"), False),
        (encoded((28, 28))[:20], False),  # too short to hold a header
        (encoded((28, 28)) + b"\0" * INLINE_PNG_BYTES, False),  # too many bytes
        (encoded((28, 28))[:12] + b"tEXt" + encoded((28, 28))[16:], False),  # IHDR not first
        (b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + (10**6).to_bytes(4, "big") * 2, False),
    ],
)
def test_which_pictures_decode_on_the_event_loop(data: bytes, quick: bool) -> None:
    assert decodes_quickly(data) is quick


def test_small_pngs_decode_in_the_loop_thread_and_photos_in_a_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = InputSpec(height=28, width=28, channels=1, mode="L", resize="pad", background="dark")
    threads: list[int] = []
    real = decoding.prepare_image

    def recording(data: bytes, *args: object, **kw: bool) -> Prepared:
        threads.append(threading.get_ident())
        return real(data, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(decoding, "prepare_image", recording)
    decoders = Decoders(0, 40_000_000)

    async def scenario() -> tuple[int, list[Prepared]]:
        data = [encoded((28, 28)), encoded((640, 480), "JPEG", quality=90)]
        return threading.get_ident(), await decoders.pictures(data, spec).decode()

    loop_thread, prepared = asyncio.run(scenario())
    decoders.close()
    assert [p.pixels.shape for p in prepared] == [(28, 28, 1), (28, 28, 1)]
    assert threads[0] == loop_thread and threads[1] != loop_thread
