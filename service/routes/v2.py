"""The Open Inference Protocol (KServe v2 REST), so Triton/KServe clients and gateways work as-is.

Health, server and model metadata, and ``infer`` with JSON tensors or the binary tensor
extension (service/v2_codec.py). The input ``image`` is either the model's own tensor
(``UINT8 [N, H, W, C]``) or encoded pictures (``BYTES [N]``) that go through the same decoding
and preprocessing as /v1. Errors use the protocol's shape, ``{"error": "<message>"}``, which
tritonclient reads: the edge's one error serialiser (service/edge.py) words every error under
/v2 that way.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from .. import __version__
from ..decoding import Decoders
from ..deps import DecodersDep, ModelDep, RegistryDep, SettingsDep, require_api_key
from ..errors import BadRequest, NotFound, UndecodableImage
from ..registry import LoadedModel
from ..runtime import INPUT_NAME
from ..settings import Settings
from ..spec import ModelSpec
from ..v2_codec import (
    BYTES,
    HEADER,
    InferRequest,
    InputTensor,
    OutputTensor,
    classification,
    encode_response,
    parse_request,
)

PREFIX = "/v2"
EXTENSIONS = ["binary_tensor_data", "classification"]
PLATFORM = "onnxruntime_onnx"
DEFAULT_OUTPUT = "probabilities"  # all outputs by default would ship every feature map


router = APIRouter(prefix=PREFIX, tags=["v2 (Open Inference Protocol)"])
# Health stays open (probes carry no key); everything that touches a model needs one when set.
protected = [Depends(require_api_key)]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks the batch axis.")
    parameters: dict[str, Any] | None = None


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class V2Error(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": V2Error, "description": text}
    for code, text in {
        400: "Malformed body; wrong input name, datatype, shape or size; unknown output.",
        401: "An API key is required (CONVSCOPE_API_KEYS is set) and was missing or wrong.",
        404: "No such model or version.",
        413: "The body or a picture is over its limit.",
        415: "A BYTES element is not a supported picture.",
        503: "The models are still loading.",
    }.items()
}
# Only the infer routes read a body, so only they can answer the slow-body 408 (deadlines.py).
INFER_ERRORS = {
    **ERRORS,
    408: {"model": V2Error, "description": "The request body did not arrive in time."},
}


def _versioned(model: LoadedModel, version: str) -> LoadedModel:
    if version != model.spec.version:
        raise NotFound(
            f"model {model.name} has no version {version[:64]!r} (it has {model.spec.version!r})"
        )
    return model


@router.get("", operation_id="v2_server_metadata", responses=ERRORS)
def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="convscope", version=__version__, extensions=EXTENSIONS)


@router.get("/health/live", operation_id="v2_server_live")
def server_live() -> Live:
    return Live(live=True)


@router.get("/health/ready", operation_id="v2_server_ready", responses=ERRORS)
def server_ready(registry: RegistryDep) -> Ready:
    # RegistryDep is a 503 until every model has loaded.
    return Ready(ready=len(registry) > 0)


def _outputs(spec: ModelSpec) -> list[TensorMetadata]:
    k = len(spec.labels)
    outputs = [
        TensorMetadata(name="probabilities", datatype="FP32", shape=[-1, k]),
        TensorMetadata(name="logits", datatype="FP32", shape=[-1, k]),
        *(
            TensorMetadata(
                name=ly.output, datatype="FP32", shape=[-1, ly.channels, ly.height, ly.width]
            )
            for ly in spec.layers
        ),
    ]
    if spec.cam is not None:  # computed on the stage the metadata names
        stage = spec.layer(spec.cam.layer)
        cam_hw = [stage.height, stage.width] if stage is not None else [-1, -1]
        outputs.append(TensorMetadata(name="cam", datatype="FP32", shape=[-1, k, *cam_hw]))
    return outputs


def _metadata(model: LoadedModel) -> ModelMetadata:
    inp = model.spec.input
    alternative = {
        "datatype": BYTES,
        "shape": [-1],
        "content": "encoded pictures (PNG, JPEG, WebP, GIF, BMP, TIFF), decoded and resized "
        "like /v1; base64 strings in JSON, raw bytes with the binary extension",
    }
    image = TensorMetadata(
        name=INPUT_NAME,
        datatype="UINT8",
        shape=[-1, inp.height, inp.width, inp.channels],
        parameters={"also_accepts": alternative},
    )
    return ModelMetadata(
        name=model.name,
        versions=[model.spec.version],
        platform=PLATFORM,
        inputs=[image],
        outputs=_outputs(model.spec),
    )


@router.get(
    "/models/{name}",
    operation_id="v2_model_metadata",
    dependencies=protected,
    responses=ERRORS,
    response_model_exclude_none=True,
)
def model_metadata(model: ModelDep) -> ModelMetadata:
    return _metadata(model)


@router.get(
    "/models/{name}/versions/{version}",
    operation_id="v2_model_version_metadata",
    dependencies=protected,
    responses=ERRORS,
    response_model_exclude_none=True,
)
def model_version_metadata(model: ModelDep, version: str) -> ModelMetadata:
    return _metadata(_versioned(model, version))


@router.get(
    "/models/{name}/ready", operation_id="v2_model_ready", dependencies=protected, responses=ERRORS
)
def model_ready(model: ModelDep) -> ModelReady:
    return ModelReady(name=model.name, ready=True)


@router.get(
    "/models/{name}/versions/{version}/ready",
    operation_id="v2_model_version_ready",
    dependencies=protected,
    responses=ERRORS,
)
def model_version_ready(model: ModelDep, version: str) -> ModelReady:
    return ModelReady(name=_versioned(model, version).name, ready=True)


def _image_input(req: InferRequest, spec: ModelSpec) -> InputTensor:
    names = [t.name for t in req.inputs]
    unknown = [n for n in names if n != INPUT_NAME]
    if unknown:
        raise BadRequest(
            f"model {spec.name} has no input {unknown[0][:64]!r} (it takes {INPUT_NAME!r})"
        )
    if len(names) != 1:
        raise BadRequest(f"input {INPUT_NAME!r} is given {len(names)} times")
    return req.inputs[0]


def _checked(tensor: InputTensor, model: LoadedModel, settings: Settings) -> None:
    """The input's datatype and shape against the model's, and its batch size."""
    inp = model.spec.input
    want = [inp.height, inp.width, inp.channels]
    usage = f"UINT8 [N, {', '.join(map(str, want))}] pixels or BYTES [N] encoded pictures"
    if tensor.datatype == "UINT8" and (len(tensor.shape) != 4 or list(tensor.shape[1:]) != want):
        raise BadRequest(f"input {INPUT_NAME!r} has shape {list(tensor.shape)}; it takes {usage}")
    if tensor.datatype == BYTES and len(tensor.shape) != 1:
        raise BadRequest(f"input {INPUT_NAME!r} has shape {list(tensor.shape)}; it takes {usage}")
    if tensor.datatype not in ("UINT8", BYTES):
        raise BadRequest(f"input {INPUT_NAME!r} is {tensor.datatype}; it takes {usage}")
    n = tensor.shape[0]
    if n == 0:
        raise BadRequest(f"input {INPUT_NAME!r} has no pictures (batch size 0)")
    if n > settings.max_images:
        raise BadRequest(f"too many pictures: at most {settings.max_images} per request, not {n}")


async def _run(
    tensor: InputTensor, model: LoadedModel, decoders: Decoders, outputs: list[str]
) -> dict[str, np.ndarray]:
    """Run the model's own tensor, or decode BYTES pictures and run those."""
    if isinstance(tensor.value, np.ndarray):
        return await model.runtime.infer(tensor.value, outputs)
    n = tensor.shape[0]
    data = (
        tensor.value if tensor.binary else [_unbase64(s, i, n) for i, s in enumerate(tensor.value)]
    )
    pictures = decoders.pictures(list(data), model.spec.input)
    _, arrays = await model.runtime.run_pictures(pictures, outputs)
    return arrays


