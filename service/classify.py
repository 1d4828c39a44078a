"""The classification use case: a request's pictures -> one run -> per-picture results.

The routes and the fast lane (service/fastlane.py) parse HTTP and the options
(service/options.py); the runtime decides how the pictures are decoded and run
(``ModelRuntime.run_pictures``); this module asks for exactly the outputs the options need and
turns them into top-k, feature-map grids and CAM overlays.

Results are the typed dicts that service/schemas.py declares (``PictureResult``): the fast lane
serialises them as they are, the FastAPI routes validate them through ``ClassifyResponse``.
"""

from __future__ import annotations

import io
from typing import Any, cast

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from .decoding import Pictures
from .errors import InvalidParameter
from .imaging import Prepared
from .options import TOP, Options
from .registry import LoadedModel
from .render import cam_overlay, data_url, feature_grid
from .schemas import Cam, FeatureMap, Grid, PictureResult, Prediction, Preprocessing
from .spec import LayerSpec, ModelSpec

INLINE_RESULT_PIXELS = 16_384  # model-input pixels whose results are built on the event loop


def png(pixels: np.ndarray) -> bytes:
    """uint8 [H, W, C] (C = 1 or 3) -> PNG bytes."""
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def top_k(spec: ModelSpec, probs: np.ndarray, k: int) -> list[Prediction]:
    order = np.argsort(-probs, kind="stable")[: min(k, len(spec.labels))].tolist()
    values = probs.tolist()
    return [{"label": spec.labels[i], "index": i, "probability": values[i]} for i in order]


def feature_map(layer: LayerSpec, fmap: np.ndarray) -> FeatureMap:
    image, grid = feature_grid(fmap)
    return {
        "layer": layer.name,
        "kind": layer.kind,
        "kernel": layer.kernel,
        "stride": layer.stride,
        "padding": layer.padding,
        "shape": list(fmap.shape),
        "grid": cast(Grid, grid),
        "image": data_url(image),
    }


def cam_of(spec: ModelSpec, cams: np.ndarray, index: int, display: np.ndarray) -> Cam:
    assert spec.cam is not None  # parse_cam refused the request otherwise
    image = cam_overlay(cams[index], display)
    cam = spec.cam
    return {"label": spec.labels[index], "index": index, "kind": cam.kind, "layer": cam.layer,
            "method": cam.method, "image": data_url(image)}  # fmt: skip


def results(
    model: LoadedModel, prepared: list[Prepared], arrays: dict, options: Options
) -> list[PictureResult]:
    """One result per picture. Blocking when it encodes PNGs (input image, feature maps, CAM):
    then call it in a worker thread."""
    spec, out = model.spec, []
    for i, picture in enumerate(prepared):
        probs = arrays["probabilities"][i]
        fmaps: list[FeatureMap] | None = None
        cam: Cam | None = None
        if options.layers:
            fmaps = [feature_map(ly, arrays[ly.output][i]) for ly in options.layers]
        if options.cam is not None:
            assert picture.display is not None  # prepared with display=options.display
            index = int(np.argmax(probs)) if options.cam == TOP else options.cam
            cam = cam_of(spec, arrays["cam"][i], index, picture.display)
        result: PictureResult = {
            "predictions": top_k(spec, probs, options.top_k),
            "preprocessing": cast(Preprocessing, picture.info),  # imaging.py fills it
            "input_image": data_url(png(picture.pixels)) if options.input_image else None,
            "feature_maps": fmaps,
            "cam": cam,
        }
        out.append(result)
    return out


async def classify(
    model: LoadedModel, pictures: Pictures, options: Options, *, alone: bool = False
) -> list[PictureResult]:
    """``alone``: the caller knows that no other request is in flight (the runtime may then
    run the picture on the event loop)."""
    runtime = model.runtime
    prepared, arrays = await runtime.run_pictures(pictures, options.outputs, lone=alone)
    small = sum(p.pixels.size for p in prepared) <= INLINE_RESULT_PIXELS
    if small and not options.layers and options.cam is None:
        # Top-k (and a small input PNG): ~10-50 us, less than a round trip to a worker thread.
        return results(model, prepared, arrays, options)
    return await run_in_threadpool(results, model, prepared, arrays, options)


def response(model: LoadedModel, results: list[PictureResult]) -> dict[str, Any]:
    """A ``schemas.ClassifyResponse`` as a dict."""
    return {"model": {"name": model.name, "version": model.spec.version}, "results": results}


def one_picture(pictures: list[bytes]) -> bytes:
    if len(pictures) != 1:
        raise InvalidParameter(f"this endpoint takes exactly one picture, not {len(pictures)}")
    return pictures[0]
