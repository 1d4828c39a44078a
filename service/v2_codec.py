"""Open Inference Protocol (KServe v2) bodies <-> numpy: JSON tensors and the binary extension.

Pure functions with no FastAPI and no model in sight, so the protocol can be tested byte for byte.
Everything a client can get wrong (malformed JSON, a shape that does not match the data, a binary
section shorter than declared) is a ``BadRequest`` naming the problem: a 400, never a 500.

Binary tensor extension (what Triton and ``tritonclient`` speak): the body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by raw tensors in input order; each input that
travels this way says ``parameters.binary_data_size``. Numbers are little-endian, row-major; a
``BYTES`` tensor is each element as a 4-byte little-endian length followed by its bytes.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BadRequest

# Explicit little-endian dtypes: the extension fixes the byte order, whatever the host's is.
DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES = "BYTES"
HEADER = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    # numpy array of ``shape`` for numeric types; a flat list of elements for BYTES.
    value: np.ndarray | list[bytes]
    binary: bool  # came through the binary extension (else JSON ``data``)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: follow the request's ``binary_data_output``
    classification: int  # top-k for the classification extension; 0 = the plain tensor


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: list[InputTensor]
    outputs: list[RequestedOutput]  # empty: the server's default outputs
    binary_output: bool  # request-level ``parameters.binary_data_output``


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    value: np.ndarray | list[bytes]
    binary: bool


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{where} must be a JSON object")
    return value


def _flag(params: dict[str, Any], key: str, where: str) -> bool | None:
    value = params.get(key)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{where} parameter {key!r} must be true or false")
    return value


def _shape(value: Any, where: str) -> tuple[int, ...]:
    # bool is an int in Python; a shape of [true] is a client bug, not [1].
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise BadRequest(f"{where} shape must be a list of non-negative integers")
    return tuple(value)


def _decode_bytes_elements(raw: bytes, count: int, where: str) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(f"{where} BYTES data ends inside an element's length prefix")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise BadRequest(f"{where} BYTES element claims {size} bytes past the end of its data")
        elements.append(raw[offset : offset + size])
        offset += size
    if len(elements) != count:
        raise BadRequest(f"{where} has {len(elements)} BYTES elements but its shape needs {count}")
    return elements


def _flatten(data: Any) -> list[Any]:
    # Nested lists are allowed (KServe's JSON examples use them); row-major order either way.
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _numeric_from_json(data: Any, datatype: str, count: int, where: str) -> np.ndarray:
    flat = _flatten(data)
    if len(flat) != count:
        raise BadRequest(f"{where} has {len(flat)} values but its shape needs {count}")
    dtype = DTYPES[datatype]
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise BadRequest(f"{where} BOOL data must be true or false")
        return np.array(flat, dtype=dtype)
    if dtype.kind in "iu":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
            raise BadRequest(f"{where} {datatype} data must be integers")
        info = np.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise BadRequest(f"{where} {datatype} data must lie in [{info.min}, {info.max}]")
    elif not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        raise BadRequest(f"{where} {datatype} data must be numbers")
    try:
        return np.array(flat, dtype=dtype)
    except OverflowError:  # an integer literal beyond any float (JSON has no size limit)
        raise BadRequest(f"{where} {datatype} data is out of range") from None


def _input(spec: Any, index: int, binary: memoryview, offset: int) -> tuple[InputTensor, int]:
    spec = _object(spec, f"inputs[{index}]")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"inputs[{index}] needs a name")
    where = f"input {name!r}"
    datatype = spec.get("datatype")
    if datatype != BYTES and datatype not in DTYPES:
        raise BadRequest(f"{where} has unknown datatype {datatype!r}")
    shape = _shape(spec.get("shape"), where)
    count = math.prod(shape)
    params = _object(spec.get("parameters", {}), f"{where} parameters")
    size = params.get("binary_data_size")
    if size is None:
        if "data" not in spec:
            raise BadRequest(f"{where} has neither data nor parameters.binary_data_size")
        if datatype == BYTES:
            strings = _flatten(spec["data"])
            if not all(isinstance(s, str) for s in strings):
                raise BadRequest(f"{where} BYTES data must be strings")
            if len(strings) != count:
                raise BadRequest(f"{where} has {len(strings)} values but its shape needs {count}")
            try:
                value: np.ndarray | list[bytes] = [s.encode() for s in strings]
            except UnicodeEncodeError:  # JSON can spell lone surrogates (\ud800); UTF-8 cannot
                raise BadRequest(f"{where} BYTES data must be valid Unicode text") from None
        else:
            value = _numeric_from_json(spec["data"], datatype, count, where).reshape(shape)
        return InputTensor(name, datatype, shape, value, binary=False), offset
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequest(f"{where} binary_data_size must be a non-negative integer")
    if "data" in spec:
        raise BadRequest(f"{where} has both data and parameters.binary_data_size")
    if offset + size > len(binary):
        raise BadRequest(f"{where} declares {size} binary bytes but the body has fewer left")
    raw = bytes(binary[offset : offset + size])
    if datatype == BYTES:
        value = _decode_bytes_elements(raw, count, where)
    else:
        dtype = DTYPES[datatype]
        if size != count * dtype.itemsize:
            raise BadRequest(
                f"{where} has {size} binary bytes but {datatype} {list(shape)} "
                f"needs {count * dtype.itemsize}"
            )
        value = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return InputTensor(name, datatype, shape, value, binary=True), offset + size


def _output(spec: Any, index: int) -> RequestedOutput:
    spec = _object(spec, f"outputs[{index}]")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"outputs[{index}] needs a name")
    params = _object(spec.get("parameters", {}), f"output {name!r} parameters")
    k = params.get("classification", 0)
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise BadRequest(f"output {name!r} classification must be a non-negative integer")
    return RequestedOutput(name, _flag(params, "binary_data", f"output {name!r}"), k)


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """Split a body into the JSON header and the binary section, and decode every input."""
    if header_length is None:
        head, binary = body, memoryview(b"")
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise BadRequest(f"{HEADER} must be an integer") from None
        if not 0 <= length <= len(body):
            raise BadRequest(f"{HEADER} is {length} but the body has {len(body)} bytes")
        head, binary = body[:length], memoryview(body)[length:]
    try:
        doc = json.loads(head)
    # ValueError also covers integers past Python's 4300-digit limit; RecursionError, arrays
    # nested thousands deep. A 10 MB body can hold either.
    except (ValueError, RecursionError):
        raise BadRequest(
            f"request header is not valid JSON (binary data needs the {HEADER} header)"
        ) from None
    doc = _object(doc, "request")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("request id must be a string")
    params = _object(doc.get("parameters", {}), "request parameters")
    inputs_doc = doc.get("inputs")
    if not isinstance(inputs_doc, list) or not inputs_doc:
        raise BadRequest("request needs a non-empty list of inputs")
    inputs, offset = [], 0
    for i, spec in enumerate(inputs_doc):
        tensor, offset = _input(spec, i, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise BadRequest(
            f"body has {len(binary) - offset} binary bytes that no input's binary_data_size claims"
        )
    outputs_doc = doc.get("outputs", [])
    if not isinstance(outputs_doc, list):
        raise BadRequest("request outputs must be a list")
    outputs = [_output(spec, i) for i, spec in enumerate(outputs_doc)]
    names = [o.name for o in outputs]
    if len(set(names)) != len(names):
        raise BadRequest("request asks for the same output twice")
    binary_output = _flag(params, "binary_data_output", "request") or False
    return InferRequest(request_id, inputs, outputs, binary_output)


def classification(scores: np.ndarray, k: int, labels: Sequence[str]) -> list[bytes]:
    """Top-k per row as Triton's ``"score:index:label"`` strings (``%f`` score), best first."""
    k = min(k, scores.shape[1])
    # Stable sort on the negated scores: ties keep the lower index first, like Triton.
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [
        f"{float(row[i]):f}:{i}:{labels[i]}".encode()
        for row, idx in zip(scores, order, strict=True)
        for i in idx
    ]


def encode_response(header: dict[str, Any], outputs: Sequence[OutputTensor]) -> tuple[bytes, int]:
    """The response body and its JSON header's length (equal to the body's when all is JSON)."""
    described, payloads = [], []
    for out in outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype}
        entry["shape"] = list(out.shape)
        if out.binary:
            if out.datatype == BYTES:
                assert isinstance(out.value, list)
                raw = b"".join(struct.pack("<I", len(s)) + s for s in out.value)
            else:
                raw = np.ascontiguousarray(out.value, dtype=DTYPES[out.datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            payloads.append(raw)
        elif out.datatype == BYTES:
            assert isinstance(out.value, list)
            entry["data"] = [s.decode() for s in out.value]
        else:
            # float32 -> Python float is exact: parsed back as FP32 it gives the same bits.
            entry["data"] = np.asarray(out.value).ravel().tolist()
        described.append(entry)
    head = json.dumps({**header, "outputs": described}, separators=(",", ":")).encode()
    return head + b"".join(payloads), len(head)