def _unbase64(text: bytes, index: int, count: int) -> bytes:
    # JSON strings cannot carry raw picture bytes (not UTF-8), so in JSON they are base64.
    try:
        return base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise UndecodableImage(
            f"picture {index + 1} of {count} is not valid base64 (BYTES in JSON are base64)"
        ) from None


def _output_plan(req: InferRequest, model: LoadedModel) -> list[tuple[str, bool, int]]:
    """(name, binary, classification k) for each output to return, validated against the model."""
    if not req.outputs:
        return [(DEFAULT_OUTPUT, req.binary_output, 0)]
    available = model.runtime.output_names
    plan = []
    for out in req.outputs:
        if out.name not in available:
            raise BadRequest(
                f"model {model.name} has no output {out.name[:64]!r} "
                f"(outputs: {', '.join(available)})"
            )
        if out.classification and out.name not in ("probabilities", "logits"):
            raise BadRequest(
                f"classification needs a [N, classes] output (probabilities or logits), "
                f"not {out.name!r}"
            )
        binary = req.binary_output if out.binary is None else out.binary
        plan.append((out.name, binary, out.classification))
    return plan


async def run_infer(
    req: InferRequest, model: LoadedModel, settings: Settings, decoders: Decoders
) -> list[OutputTensor]:
    """The infer use case of /v2 and of gRPC: check the request, run it, outputs as planned."""
    tensor = _image_input(req, model.spec)
    plan = _output_plan(req, model)  # before decoding: a bad output name costs no work
    _checked(tensor, model, settings)
    arrays = await _run(tensor, model, decoders, [name for name, _, _ in plan])
    outputs = []
    for name, binary, k in plan:
        value = arrays[name]
        if k:
            labels = classification(value, k, model.spec.labels)
            shape = (len(value), min(k, value.shape[1]))
            outputs.append(OutputTensor(name, BYTES, shape, labels, binary))
        else:
            outputs.append(OutputTensor(name, "FP32", tuple(value.shape), value, binary))
    return outputs


