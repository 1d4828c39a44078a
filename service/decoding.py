"""Decoding a request's pictures: small PNGs on the event loop, everything else in a pool.

The pool belongs to the app (``Decoders``, made and shut down by the lifespan, on
``app.state.decoders``); ``Pictures`` is one request's encoded pictures, which
``ModelRuntime.run_pictures`` decodes and runs in whichever way it decides.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .errors import ServiceError
from .imaging import Prepared, prepare_image, sniff_format
from .spec import InputSpec

INLINE_PNG_PIXELS = 64 * 64  # PNGs up to this size are decoded on the event loop
INLINE_PNG_BYTES = 64 * 1024


def decodes_quickly(data: bytes) -> bool:
    """A small PNG by its header (<= INLINE_PNG_PIXELS, <= INLINE_PNG_BYTES).

    Preparing one is ~0.15 ms of Python holding the GIL, so a worker thread cannot run it in
    parallel with the event loop: it only adds a round trip and GIL contention that triples
    the cost. Decoded on the event loop, a 28x28 PNG classification takes half the server CPU
    (benchmarks/README.md). Pictures that decode in C (photos) still go to worker threads.
    """
    if len(data) > INLINE_PNG_BYTES or len(data) < 24 or sniff_format(data) != "PNG":
        return False
    if data[12:16] != b"IHDR":  # the first chunk; anything else is left to the full decoder
        return False
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return width * height <= INLINE_PNG_PIXELS


class Decoders:
    """The app's decoding threads: two per core it may run on unless ``threads`` says.

    Two threads per core (one decodes while the other waits for the GIL) beat both one per core
    and the 40 of FastAPI's pool, which also costs more per call (photo JPEG at concurrency 64:
    1,075 against 831 and 1,015 req/s).
    """

    def __init__(self, threads: int, max_pixels: int) -> None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.pool = ThreadPoolExecutor(threads or 2 * (cores or 1), thread_name_prefix="decode")
        self.max_pixels = max_pixels

    def close(self) -> None:
        self.pool.shutdown(wait=False)

    def pictures(self, data: list[bytes], spec: InputSpec, *, display: bool = False) -> Pictures:
        return Pictures(data, spec, display, self)


@dataclass
class Pictures:
    """One request's encoded pictures, for a model input ``spec``."""

    data: list[bytes]
    spec: InputSpec
    display: bool  # also the 224 px display picture (for CAM overlays)
    decoders: Decoders

    def decoder(self, data: bytes) -> Callable[[], Prepared]:
        """Decoding one picture, blocking (any thread)."""
        return functools.partial(
            prepare_image, data, self.spec, self.decoders.max_pixels, display=self.display
        )

    def lone_slow(self) -> Callable[[], Prepared] | None:
        """The decoder of a lone picture that is worth a worker thread, else None."""
        if len(self.data) == 1 and not decodes_quickly(self.data[0]):
            return self.decoder(self.data[0])
        return None

    async def decode(self) -> list[Prepared]:
        """Each picture in turn (small PNGs here, others in the pool); errors say which picture
        when there are several."""
        loop, prepared = asyncio.get_running_loop(), []
        for i, data in enumerate(self.data):
            decode = self.decoder(data)
            try:
                if decodes_quickly(data):
                    prepared.append(decode())
                else:
                    prepared.append(await loop.run_in_executor(self.decoders.pool, decode))
            except ServiceError as exc:
                if len(self.data) == 1:
                    raise
                where = f"picture {i + 1} of {len(self.data)}: {exc.message}"
                raise type(exc)(where, status=exc.status, code=exc.code) from None
        return prepared
