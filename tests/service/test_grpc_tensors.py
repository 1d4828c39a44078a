"""gRPC inference messages -> /v2's request tensors and back (service/grpc/tensors.py)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

pytest.importorskip("grpc")
from service.errors import BadRequest
from service.grpc import open_inference_grpc_pb2 as pb
from service.grpc.tensors import encode_response, parse_request
from service.v2_codec import OutputTensor


def _request(**inputs: Any) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name="m", **inputs)


def test_raw_uint8_and_bytes_inputs() -> None:
    pixels = np.arange(2 * 2 * 2, dtype=np.uint8).reshape(2, 2, 2, 1)
    request = _request(id="7")
    request.inputs.add(name="image", datatype="UINT8", shape=[2, 2, 2, 1])
    request.inputs.add(name="files", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(pixels.tobytes())
    request.raw_input_contents.append(b"".join(struct.pack("<I", len(s)) + s for s in [b"a", b""]))
    out = request.outputs.add(name="probabilities")
    out.parameters["classification"].int64_param = 3
    req = parse_request(request)
    assert req.id == "7" and req.binary_output
    image, files = req.inputs
    assert (image.name, image.datatype, image.shape, image.binary) == (
        "image",
        "UINT8",
        (2, 2, 2, 1),
        True,
    )
    np.testing.assert_array_equal(image.value, pixels)
    assert files.value == [b"a", b""]
    assert [(o.name, o.classification) for o in req.outputs] == [("probabilities", 3)]


def test_typed_contents() -> None:
    request = _request()
    typed = request.inputs.add(name="image", datatype="UINT8", shape=[1, 3])
    typed.contents.uint_contents.extend([0, 128, 255])
    files = request.inputs.add(name="files", datatype="BYTES", shape=[1])
    files.contents.bytes_contents.append(b"\x89PNG")
    image, pictures = parse_request(request).inputs
    assert image.value.dtype == np.uint8 and image.value.tolist() == [[0, 128, 255]]
    assert pictures.value == [b"\x89PNG"] and pictures.binary  # raw bytes, never base64


def _one(datatype: str, shape: list[int], **kind: Any) -> pb.ModelInferRequest:
    request = _request()
    tensor = request.inputs.add(name="image", datatype=datatype, shape=shape)
    if "raw" in kind:
        request.raw_input_contents.append(kind["raw"])
    for field, values in kind.items():
        if field != "raw":
            getattr(tensor.contents, field).extend(values)
    return request


CASES = [
    (_request(), "request needs a non-empty list of inputs"),
    (
        _one("UINT8", [1, 2], raw=b"\x00"),
        "input 'image' has 1 binary bytes but UINT8 [1, 2] needs 2",
    ),
    (_one("UINT8", [1, 2], uint_contents=[1]), "input 'image' has 1 values but its shape needs 2"),
    (_one("UINT8", [2], uint_contents=[1, 300]), "input 'image' UINT8 data must lie in [0, 255]"),
    (
        _one("FP16", [1], fp32_contents=[1.0]),
        "input 'image' FP16 data must travel in raw_input_contents",
    ),
    (_one("FLOAT", [1], raw=b"\x00"), "input 'image' has unknown datatype 'FLOAT'"),
    (_one("UINT8", [-1], raw=b""), "input 'image' shape must be a list of non-negative integers"),
    (
        _one("BYTES", [2], raw=struct.pack("<I", 5) + b"ab"),
        "input 'image' BYTES element claims 5 bytes past the end of its data",
    ),
]


@pytest.mark.parametrize(("request_", "message"), CASES, ids=[c[1][:40] for c in CASES])
def test_mistakes_are_bad_requests_naming_them(request_: Any, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_request(request_)
    assert info.value.message == message


def test_raw_contents_one_per_input_and_never_mixed() -> None:
    request = _one("UINT8", [1], raw=b"\x00")
    request.inputs.add(name="other", datatype="UINT8", shape=[1])
    with pytest.raises(BadRequest, match="1 raw_input_contents for 2 inputs"):
        parse_request(request)
    request.raw_input_contents.append(b"\x01")
    request.inputs[1].contents.uint_contents.append(1)
    with pytest.raises(BadRequest, match="mixes raw_input_contents with typed"):
        parse_request(request)


def test_outputs_named_once_with_integer_classification() -> None:
    request = _one("UINT8", [1], raw=b"\x00")
    request.outputs.add(name="logits")
    request.outputs.add(name="logits")
    with pytest.raises(BadRequest, match="the same output twice"):
        parse_request(request)
    request = _one("UINT8", [1], raw=b"\x00")
    request.outputs.add(name="logits").parameters["classification"].string_param = "3"
    with pytest.raises(BadRequest, match="classification must be a non-negative integer"):
        parse_request(request)


def test_response_outputs_travel_as_raw_contents() -> None:
    probs = np.array([[0.25, 0.75]], np.float32)
    labels = [b"0.750000:1:b"]
    response = encode_response(
        "m",
        "1.0",
        "id-1",
        [
            OutputTensor("probabilities", "FP32", (1, 2), probs, True),
            OutputTensor("logits", "BYTES", (1, 1), labels, True),
        ],
    )
    assert (response.model_name, response.model_version, response.id) == ("m", "1.0", "id-1")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("probabilities", "FP32", [1, 2]),
        ("logits", "BYTES", [1, 1]),
    ]
    assert np.frombuffer(response.raw_output_contents[0], "<f4").tolist() == [0.25, 0.75]
    assert response.raw_output_contents[1] == struct.pack("<I", 12) + labels[0]
