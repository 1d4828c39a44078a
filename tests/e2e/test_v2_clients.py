"""/v2 spoken with the unmodified ``tritonclient[http]`` against a real uvicorn process.

The probabilities it gets must equal onnxruntime's on the raw pixels of real Fashion-MNIST test
pictures and what /v1/classify returns for the same pictures, whichever way they travel: UINT8
tensor as JSON or binary, or PNG files as a BYTES tensor.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.e2e

MODEL = "fashion-mnist"
ATOL = 1e-6


@pytest.fixture(scope="module")
def service(service_factory: Any) -> Iterator[Any]:
    with service_factory() as svc:
        yield svc


@pytest.fixture(scope="module")
def client(service: Any) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=service.url.removeprefix("http://"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def pictures(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Eight real test pictures as the model's input, uint8 [8, 28, 28, 1]."""
    return np.ascontiguousarray(fashion_mnist[0][:8, :, :, None])


def _png(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture[:, :, 0]).save(buffer, format="PNG")
    return buffer.getvalue()


def _v1_probabilities(url: str, picture: np.ndarray, labels: int) -> np.ndarray:
    files = {"file": ("p.png", _png(picture), "image/png")}
    response = httpx.post(f"{url}/v1/classify", params={"top_k": labels}, files=files, timeout=30)
    response.raise_for_status()
    probs = np.zeros(labels, np.float32)
    for p in response.json()["results"][0]["predictions"]:
        probs[p["index"]] = p["probability"]
    return probs


def test_health_and_metadata(
    client: triton.InferenceServerClient, model_meta: dict[str, Any]
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, model_version=model_meta["version"])
    assert not client.is_model_ready("no-such-model")
    server = client.get_server_metadata()
    assert {"binary_tensor_data", "classification"} <= set(server["extensions"])

    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == [model_meta["version"]]
    shape = model_meta["input"]
    (inp,) = meta["inputs"]
    assert (inp["name"], inp["datatype"]) == ("image", "UINT8")
    assert inp["shape"] == [-1, shape["height"], shape["width"], shape["channels"]]
    outputs = {o["name"]: o for o in meta["outputs"]}
    k = len(model_meta["labels"])
    assert outputs["probabilities"]["shape"] == [-1, k]
    assert outputs["logits"]["shape"] == [-1, k]
    for layer in model_meta["layers"]:
        want = [-1, layer["channels"], layer["height"], layer["width"]]
        assert outputs[layer["output"]] == {
            "name": layer["output"],
            "datatype": "FP32",
            "shape": want,
        }
    assert outputs["cam"]["shape"][:2] == [-1, k]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_uint8_tensor_matches_onnxruntime_and_v1(
    client: triton.InferenceServerClient,
    service: Any,
    pictures: np.ndarray,
    reference: Callable[..., np.ndarray],
    model_meta: dict[str, Any],
    binary: bool,
) -> None:
    inp = triton.InferInput("image", list(pictures.shape), "UINT8")
    inp.set_data_from_numpy(pictures, binary_data=binary)
    out = triton.InferRequestedOutput("probabilities", binary_data=binary)
    result = client.infer(MODEL, [inp], outputs=[out], request_id=f"uint8-{binary}")
    assert result.get_response()["id"] == f"uint8-{binary}"
    got = result.as_numpy("probabilities")
    assert got.dtype == np.float32 and got.shape == (len(pictures), len(model_meta["labels"]))
    np.testing.assert_allclose(got, reference(pictures), atol=ATOL, rtol=0)
    for picture, row in zip(pictures, got, strict=True):
        v1 = _v1_probabilities(service.url, picture, len(model_meta["labels"]))
        np.testing.assert_allclose(row, v1, atol=ATOL, rtol=0)


def test_default_output_is_probabilities(
    client: triton.InferenceServerClient, pictures: np.ndarray, reference: Callable[..., np.ndarray]
) -> None:
    inp = triton.InferInput("image", list(pictures.shape), "UINT8")
    inp.set_data_from_numpy(pictures)
    result = client.infer(MODEL, [inp])  # no outputs named: tritonclient asks for binary
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities"]
    np.testing.assert_allclose(result.as_numpy("probabilities"), reference(pictures), atol=ATOL)


def test_png_files_as_bytes_input(
    client: triton.InferenceServerClient,
    pictures: np.ndarray,
    reference: Callable[..., np.ndarray],
    model_meta: dict[str, Any],
) -> None:
    files = np.array([_png(p) for p in pictures], dtype=np.object_)
    inp = triton.InferInput("image", [len(files)], "BYTES")
    inp.set_data_from_numpy(files, binary_data=True)
    version = model_meta["version"]
    result = client.infer(MODEL, [inp], model_version=version)
    assert result.get_response()["model_version"] == version
    # PNG is lossless and the pictures are already 28x28: the same pixels reach the network.
    np.testing.assert_allclose(result.as_numpy("probabilities"), reference(pictures), atol=ATOL)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_classification_extension(
    client: triton.InferenceServerClient,
    pictures: np.ndarray,
    reference: Callable[..., np.ndarray],
    model_meta: dict[str, Any],
    binary: bool,
) -> None:
    inp = triton.InferInput("image", list(pictures.shape), "UINT8")
    inp.set_data_from_numpy(pictures, binary_data=binary)
    out = triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)
    classes = client.infer(MODEL, [inp], outputs=[out]).as_numpy("probabilities")
    assert classes.shape == (len(pictures), 3)
    want = reference(pictures)
    for row, probs in zip(classes, want, strict=True):
        entries = [(e.decode() if isinstance(e, bytes) else e).split(":", 2) for e in row]
        indices = [int(index) for _, index, _ in entries]
        assert indices == list(np.argsort(-probs, kind="stable")[:3])
        for (score, _, label), i in zip(entries, indices, strict=True):
            assert label == model_meta["labels"][i]
            assert float(score) == pytest.approx(float(probs[i]), abs=1e-6)  # "%f": 6 decimals


@pytest.mark.parametrize(
    ("build", "status", "message"),
    [
        (
            lambda: ("no-such-model", "image", [1, 28, 28, 1], "UINT8"),
            "404",
            "no model named 'no-such-model'",
        ),
        (
            lambda: (MODEL, "pixels", [1, 28, 28, 1], "UINT8"),
            "400",
            f"model {MODEL} has no input 'pixels' (it takes 'image')",
        ),
        (
            lambda: (MODEL, "image", [1, 28, 28, 1], "FP32"),
            "400",
            "input 'image' is FP32; it takes UINT8 [N, 28, 28, 1] pixels or BYTES [N] encoded "
            "pictures",
        ),
        (
            lambda: (MODEL, "image", [1, 14, 56, 1], "UINT8"),
            "400",
            "input 'image' has shape [1, 14, 56, 1]; it takes UINT8 [N, 28, 28, 1] pixels or BYTES "
            "[N] encoded pictures",
        ),
    ],
    ids=["unknown model", "unknown input", "wrong datatype", "wrong shape"],
)
def test_errors_reach_tritonclient_as_messages(
    client: triton.InferenceServerClient, build: Any, status: str, message: str
) -> None:
    model, name, shape, datatype = build()
    inp = triton.InferInput(name, shape, datatype)
    dtype = np.float32 if datatype == "FP32" else np.uint8
    inp.set_data_from_numpy(np.zeros(shape, dtype))
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, [inp])
    assert (info.value.status(), info.value.message()) == (status, message)