async def _infer(
    request: Request, model: LoadedModel, settings: Settings, decoders: Decoders
) -> Response:
    req = parse_request(await request.body(), request.headers.get(HEADER))
    outputs = await run_infer(req, model, settings, decoders)
    header: dict[str, Any] = {"model_name": model.name, "model_version": model.spec.version}
    if req.id is not None:
        header["id"] = req.id
    body, length = encode_response(header, outputs)
    if length == len(body):
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream", headers={HEADER: str(length)})


INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": "An inference request: JSON, or with the binary tensor extension a JSON "
        f"header of {HEADER} bytes followed by the raw input tensors.",
        "content": {
            "application/json": {
                "example": {
                    "id": "42",
                    "inputs": [
                        {"name": "image", "datatype": "BYTES", "shape": [1], "data": ["<base64>"]}
                    ],
                    "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "/models/{name}/infer",
    operation_id="v2_model_infer",
    dependencies=protected,
    responses=INFER_ERRORS,
    openapi_extra=INFER_BODY,
    response_class=Response,
)
async def model_infer(
    request: Request, model: ModelDep, settings: SettingsDep, decoders: DecodersDep
) -> Response:
    return await _infer(request, model, settings, decoders)


@router.post(
    "/models/{name}/versions/{version}/infer",
    operation_id="v2_model_version_infer",
    dependencies=protected,
    responses=INFER_ERRORS,
    openapi_extra=INFER_BODY,
    response_class=Response,
)
async def model_version_infer(
    request: Request, model: ModelDep, version: str, settings: SettingsDep, decoders: DecodersDep
) -> Response:
    return await _infer(request, _versioned(model, version), settings, decoders)
