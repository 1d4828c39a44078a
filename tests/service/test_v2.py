"""/v2 (Open Inference Protocol) through the app with its lifespan: metadata, infer, every error.

Expected shapes, labels and probabilities come from the ONNX file through onnxruntime directly,
never from the service's own spec, so a wrong metadata route cannot agree with itself.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import Settings

MAX_IMAGES = 4
HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def session(model_file: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def meta(model_meta: dict[str, Any]) -> dict[str, Any]:
    return model_meta


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, model_file: Path) -> Path:
    """A model folder with exactly the committed model."""
    folder = tmp_path_factory.mktemp("v2") / "models"
    (folder / "fashion-mnist").mkdir(parents=True)
    (folder / "fashion-mnist" / "model.onnx").symlink_to(model_file)
    return folder


@pytest.fixture(scope="module")
def make_settings(models: Path) -> Any:
    def make(**kw: Any) -> Settings:
        kw = {"max_images": MAX_IMAGES, "providers": ["CPUExecutionProvider"], **kw}
        return Settings(model_dir=models, **kw)

    return make


@pytest.fixture(scope="module")
def client(make_settings: Any) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings())) as c:
        yield c


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


def _png(value: int, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, format="PNG")
    return buffer.getvalue()


def _image(pixels: np.ndarray, **extra: Any) -> dict[str, Any]:
    """A UINT8 input with JSON data; an extra field set to None is left out."""
    tensor = {"name": "image", "datatype": "UINT8", "shape": list(pixels.shape)}
    tensor |= {"data": pixels.ravel().tolist(), **extra}
    return {k: v for k, v in tensor.items() if v is not None}


def _infer(client: TestClient, body: Any, path: str = "/v2/models/fashion-mnist/infer", **kw: Any):
    if isinstance(body, bytes):
        return client.post(path, content=body, **kw)
    return client.post(path, json=body, **kw)


# ---- metadata and health -----------------------------------------------------------------------


def test_server_metadata_and_health(client: TestClient) -> None:
    assert client.get("/v2").json() == {
        "name": "convscope",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data", "classification"],
    }
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/fashion-mnist/ready").json() == {
        "name": "fashion-mnist",
        "ready": True,
    }


def test_ready_is_503_before_the_models_load(make_settings: Any) -> None:
    client = TestClient(create_app(make_settings()))  # no `with`: the lifespan has not run
    response = client.get("/v2/health/ready")
    assert response.status_code == 503
    assert response.json() == {"error": "the models are still loading; try again shortly"}
    assert client.get("/v2/health/live").json() == {"live": True}


def test_model_metadata_matches_the_onnx_file(
    client: TestClient, session: ort.InferenceSession, meta: dict[str, Any]
) -> None:
    def dims(shape: list[Any]) -> list[int]:
        return [d if isinstance(d, int) else -1 for d in shape]

    expected = {
        "name": "fashion-mnist",
        "versions": [meta["version"]],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {
                "name": "image",
                "datatype": "UINT8",
                "shape": dims(session.get_inputs()[0].shape),
                "parameters": {
                    "also_accepts": {
                        "datatype": "BYTES",
                        "shape": [-1],
                        "content": "encoded pictures (PNG, JPEG, WebP, GIF, BMP, TIFF), decoded "
                        "and resized like /v1; base64 strings in JSON, raw bytes with the binary "
                        "extension",
                    }
                },
            }
        ],
        "outputs": [
            {"name": o.name, "datatype": "FP32", "shape": dims(o.shape)}
            for o in session.get_outputs()
        ],
    }
    assert client.get("/v2/models/fashion-mnist").json() == expected
    versioned = client.get(f"/v2/models/fashion-mnist/versions/{meta['version']}")
    assert versioned.json() == expected


# ---- inference ---------------------------------------------------------------------------------


def test_json_flat_nested_and_binary_agree_with_onnxruntime(
    client: TestClient, session: ort.InferenceSession
) -> None:
    pixels = _pixels(3)
    want = session.run(["probabilities"], {"image": pixels})[0]

    flat = _infer(client, {"inputs": [_image(pixels)]})
    assert flat.headers["content-type"] == "application/json" and HEADER not in flat.headers
    (out,) = flat.json()["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("probabilities", "FP32", [3, 10])
    np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(3, 10), want, atol=1e-6)

    nested = _infer(client, {"inputs": [_image(pixels, data=pixels.tolist())]})
    assert nested.json() == flat.json()

    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "UINT8",
                    "shape": [3, 28, 28, 1],
                    "parameters": {"binary_data_size": pixels.size},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    binary = _infer(client, head + pixels.tobytes(), headers={HEADER: str(len(head))})
    assert binary.headers["content-type"] == "application/octet-stream"
    length = int(binary.headers[HEADER])
    (out,) = json.loads(binary.content[:length])["outputs"]
    assert out["parameters"] == {"binary_data_size": 3 * 10 * 4}
    got = np.frombuffer(binary.content[length:], dtype="<f4").reshape(3, 10)
    np.testing.assert_array_equal(
        got, np.array(flat.json()["outputs"][0]["data"], np.float32).reshape(3, 10)
    )


def test_every_output_and_classification(
    client: TestClient, session: ort.InferenceSession, meta: dict[str, Any]
) -> None:
    pixels = _pixels(2, seed=1)
    names = [o.name for o in session.get_outputs()]
    want = dict(zip(names, session.run(names, {"image": pixels}), strict=True))
    outputs = [{"name": n, "parameters": {"binary_data": True}} for n in names]
    outputs.append({"name": "logits", "parameters": {"classification": 3, "binary_data": False}})
    body = {"id": "req-7", "inputs": [_image(pixels)], "outputs": outputs[:-1]}
    response = _infer(client, body)
    length = int(response.headers[HEADER])
    header = json.loads(response.content[:length])
    assert (header["model_name"], header["model_version"], header["id"]) == (
        "fashion-mnist",
        meta["version"],
        "req-7",
    )
    offset = length
    for out in header["outputs"]:
        size = out["parameters"]["binary_data_size"]
        got = np.frombuffer(response.content[offset : offset + size], "<f4").reshape(out["shape"])
        np.testing.assert_allclose(got, want[out["name"]], atol=1e-5)
        offset += size
    assert offset == len(response.content)

    # Classification on logits: Triton's "score:index:label", best first, as JSON strings.
    response = _infer(client, {"inputs": [_image(pixels)], "outputs": outputs[-1:]})
    (out,) = response.json()["outputs"]
    logits = want["logits"]
    expected = [
        [f"{logits[row, i]:f}:{i}:{meta['labels'][i]}" for i in np.argsort(-logits[row])[:3]]
        for row in range(2)
    ]
    assert (out["datatype"], out["shape"]) == ("BYTES", [2, 3])
    assert [out["data"][:3], out["data"][3:]] == expected
    assert "id" not in response.json()


def test_bytes_input_is_decoded_like_v1(client: TestClient) -> None:
    pictures = [_png(0), _png(255, (17, 60))]
    json_body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [2],
                "data": [base64.b64encode(p).decode() for p in pictures],
            }
        ]
    }
    from_json = _infer(client, json_body).json()["outputs"][0]
    raw = b"".join(struct.pack("<I", len(p)) + p for p in pictures)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    from_binary = _infer(client, head + raw, headers={HEADER: str(len(head))}).json()["outputs"][0]
    assert from_binary == from_json
    for i, picture in enumerate(pictures):
        v1 = client.post("/v1/classify", files={"file": ("p.png", picture, "image/png")}).json()
        v1_probs = {p["index"]: p["probability"] for p in v1["results"][0]["predictions"]}
        for index, probability in v1_probs.items():
            assert from_json["data"][i * 10 + index] == pytest.approx(probability, abs=1e-6)


def test_versioned_infer(client: TestClient, meta: dict[str, Any]) -> None:
    path = f"/v2/models/fashion-mnist/versions/{meta['version']}/infer"
    response = _infer(client, {"inputs": [_image(_pixels(1))]}, path=path)
    assert response.status_code == 200
    assert response.json()["model_version"] == meta["version"]


# ---- errors: {"error": "..."}, 4xx, never 500 --------------------------------------------------

PX = _pixels(1)
USAGE = "it takes UINT8 [N, 28, 28, 1] pixels or BYTES [N] encoded pictures"
OUTPUTS = "probabilities, logits, features/"


def _binary(size: int, tail: bytes, header: bool = True) -> tuple[bytes, dict[str, str]]:
    head = json.dumps({"inputs": [_image(PX, data=None, parameters={"binary_data_size": size})]})
    return head.encode() + tail, {HEADER: str(len(head))} if header else {}


ERRORS: list[tuple[str, Any, dict[str, str], int, str]] = [
    # (id, body, headers, status, exact error message)
    (
        "not json",
        b"{",
        {},
        400,
        "request header is not valid JSON (binary data needs the Inference-Header-Content-Length "
        "header)",
    ),
    ("no inputs", {"inputs": []}, {}, 400, "request needs a non-empty list of inputs"),
    (
        "unknown input",
        {"inputs": [_image(PX, name="pixels")]},
        {},
        400,
        "model fashion-mnist has no input 'pixels' (it takes 'image')",
    ),
    (
        "input twice",
        {"inputs": [_image(PX), _image(PX)]},
        {},
        400,
        "input 'image' is given 2 times",
    ),
    (
        "wrong datatype",
        {"inputs": [_image(PX.astype(np.float32), datatype="FP32")]},
        {},
        400,
        f"input 'image' is FP32; {USAGE}",
    ),
    (
        "wrong channels",
        {"inputs": [_image(np.zeros((1, 28, 28, 3), np.uint8))]},
        {},
        400,
        f"input 'image' has shape [1, 28, 28, 3]; {USAGE}",
    ),
    (
        "flat shape",
        {"inputs": [_image(PX, shape=[784])]},
        {},
        400,
        f"input 'image' has shape [784]; {USAGE}",
    ),
    (
        "bytes rank 2",
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 1], "data": ["x"]}]},
        {},
        400,
        f"input 'image' has shape [1, 1]; {USAGE}",
    ),
    (
        "data too short",
        {"inputs": [_image(PX, data=[0] * 783)]},
        {},
        400,
        "input 'image' has 783 values but its shape needs 784",
    ),
    (
        "value 256",
        {"inputs": [_image(PX, data=[256] * 784)]},
        {},
        400,
        "input 'image' UINT8 data must lie in [0, 255]",
    ),
    (
        "empty batch",
        {"inputs": [_image(np.zeros((0, 28, 28, 1), np.uint8))]},
        {},
        400,
        "input 'image' has no pictures (batch size 0)",
    ),
    (
        "too many",
        {"inputs": [_image(_pixels(MAX_IMAGES + 1))]},
        {},
        400,
        f"too many pictures: at most {MAX_IMAGES} per request, not {MAX_IMAGES + 1}",
    ),
    (
        "unknown output",
        {"inputs": [_image(PX)], "outputs": [{"name": "softmax"}]},
        {},
        400,
        f"model fashion-mnist has no output 'softmax' (outputs: {OUTPUTS}",
    ),
    (
        "classify cam",
        {"inputs": [_image(PX)], "outputs": [{"name": "cam", "parameters": {"classification": 2}}]},
        {},
        400,
        "classification needs a [N, classes] output (probabilities or logits), not 'cam'",
    ),
    (
        "binary short",
        *_binary(784, b"\0" * 10),
        400,
        "input 'image' declares 784 binary bytes but the body has fewer left",
    ),
    (
        "binary wrong size",
        *_binary(10, b"\0" * 10),
        400,
        "input 'image' has 10 binary bytes but UINT8 [1, 28, 28, 1] needs 784",
    ),
    (
        "binary extra",
        *_binary(784, PX.tobytes() + b"\0"),
        400,
        "body has 1 binary bytes that no input's binary_data_size claims",
    ),
    (
        "binary without header",
        *_binary(784, PX.tobytes(), header=False),
        400,
        "request header is not valid JSON (binary data needs the Inference-Header-Content-Length "
        "header)",
    ),
    (
        "bad header",
        b"{}",
        {HEADER: "ten"},
        400,
        "Inference-Header-Content-Length must be an integer",
    ),
    (
        "not base64",
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]},
        {},
        400,
        "picture 1 of 1 is not valid base64 (BYTES in JSON are base64)",
    ),
    (
        "not a picture",
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [2],
                    "data": [
                        base64.b64encode(_png(3)).decode(),
                        base64.b64encode(b"hello").decode(),
                    ],
                }
            ]
        },
        {},
        415,
        "picture 2 of 2: not a supported picture: send PNG, JPEG, WebP, GIF, BMP or TIFF",
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_errors_are_v2_shaped_4xx(
    client: TestClient, body: Any, headers: Any, status: int, message: str
) -> None:
    response = _infer(client, body, headers=headers)
    assert response.status_code == status
    payload = response.json()
    if message.endswith("features/"):  # the list of layer outputs depends on the model
        assert payload["error"].startswith(message) and payload["error"].endswith(", cam)")
    else:
        assert payload == {"error": message}


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("GET", "/v2/models/nope", "no model named 'nope'"),
        ("GET", "/v2/models/nope/ready", "no model named 'nope'"),
        ("POST", "/v2/models/nope/infer", "no model named 'nope'"),
        ("GET", "/v2/models/fashion-mnist/versions/9", "model fashion-mnist has no version '9'"),
        (
            "GET",
            "/v2/models/fashion-mnist/versions/9/ready",
            "model fashion-mnist has no version '9'",
        ),
        (
            "POST",
            "/v2/models/fashion-mnist/versions/9/infer",
            "model fashion-mnist has no version '9'",
        ),
    ],
)
def test_unknown_model_or_version_is_404(
    client: TestClient, meta: dict[str, Any], method: str, path: str, message: str
) -> None:
    response = client.request(method, path, json={"inputs": [_image(PX)]})
    assert response.status_code == 404
    if "version" in message:
        message += f" (it has {meta['version']!r})"
    assert response.json() == {"error": message}


def test_api_keys_guard_models_not_health(make_settings: Any) -> None:
    with TestClient(create_app(make_settings(api_keys=["s3cret"]))) as client:
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2/health/live").status_code == 200
        # The same sentence as /v1's 401, in the v2 envelope.
        v1 = client.get("/v1/models")
        assert v1.status_code == 401
        message = v1.json()["error"]["message"]
        for method, path in [
            ("GET", "/v2/models/fashion-mnist"),
            ("GET", "/v2/models/fashion-mnist/ready"),
            ("POST", "/v2/models/nope/infer"),
        ]:
            response = client.request(method, path, json={"inputs": [_image(PX)]})
            assert response.status_code == 401
            assert response.json() == {"error": message}
            assert response.headers["www-authenticate"] == "Bearer"
        ok = _infer(client, {"inputs": [_image(PX)]}, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
        wrong = _infer(client, {"inputs": [_image(PX)]}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401


def test_body_limit_is_413_in_v2_shape_declared_or_streamed(make_settings: Any) -> None:
    message = "the request body is larger than the limit of 1000 bytes"
    with TestClient(create_app(make_settings(max_upload_bytes=1000))) as client:
        declared = client.post("/v2/models/fashion-mnist/infer", content=b" " * 2000)
        assert (declared.status_code, declared.json()) == (413, {"error": message})

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
            yield b'{"inputs": ['
            yield b" " * 2000

        streamed = client.post("/v2/models/fashion-mnist/infer", content=chunks())
        assert (streamed.status_code, streamed.json()) == (413, {"error": message})
        # /v1 keeps its own shape.
        v1 = client.post("/v1/classify", content=b" " * 2000)
        assert v1.json()["error"]["message"] == message


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v2/nothing", 404), ("GET", "/v2/models/a/b/c", 404), ("DELETE", "/v2", 405)],
)
def test_unrouted_v2_paths_keep_the_v2_shape(
    client: TestClient, method: str, path: str, status: int
) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    v1 = client.request(method, path.replace("/v2", "/v1", 1)).json()["error"]
    assert response.json() == {"error": v1["message"]}
    assert int(response.headers["content-length"]) == len(response.content)


def test_unexpected_error_is_a_plain_500_in_v2_shape(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = client.app.state.registry.get("fashion-mnist")  # type: ignore[attr-defined]

    async def broken(pixels: np.ndarray, outputs: Any) -> dict[str, np.ndarray]:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(model.runtime, "infer", broken)
    response = _infer(client, {"inputs": [_image(PX)]}, headers={"X-Request-ID": "abc-1"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal error (request id abc-1)"}


def test_openapi_lists_the_v2_operations(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    } <= set(paths)
    assert paths["/v2/models/{name}/infer"]["post"]["operationId"] == "v2_model_infer"
