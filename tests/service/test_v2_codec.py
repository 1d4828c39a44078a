"""The v2 codec byte for byte, against bodies built and parsed by tritonclient itself."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import tritonclient.http as triton

from service.errors import BadRequest
from service.v2_codec import (
    OutputTensor,
    classification,
    encode_response,
    parse_request,
)


def _triton_body(inputs, outputs=None, **kw) -> tuple[bytes, str | None]:
    body, length = triton.InferenceServerClient.generate_request_body(inputs, outputs, **kw)
    return body, None if length is None else str(length)


@pytest.mark.parametrize("binary", [False, True])
def test_uint8_tensor_from_tritonclient(binary: bool) -> None:
    pixels = np.arange(2 * 3 * 4 * 1, dtype=np.uint8).reshape(2, 3, 4, 1)
    inp = triton.InferInput("image", list(pixels.shape), "UINT8")
    inp.set_data_from_numpy(pixels, binary_data=binary)
    out = triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)
    req = parse_request(*_triton_body([inp], [out], request_id="r-1"))
    assert req.id == "r-1"
    (tensor,) = req.inputs
    assert (tensor.name, tensor.datatype, tensor.shape, tensor.binary) == (
        "image",
        "UINT8",
        (2, 3, 4, 1),
        binary,
    )
    assert isinstance(tensor.value, np.ndarray) and tensor.value.dtype == np.uint8
    np.testing.assert_array_equal(tensor.value, pixels)
    assert [(o.name, o.binary, o.classification) for o in req.outputs] == [
        ("probabilities", binary, 2)
    ]


def test_bytes_tensor_from_tritonclient_binary() -> None:
    blobs = np.array([b"\x89PNG\x00\xff", b"", b"abc"], dtype=np.object_)
    inp = triton.InferInput("image", [3], "BYTES")
    inp.set_data_from_numpy(blobs, binary_data=True)
    req = parse_request(*_triton_body([inp]))
    assert req.inputs[0].value == [b"\x89PNG\x00\xff", b"", b"abc"]
    # tritonclient asks for binary outputs when it names none.
    assert req.outputs == [] and req.binary_output is True


def test_nested_json_data_is_row_major() -> None:
    doc = {
        "inputs": [{"name": "x", "datatype": "UINT8", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]
    }
    (tensor,) = parse_request(json.dumps(doc).encode(), None).inputs
    np.testing.assert_array_equal(tensor.value, [[1, 2], [3, 4]])


def _doc(inputs: list | None = None, **fields) -> dict:
    image = {"name": "image", "datatype": "UINT8", "shape": [1, 2], "data": [1, 2]}
    return {"inputs": inputs if inputs is not None else [image], **fields}


def _one(**fields) -> bytes:
    image = {"name": "image", "datatype": "UINT8", "shape": [1, 2], "data": [1, 2], **fields}
    return json.dumps(_doc([{k: v for k, v in image.items() if v is not None}])).encode()


def _binary(tail: bytes, **fields) -> tuple[bytes, str]:
    image = {"name": "image", "datatype": "UINT8", "shape": [1, 2], **fields}
    head = json.dumps(_doc([image])).encode()
    return head + tail, str(len(head))


def _sized(n: int, **fields) -> dict:
    return {"parameters": {"binary_data_size": n}, **fields}


def _prefixed(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


IMG = "input 'image'"
CASES = [
    # (body, Inference-Header-Content-Length, exact message)
    (
        b"not json",
        None,
        "request header is not valid JSON (binary data needs the "
        "Inference-Header-Content-Length header)",
    ),
    (
        b"\xff\xfe",
        None,
        "request header is not valid JSON (binary data needs the "
        "Inference-Header-Content-Length header)",
    ),
    (b"[]", None, "request must be a JSON object"),
    (
        b'{"inputs": [' + b"1" * 5000 + b"]}",  # past Python's 4300-digit integer limit
        None,
        "request header is not valid JSON (binary data needs the "
        "Inference-Header-Content-Length header)",
    ),
    (
        b"[" * 100_000,
        None,
        "request header is not valid JSON (binary data needs the "
        "Inference-Header-Content-Length header)",
    ),
    (
        _one(datatype="BYTES", shape=[1], data=["\ud800"]),
        None,
        f"{IMG} BYTES data must be valid Unicode text",
    ),
    (b'{"inputs": []}', None, "request needs a non-empty list of inputs"),
    (b'{"inputs": {"name": "image"}}', None, "request needs a non-empty list of inputs"),
    (b'{"id": 7, "inputs": [{}]}', None, "request id must be a string"),
    (b'{"inputs": [{}]}', None, "inputs[0] needs a name"),
    (b'{"inputs": [3]}', None, "inputs[0] must be a JSON object"),
    (_one(datatype="FP8"), None, f"{IMG} has unknown datatype 'FP8'"),
    (_one(shape=[1, -2]), None, f"{IMG} shape must be a list of non-negative integers"),
    (_one(shape=[True, 2]), None, f"{IMG} shape must be a list of non-negative integers"),
    (_one(shape="1,2"), None, f"{IMG} shape must be a list of non-negative integers"),
    (_one(data=[1, 2, 3]), None, f"{IMG} has 3 values but its shape needs 2"),
    (_one(data=[[1], 2, [[3]]]), None, f"{IMG} has 3 values but its shape needs 2"),
    (_one(data=[1, 256]), None, f"{IMG} UINT8 data must lie in [0, 255]"),
    (_one(data=[1, -1]), None, f"{IMG} UINT8 data must lie in [0, 255]"),
    (_one(data=[1, 2.5]), None, f"{IMG} UINT8 data must be integers"),
    (_one(data=[1, "2"]), None, f"{IMG} UINT8 data must be integers"),
    (_one(data=[True, 2]), None, f"{IMG} UINT8 data must be integers"),
    (_one(datatype="FP32", data=[1, "x"]), None, f"{IMG} FP32 data must be numbers"),
    (_one(datatype="FP32", data=[1, 10**400]), None, f"{IMG} FP32 data is out of range"),
    (_one(data=[1, 10**400]), None, f"{IMG} UINT8 data must lie in [0, 255]"),
    (_one(datatype="BOOL", data=[1, 0]), None, f"{IMG} BOOL data must be true or false"),
    (_one(datatype="BYTES", shape=[1], data=[3]), None, f"{IMG} BYTES data must be strings"),
    (_one(datatype="BYTES", data=["a"]), None, f"{IMG} has 1 values but its shape needs 2"),
    (_one(data=None), None, f"{IMG} has neither data nor parameters.binary_data_size"),
    (_one(parameters=[]), None, f"{IMG} parameters must be a JSON object"),
    (_one(**_sized(2)), None, f"{IMG} has both data and parameters.binary_data_size"),
    (b"{}", "x", "Inference-Header-Content-Length must be an integer"),
    (b"{}", "-1", "Inference-Header-Content-Length is -1 but the body has 2 bytes"),
    (b"{}", "3", "Inference-Header-Content-Length is 3 but the body has 2 bytes"),
    (*_binary(b"\x01", **_sized(2)), f"{IMG} declares 2 binary bytes but the body has fewer left"),
    (*_binary(b"\x01\x02\x03", **_sized(3)), f"{IMG} has 3 binary bytes but UINT8 [1, 2] needs 2"),
    (
        *_binary(b"\x01\x02\x03", **_sized(2)),
        "body has 1 binary bytes that no input's binary_data_size claims",
    ),
    (*_binary(b"", **_sized(-1)), f"{IMG} binary_data_size must be a non-negative integer"),
    (
        *_binary(b"\x00\x00", **_sized(2, datatype="BYTES", shape=[1])),
        f"{IMG} BYTES data ends inside an element's length prefix",
    ),
    (
        *_binary(b"\x09\x00\x00\x00ab", **_sized(6, datatype="BYTES", shape=[1])),
        f"{IMG} BYTES element claims 9 bytes past the end of its data",
    ),
    (
        *_binary(_prefixed(b"a", b"b"), **_sized(10, datatype="BYTES", shape=[1])),
        f"{IMG} has 2 BYTES elements but its shape needs 1",
    ),
    (json.dumps(_doc(outputs={})).encode(), None, "request outputs must be a list"),
    (json.dumps(_doc(outputs=[{}])).encode(), None, "outputs[0] needs a name"),
    (
        json.dumps(_doc(outputs=[{"name": "p", "parameters": {"classification": -1}}])).encode(),
        None,
        "output 'p' classification must be a non-negative integer",
    ),
    (
        json.dumps(_doc(outputs=[{"name": "p", "parameters": {"classification": True}}])).encode(),
        None,
        "output 'p' classification must be a non-negative integer",
    ),
    (
        json.dumps(_doc(outputs=[{"name": "p", "parameters": {"binary_data": 1}}])).encode(),
        None,
        "output 'p' parameter 'binary_data' must be true or false",
    ),
    (
        json.dumps(_doc(outputs=[{"name": "p"}, {"name": "p"}])).encode(),
        None,
        "request asks for the same output twice",
    ),
    (
        json.dumps(_doc(parameters={"binary_data_output": "yes"})).encode(),
        None,
        "request parameter 'binary_data_output' must be true or false",
    ),
]


@pytest.mark.parametrize(("body", "header", "message"), CASES)
def test_malformed_requests_are_400(body: bytes, header: str | None, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_request(body, header)
    assert (info.value.status, info.value.message) == (400, message)


def test_classification_is_tritons_format() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], dtype=np.float32)
    assert classification(scores, 2, ["a", "b", "c"]) == [
        b"0.700000:1:b",
        b"0.200000:2:c",
        b"0.500000:0:a",
        b"0.250000:1:b",
    ]
    assert len(classification(scores, 9, ["a", "b", "c"])) == 6  # k beyond K: every class


@pytest.mark.parametrize("binary", [False, True])
def test_response_parsed_by_tritonclient(binary: bool) -> None:
    probs = np.random.default_rng(0).random((2, 10), dtype=np.float32)
    labels = classification(probs, 3, [f"c{i}" for i in range(10)])
    body, length = encode_response(
        {"model_name": "m", "model_version": "1", "id": "r-1"},
        [
            OutputTensor("probabilities", "FP32", (2, 10), probs, binary),
            OutputTensor("logits", "BYTES", (2, 3), labels, binary),
        ],
    )
    assert (length < len(body)) is binary
    result = triton.InferenceServerClient.parse_response_body(
        body, header_length=length if binary else None
    )
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probs)  # bit for bit
    # tritonclient hands JSON strings back as str and binary elements as bytes.
    got = [
        [s if isinstance(s, bytes) else s.encode() for s in row]
        for row in result.as_numpy("logits")
    ]
    assert got == [labels[:3], labels[3:]]
    assert result.get_response()["id"] == "r-1"
