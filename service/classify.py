"""One classification: pictures -> prepared pixels -> one batched inference -> per-picture results.

The routes (and the fast lane, service/fastlane.py) parse HTTP; this module does the work they
share: the ``feature_maps`` and ``cam`` options, decoding in worker threads, asking the runtime
for exactly the outputs needed, and rendering top-k, feature-map grids and CAM overlays.

Results are plain dicts in the order of ``schemas.PictureResult``: the fast lane serialises them
directly, the FastAPI routes validate them against the schema.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from .errors import InvalidParameter, NotFound, ServiceError
from .imaging import Prepared, prepare_image, sniff_format
from .registry import LoadedModel
from .render import cam_overlay, data_url, feature_grid
from .spec import LayerSpec, ModelSpec

TOP = -1  # cam=true: the map of each picture's own top-1 class
INLINE_RESULT_PIXELS = 16_384  # model-input pixels whose results are built on the event loop
INLINE_PNG_PIXELS = 64 * 64  # PNGs up to this size are decoded on the event loop
INLINE_PNG_BYTES = 64 * 1024
FALSE, TRUE = {"", "false", "0", "no", "off"}, {"true", "1", "yes", "on"}


def _shown(text: str) -> str:
    return repr(text[:64])


@dataclass
class Options:
    top_k: int = 5
    layers: list[LayerSpec] = field(default_factory=list)
    cam: int | None = None  # None: no CAM; TOP: top-1 class; else a class index
    input_image: bool = False  # the network input as a PNG data URL

    @property
    def display(self) -> bool:
        """The CAM overlay is drawn on the 224 px display picture; nothing else needs it."""
        return self.cam is not None

    @property
    def outputs(self) -> list[str]:
        extra = ["cam"] if self.cam is not None else []
        return ["probabilities", *(ly.output for ly in self.layers), *extra]


def find_layer(spec: ModelSpec, name: str) -> LayerSpec:
    layer = spec.layer(name)
    if layer is None:
        names = ", ".join(ly.name for ly in spec.layers)
        raise NotFound(f"model {spec.name} has no layer {_shown(name)} (layers: {names})")
    return layer


def parse_layers(spec: ModelSpec, value: str) -> list[LayerSpec]:
    """``feature_maps``: false | true (every layer) | comma-separated layer names."""
    if value.strip().lower() in FALSE:
        return []
    if value.strip().lower() in TRUE:
        return list(spec.layers)
    names = [n.strip() for n in value.split(",") if n.strip()]
    layers = [find_layer(spec, n) for n in names]
    return list({ly.output: ly for ly in layers}.values())  # once each, in the order asked


def find_label(spec: ModelSpec, label: str) -> int:
    """A label by name (exact, then ignoring case) or by class index."""
    if label in spec.labels:
        return spec.labels.index(label)
    folded = [lb.casefold() for lb in spec.labels]
    if label.casefold() in folded:
        return folded.index(label.casefold())
    if label.isdigit() and int(label) < len(spec.labels):
        return int(label)
    raise NotFound(f"model {spec.name} has no label {_shown(label)}")


def require_cam(spec: ModelSpec) -> None:
    """A model exported without a ``cam`` output answers CAM requests with a 404 saying so."""
    if spec.cam is None:
        raise NotFound(
            f"model {spec.name} has no class-activation map (its metadata says cam: none); "
            "ask for feature maps instead",
            code="no_cam",
        )


def parse_cam(spec: ModelSpec, value: str) -> int | None:
    """``cam``: false | true (each picture's top-1 class) | a label name or index."""
    if value.strip().lower() in FALSE and not value.strip().isdigit():
        return None
    require_cam(spec)
    if value.strip().isdigit():  # "0" and "1" are class indices here, not booleans
        return find_label(spec, value.strip())
    if value.strip().lower() in TRUE:
        return TOP
    return find_label(spec, value.strip())


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


_decoders: ThreadPoolExecutor | None = None


def set_decode_threads(threads: int) -> None:
    """Decoding threads for this process (0: two per core it may run on)."""
    global _decoders
    if _decoders is not None:
        _decoders.shutdown(wait=False)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    _decoders = ThreadPoolExecutor(threads or 2 * (cores or 1), thread_name_prefix="decode")


async def decode_in_pool(prepare: Callable[[], Prepared]) -> Prepared:
    """Decode in a pool of its own: two threads per core (one decodes while the other waits
    for the GIL) beat both one per core and the 40 of FastAPI's pool, which also costs more
    per call (photo JPEG at concurrency 64: 1,075 against 831 and 1,015 req/s)."""
    if _decoders is None:
        set_decode_threads(0)
    assert _decoders is not None
    return await asyncio.get_running_loop().run_in_executor(_decoders, prepare)


async def prepare_all(
    pictures: list[bytes], spec: ModelSpec, max_pixels: int, *, display: bool = False
) -> list[Prepared]:
    """Decode each picture (small PNGs inline, others in a worker thread); errors say which
    picture when there are several."""
    prepared = []
    for i, data in enumerate(pictures):
        prepare = functools.partial(prepare_image, data, spec.input, max_pixels, display=display)
        try:
            if decodes_quickly(data):
                prepared.append(prepare())
            else:
                prepared.append(await decode_in_pool(prepare))
        except ServiceError as exc:
            if len(pictures) == 1:
                raise
            where = f"picture {i + 1} of {len(pictures)}: {exc.message}"
            raise type(exc)(where, status=exc.status, code=exc.code) from None
    return prepared


async def infer(model: LoadedModel, prepared: list[Prepared], outputs: list[str]) -> dict:
    pixels = np.stack([p.pixels for p in prepared])
    return await model.runtime.infer(pixels, outputs)


def png(pixels: np.ndarray) -> bytes:
    """uint8 [H, W, C] (C = 1 or 3) -> PNG bytes."""
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def top_k(spec: ModelSpec, probs: np.ndarray, k: int) -> list[dict[str, Any]]:
    order = np.argsort(-probs, kind="stable")[: min(k, len(spec.labels))].tolist()
    values = probs.tolist()
    return [{"label": spec.labels[i], "index": i, "probability": values[i]} for i in order]


def feature_map(layer: LayerSpec, fmap: np.ndarray) -> dict[str, Any]:
    image, grid = feature_grid(fmap)
    return {
        "layer": layer.name,
        "kind": layer.kind,
        "kernel": layer.kernel,
        "stride": layer.stride,
        "padding": layer.padding,
        "shape": list(fmap.shape),
        "grid": grid,
        "image": data_url(image),
    }


def cam_of(spec: ModelSpec, cams: np.ndarray, index: int, display: np.ndarray) -> dict[str, Any]:
    assert spec.cam is not None  # parse_cam refused the request otherwise
    image = cam_overlay(cams[index], display)
    cam = spec.cam
    return {"label": spec.labels[index], "index": index, "kind": cam.kind, "layer": cam.layer,
            "method": cam.method, "image": data_url(image)}  # fmt: skip


def results(
    model: LoadedModel, prepared: list[Prepared], arrays: dict, options: Options
) -> list[dict[str, Any]]:
    """One ``schemas.PictureResult`` dict per picture. Blocking when it encodes PNGs (input
    image, feature maps, CAM): then call it in a worker thread."""
    spec, out = model.spec, []
    for i, picture in enumerate(prepared):
        probs = arrays["probabilities"][i]
        fmaps = cam = None
        if options.layers:
            fmaps = [feature_map(ly, arrays[ly.output][i]) for ly in options.layers]
        if options.cam is not None:
            assert picture.display is not None  # prepared with display=options.display
            index = int(np.argmax(probs)) if options.cam == TOP else options.cam
            cam = cam_of(spec, arrays["cam"][i], index, picture.display)
        result = {
            "predictions": top_k(spec, probs, options.top_k),
            "preprocessing": picture.info,
            "input_image": data_url(png(picture.pixels)) if options.input_image else None,
            "feature_maps": fmaps,
            "cam": cam,
        }
        out.append(result)
    return out


async def classify(
    model: LoadedModel,
    pictures: list[bytes],
    options: Options,
    max_pixels: int,
    *,
    alone: bool = False,
) -> list[dict[str, Any]]:
    """``alone``: the caller knows no other request is in flight, so a small picture for an idle
    model is run right here on the event loop (``ModelRuntime.run_inline``): no thread round
    trip, nobody kept waiting."""
    runtime, spec = model.runtime, model.spec
    if len(pictures) == 1 and runtime.idle and not decodes_quickly(pictures[0]):
        # Nobody to batch with: decode and run in one worker-thread call (one round trip).
        decode = functools.partial(
            prepare_image, pictures[0], spec.input, max_pixels, display=options.display
        )
        picture, arrays = await runtime.run_alone(decode, options.outputs, lone=alone)
        prepared = [picture]
    else:
        prepared = await prepare_all(pictures, spec, max_pixels, display=options.display)
        if alone and len(prepared) == 1 and runtime.can_run_inline:
            arrays = runtime.run_inline(prepared[0].pixels[None], options.outputs)
        else:
            arrays = await infer(model, prepared, options.outputs)
    small = sum(p.pixels.size for p in prepared) <= INLINE_RESULT_PIXELS
    if small and not options.layers and options.cam is None:
        # Top-k (and a small input PNG): ~10-50 us, less than a round trip to a worker thread.
        return results(model, prepared, arrays, options)
    return await run_in_threadpool(results, model, prepared, arrays, options)


def response(model: LoadedModel, results: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``schemas.ClassifyResponse`` as a dict."""
    return {"model": {"name": model.name, "version": model.spec.version}, "results": results}


def one_picture(pictures: list[bytes]) -> bytes:
    if len(pictures) != 1:
        raise InvalidParameter(f"this endpoint takes exactly one picture, not {len(pictures)}")
    return pictures[0]
