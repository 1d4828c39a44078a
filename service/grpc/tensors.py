"""gRPC inference messages <-> the v2 codec's tensors (service/v2_codec.py), pure functions.

A ``ModelInferRequest`` becomes the same ``InferRequest`` that /v2 parses from JSON or the binary
extension, so both protocols share one use case (service/routes/v2.py) and say the same
sentences for the same mistakes. Inputs come as ``raw_input_contents`` (what tritonclient sends:
row-major little-endian elements, BYTES elements with a 4-byte length prefix) or as typed
``contents`` (``uint_contents`` for UINT8, ``bytes_contents`` for BYTES, ...). Outputs leave as
``raw_output_contents``, as Triton sends them.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import BadRequest
from ..v2_codec import (
    BYTES,
    DTYPES,
    InferRequest,
    InputTensor,
    OutputTensor,
    RequestedOutput,
    _decode_bytes_elements,
)
from . import open_inference_grpc_pb2 as pb

# The typed-contents field that carries each datatype (the protocol's InferTensorContents).
CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}  # FP16 travels only as raw contents (the protocol has no 16-bit field)


def _shape(dims: Sequence[int], where: str) -> tuple[int, ...]:
    if any(d < 0 for d in dims):
        raise BadRequest(f"{where} shape must be a list of non-negative integers")
    return tuple(dims)


def _from_raw(raw: bytes, datatype: str, shape: tuple[int, ...], where: str) -> Any:
    count = math.prod(shape)
    if datatype == BYTES:
        return _decode_bytes_elements(raw, count, where)
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(
            f"{where} has {len(raw)} binary bytes but {datatype} {list(shape)} "
            f"needs {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _from_contents(tensor: Any, datatype: str, shape: tuple[int, ...], where: str) -> Any:
    field = CONTENTS.get(datatype)
    if field is None:
        raise BadRequest(f"{where} {datatype} data must travel in raw_input_contents")
    values = getattr(tensor.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise BadRequest(f"{where} has {len(values)} values but its shape needs {count}")
    if datatype == BYTES:
        return list(values)
    dtype = DTYPES[datatype]
    if dtype.kind in "iu" and dtype.itemsize < 4 and values:
        # uint_contents and int_contents are 32-bit: a UINT8 of 300 must not wrap to 44.
        info = np.iinfo(dtype)
        if min(values) < info.min or max(values) > info.max:
            raise BadRequest(f"{where} {datatype} data must lie in [{info.min}, {info.max}]")
    return np.array(values, dtype=dtype).reshape(shape)


def _input(tensor: Any, index: int, raw: bytes | None) -> InputTensor:
    if not tensor.name:
        raise BadRequest(f"inputs[{index}] needs a name")
    where = f"input {tensor.name!r}"
    datatype = tensor.datatype
    if datatype != BYTES and datatype not in DTYPES:
        raise BadRequest(f"{where} has unknown datatype {datatype[:64]!r}")
    shape = _shape(tensor.shape, where)
    if raw is None:
        value = _from_contents(tensor, datatype, shape, where)
    else:
        value = _from_raw(raw, datatype, shape, where)
    # binary=True: BYTES elements are the pictures' own bytes here, never base64 text.
    return InputTensor(tensor.name, datatype, shape, value, binary=True)


def _classification(output: Any) -> int:
    param = output.parameters.get("classification")
    if param is None:
        return 0
    kind = param.WhichOneof("parameter_choice")
    k = getattr(param, kind) if kind in ("int64_param", "uint64_param") else None
    if not isinstance(k, int) or k < 0:
        raise BadRequest(
            f"output {output.name[:64]!r} classification must be a non-negative integer"
        )
    return k


def parse_request(message: pb.ModelInferRequest) -> InferRequest:
    """The request as /v2's use case takes it; every mistake a ``BadRequest`` naming it."""
    if not message.inputs:
        raise BadRequest("request needs a non-empty list of inputs")
    raws = list(message.raw_input_contents)
    if raws:
        if len(raws) != len(message.inputs):
            raise BadRequest(
                f"request has {len(raws)} raw_input_contents for {len(message.inputs)} inputs "
                "(one per input, in input order)"
            )
        if any(t.HasField("contents") for t in message.inputs):
            raise BadRequest("request mixes raw_input_contents with typed input contents")
    inputs = [_input(t, i, raws[i] if raws else None) for i, t in enumerate(message.inputs)]
    outputs = []
    for i, out in enumerate(message.outputs):
        if not out.name:
            raise BadRequest(f"outputs[{i}] needs a name")
        outputs.append(RequestedOutput(out.name, None, _classification(out)))
    names = [o.name for o in outputs]
    if len(set(names)) != len(names):
        raise BadRequest("request asks for the same output twice")
    return InferRequest(message.id or None, inputs, outputs, binary_output=True)


def _raw(out: OutputTensor) -> bytes:
    if out.datatype == BYTES:
        assert isinstance(out.value, list)
        return b"".join(struct.pack("<I", len(s)) + s for s in out.value)
    return np.ascontiguousarray(out.value, dtype=DTYPES[out.datatype]).tobytes()


def encode_response(
    model_name: str, model_version: str, request_id: str | None, outputs: Sequence[OutputTensor]
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request_id or ""
    )
    for out in outputs:
        response.outputs.add(name=out.name, datatype=out.datatype, shape=list(out.shape))
        response.raw_output_contents.append(_raw(out))
    return response
