"""/v1, health and metrics through the app with its lifespan (TestClient): every endpoint, every
error code, exact payloads. Expected labels, layers and probabilities come from the ONNX file via
onnxruntime directly, never from the service's own spec.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.errors import ServiceError
from service.imaging import prepare_image
from service.render import GUTTER, GUTTER_RGB
from service.settings import Settings
from service.spec import LEGACY_CAM, InputSpec
from tests import images as pics

MAX_IMAGES = 4


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, model_file: Path) -> Path:
    folder = tmp_path_factory.mktemp("api") / "models"
    (folder / "fashion-mnist").mkdir(parents=True)
    (folder / "fashion-mnist" / "model.onnx").symlink_to(model_file)
    return folder


@pytest.fixture(scope="module")
def make_settings(models: Path) -> Callable[..., Settings]:
    def make(**kw: Any) -> Settings:
        kw = {"max_images": MAX_IMAGES, "providers": ["CPUExecutionProvider"], **kw}
        return Settings(model_dir=models, **kw)

    return make


@pytest.fixture(scope="module")
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(), static_dir=None)) as c:
        yield c


@pytest.fixture(scope="module")
def shirt(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """A real test picture, uint8 [28, 28]."""
    return fashion_mnist[0][0]


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def decode_data_url(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))
    assert image.format == "PNG"
    return image


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- health, readiness, models ------------------------------------------------------------------


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert (r.status_code, r.json()) == (200, {"status": "ready", "models": ["fashion-mnist"]})


def test_not_ready_until_the_lifespan_has_loaded_the_models(make_settings) -> None:
    client = TestClient(create_app(make_settings()))  # no `with`: the lifespan has not run
    assert client.get("/healthz").status_code == 200
    for path in ("/readyz", "/v1/models"):
        r = client.get(path)
        assert r.status_code == 503
        assert r.json() == error("not_ready", "the models are still loading; try again shortly")


def test_models_describe_themselves(client: TestClient, model_meta: dict[str, Any]) -> None:
    layers = [
        {k: ly[k] for k in ("name", "output", "kind", "kernel", "stride", "padding")}
        | {k: ly[k] for k in ("channels", "height", "width")}
        for ly in model_meta["layers"]
    ]
    expected = {
        "name": "fashion-mnist",
        "version": model_meta["version"],
        "default": True,
        "labels": model_meta["labels"],
        "input": model_meta["input"],
        "layers": layers,
        "temperature": model_meta["temperature"],
        "metrics": model_meta["metrics"],
        "created": model_meta["created"],
        "recipe": model_meta["recipe"],
        # models exported before the cam key had the exact CAM of the last conv block
        "cam": model_meta.get("cam", {"kind": "exact", "layer": layers[-1]["name"],
                                      "method": LEGACY_CAM}),
    }  # fmt: skip
    assert client.get("/v1/models").json() == {"default": "fashion-mnist", "models": [expected]}
    assert client.get("/v1/models/fashion-mnist").json() == expected


# -- classification ----------------------------------------------------------------------------


def test_probabilities_equal_the_model_on_the_same_pixels(
    client: TestClient, shirt: np.ndarray, reference, model_meta: dict[str, Any]
) -> None:
    r = client.post("/v1/classify?top_k=100&input_image=true", content=pics.png(shirt))
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == {"name": "fashion-mnist", "version": model_meta["version"]}
    (result,) = body["results"]
    expected = reference(shirt[None, ..., None])[0]
    labels = model_meta["labels"]
    got = np.zeros(len(labels))
    for p in result["predictions"]:
        assert p["label"] == labels[p["index"]]
        got[p["index"]] = p["probability"]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    order = [p["index"] for p in result["predictions"]]
    assert order == sorted(range(len(labels)), key=lambda i: -expected[i])
    assert result["preprocessing"] == {
        "format": "PNG",
        "width": 28,
        "height": 28,
        "mode": "L",
        "frames": 1,
        "exif_rotated": False,
        "alpha_flattened": False,
        "inverted": False,
        "scaled_16bit": False,
        "resize": "none",
        "framing": {
            "policy": "trim",
            "applied": False,
            "background": "dark",
            "reason": "dark background, object spans the frame: used as it is",
        },
    }
    seen = decode_data_url(result["input_image"])
    np.testing.assert_array_equal(np.asarray(seen), shirt)
    assert result["feature_maps"] is None and result["cam"] is None
    # Without input_image=true the answer carries no picture.
    plain = client.post("/v1/classify?top_k=100", content=pics.png(shirt)).json()["results"][0]
    assert plain["input_image"] is None and plain["predictions"] == result["predictions"]


def test_the_three_ways_to_send_a_picture_agree(client: TestClient, shirt: np.ndarray) -> None:
    data = pics.png(shirt)
    sent = [
        client.post("/v1/classify", content=data, headers={"Content-Type": "image/png"}),
        client.post("/v1/classify", content=data),  # no content type: the bytes decide
        client.post("/v1/classify", files={"file": ("shirt.png", data, "image/png")}),
        client.post("/v1/classify", json={"images": [b64(data)]}),
        client.post("/v1/classify", json={"images": ["data:image/png;base64," + b64(data)]}),
        client.post("/v1/models/fashion-mnist/classify", content=data),
    ]
    bodies = [r.json() for r in sent]
    assert all(r.status_code == 200 for r in sent)
    assert all(b == bodies[0] for b in bodies)
    assert len(bodies[0]["results"][0]["predictions"]) == 5  # top_k defaults to 5


def test_several_pictures_answer_in_order(
    client: TestClient, fashion_mnist: tuple[np.ndarray, np.ndarray], reference
) -> None:
    pictures = fashion_mnist[0][:MAX_IMAGES]
    files = [("file", (f"{i}.png", pics.png(p), "image/png")) for i, p in enumerate(pictures)]
    r = client.post("/v1/classify?top_k=1", files=files)
    assert r.status_code == 200
    top1 = [res["predictions"][0]["index"] for res in r.json()["results"]]
    assert top1 == reference(pictures[..., None]).argmax(axis=1).tolist()
    as_json = client.post("/v1/classify?top_k=1", json={"images": [b64(f[1][1]) for f in files]})
    assert as_json.json() == r.json()


def tiles_drawn(image: Image.Image, grid: dict[str, int]) -> int:
    """Cells of the grid that hold a tile (the empty ones are all gutter colour)."""
    a = np.asarray(image.convert("RGB"))
    step = grid["tile"] + GUTTER
    drawn = 0
    for row in range(grid["rows"]):
        for col in range(grid["cols"]):
            cell = a[row * step : row * step + grid["tile"], col * step : col * step + grid["tile"]]
            drawn += int(not np.all(cell == GUTTER_RGB))
    return drawn


def test_feature_maps_one_tile_per_channel(
    client: TestClient, shirt: np.ndarray, model_meta: dict[str, Any]
) -> None:
    r = client.post("/v1/classify?feature_maps=true", content=pics.png(shirt))
    maps = r.json()["results"][0]["feature_maps"]
    assert [m["layer"] for m in maps] == [ly["name"] for ly in model_meta["layers"]]
    for fm, ly in zip(maps, model_meta["layers"], strict=True):
        assert {k: fm[k] for k in ("kind", "kernel", "stride", "padding")} == {
            k: ly[k] for k in ("kind", "kernel", "stride", "padding")
        }
        assert fm["shape"] == [ly["channels"], ly["height"], ly["width"]]
        grid = fm["grid"]
        assert grid["channels"] == ly["channels"]
        assert grid["rows"] * grid["cols"] >= ly["channels"] > (grid["rows"] - 1) * grid["cols"]
        image = decode_data_url(fm["image"])
        step = grid["tile"] + GUTTER
        assert image.size == (grid["cols"] * step - GUTTER, grid["rows"] * step - GUTTER)
        assert tiles_drawn(image, grid) == ly["channels"]


def test_feature_maps_of_chosen_layers(
    client: TestClient, shirt: np.ndarray, model_meta: dict[str, Any]
) -> None:
    names = [ly["name"] for ly in model_meta["layers"]]
    asked = [names[-1], names[0], names[-1]]
    r = client.post(f"/v1/classify?feature_maps={','.join(asked)}", content=pics.png(shirt))
    assert [m["layer"] for m in r.json()["results"][0]["feature_maps"]] == [names[-1], names[0]]
    r = client.post("/v1/classify?feature_maps=false", content=pics.png(shirt))
    assert r.json()["results"][0]["feature_maps"] is None


def test_cam_for_the_top_class_or_a_chosen_label(
    client: TestClient, shirt: np.ndarray, model_meta: dict[str, Any], reference
) -> None:
    labels = model_meta["labels"]
    top = int(reference(shirt[None, ..., None])[0].argmax())
    r = client.post("/v1/classify?cam=true", content=pics.png(shirt))
    cam = r.json()["results"][0]["cam"]
    assert (cam["label"], cam["index"], cam["kind"]) == (labels[top], top, "exact")
    assert max(decode_data_url(cam["image"]).size) == 224
    other = (top + 1) % len(labels)
    for asked in (labels[other], labels[other].upper(), str(other)):
        r = client.post("/v1/classify", params={"cam": asked}, content=pics.png(shirt))
        cam = r.json()["results"][0]["cam"]
        assert (cam["label"], cam["index"]) == (labels[other], other)


def test_feature_map_png_endpoint(
    client: TestClient, shirt: np.ndarray, model_meta: dict[str, Any]
) -> None:
    layer = model_meta["layers"][0]
    r = client.post(
        f"/v1/models/fashion-mnist/feature-maps/{layer['name']}", content=pics.png(shirt)
    )
    assert (r.status_code, r.headers["content-type"]) == (200, "image/png")
    grid = {k: int(r.headers[f"x-grid-{k}"]) for k in ("rows", "cols", "tile", "channels")}
    assert grid["channels"] == layer["channels"]
    assert tiles_drawn(Image.open(io.BytesIO(r.content)), grid) == layer["channels"]
    same = client.post(f"/v1/classify?feature_maps={layer['name']}", content=pics.png(shirt))
    fm = same.json()["results"][0]["feature_maps"][0]
    assert decode_data_url(fm["image"]).tobytes() == Image.open(io.BytesIO(r.content)).tobytes()


def test_cam_png_endpoint(client: TestClient, shirt: np.ndarray, model_meta, reference) -> None:
    top = int(reference(shirt[None, ..., None])[0].argmax())
    r = client.post("/v1/models/fashion-mnist/cam", content=pics.png(shirt))
    assert (r.status_code, r.headers["content-type"], r.headers["x-class-index"]) == (
        200,
        "image/png",
        str(top),
    )
    label = model_meta["labels"][(top + 1) % 10]
    r = client.post(
        "/v1/models/fashion-mnist/cam", params={"label": label}, content=pics.png(shirt)
    )
    assert r.headers["x-class-index"] == str((top + 1) % 10)
    assert max(Image.open(io.BytesIO(r.content)).size) == 224


# -- errors ------------------------------------------------------------------------------------


PICTURE = np.zeros((28, 28), np.uint8)
PICTURE[6:22, 9:19] = 200  # a light block on black: decodes fine, anything goes for errors
PNG_BYTES = pics.png(PICTURE)


def imaging(data: bytes, prefix: str = "") -> tuple[int, dict[str, Any]]:
    """Status and payload imaging gives for these bytes (its sentences are its own to word)."""
    spec = InputSpec(28, 28, 1, "L", "pad", "dark")
    try:
        prepare_image(data, spec, 40_000_000)
    except ServiceError as exc:
        return exc.status, error(exc.code, prefix + exc.message)
    raise AssertionError("imaging accepted a picture meant to fail")


HOW = (
    "the request has no picture: send the picture as multipart field 'file', as the raw "
    'request body, or as JSON {"images": ["<base64>"]}'
)
TOO_MANY = error("payload_too_large", f"too many pictures: at most {MAX_IMAGES} per request")
ONE = ("a.png", PNG_BYTES)

ERRORS: dict[str, tuple[str, str, dict[str, Any], int, dict[str, Any] | None]] = {
    # 400: not decodable
    "truncated": (
        "POST",
        "/v1/classify",
        {"content": pics.truncated(PNG_BYTES)},
        *imaging(pics.truncated(PNG_BYTES)),
    ),
    "bad base64": (
        "POST",
        "/v1/classify",
        {"json": {"images": ["not base64!"]}},
        400,
        error("undecodable_image", "picture 1 of 1 is not valid base64"),
    ),
    "data URL not base64": (
        "POST",
        "/v1/classify",
        {"json": {"images": ["data:image/png,abc"]}},
        400,
        error("undecodable_image", "picture 1 of 1 is not a base64 data URL"),
    ),
    "second picture bad": (
        "POST",
        "/v1/classify",
        {"files": [("file", ONE), ("file", ("b.png", b"GIF89a"))]},
        *imaging(b"GIF89a", "picture 2 of 2: "),
    ),
    "broken multipart": (
        "POST",
        "/v1/classify",
        {"content": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data"}},
        400,
        error(
            "bad_request", "the multipart body could not be parsed (Missing boundary in multipart.)"
        ),
    ),
    # 404: unknown model, layer, label, path
    "model": (
        "GET",
        "/v1/models/imagenet",
        {},
        404,
        error("not_found", "no model named 'imagenet'"),
    ),
    "model to classify": (
        "POST",
        "/v1/models/imagenet/classify",
        {"content": PNG_BYTES},
        404,
        error("not_found", "no model named 'imagenet'"),
    ),
    "layer in query": ("POST", "/v1/classify?feature_maps=fc9", {"content": PNG_BYTES}, 404, None),
    "layer in path": (
        "POST",
        "/v1/models/fashion-mnist/feature-maps/fc9",
        {"content": PNG_BYTES},
        404,
        None,
    ),
    "label in query": (
        "POST",
        "/v1/classify?cam=Hat",
        {"content": PNG_BYTES},
        404,
        error("not_found", "model fashion-mnist has no label 'Hat'"),
    ),
    "label index": (
        "POST",
        "/v1/models/fashion-mnist/cam?label=99",
        {"content": PNG_BYTES},
        404,
        error("not_found", "model fashion-mnist has no label '99'"),
    ),
    "path": ("GET", "/v2x", {}, 404, error("not_found", "there is nothing at this path")),
    # 405
    "method": (
        "GET",
        "/v1/classify",
        {},
        405,
        error("method_not_allowed", "this path does not accept that method"),
    ),
    # 413: too many pictures or pixels (bytes: test_body_limit)
    "too many files": (
        "POST",
        "/v1/classify",
        {"files": [("file", ONE)] * (MAX_IMAGES + 1)},
        413,
        TOO_MANY,
    ),
    "too many in JSON": (
        "POST",
        "/v1/classify",
        {"json": {"images": [b64(PNG_BYTES)] * (MAX_IMAGES + 1)}},
        413,
        TOO_MANY,
    ),
    "pixel bomb": (
        "POST",
        "/v1/classify",
        {"content": pics.png_bomb(20_000, 20_000)},
        *imaging(pics.png_bomb(20_000, 20_000)),
    ),
    # 415: not a picture, whatever it claims
    "text": (
        "POST",
        "/v1/classify",
        {"content": pics.TEXT, "headers": {"Content-Type": "image/png"}},
        *imaging(pics.TEXT),
    ),
    "html file": (
        "POST",
        "/v1/classify",
        {"files": {"file": ("shirt.png", pics.HTML, "image/png")}},
        *imaging(pics.HTML),
    ),
    # 422: bad parameters and bodies
    "top_k 0": (
        "POST",
        "/v1/classify?top_k=0",
        {"content": PNG_BYTES},
        422,
        error(
            "invalid_parameter",
            "query parameter 'top_k': Input should be greater than or equal to 1",
        ),
    ),
    "top_k text": (
        "POST",
        "/v1/classify?top_k=five",
        {"content": PNG_BYTES},
        422,
        error(
            "invalid_parameter",
            "query parameter 'top_k': Input should be a valid integer, unable to parse string "
            "as an integer",
        ),
    ),
    "no body": ("POST", "/v1/classify", {}, 422, error("invalid_parameter", HOW)),
    "no file field": (
        "POST",
        "/v1/classify",
        {"files": {"other": ONE}},
        422,
        error("invalid_parameter", HOW),
    ),
    "file as text": (
        "POST",
        "/v1/classify",
        {"data": {"file": "text"}, "files": {"x": ("a", b"")}},
        422,
        error("invalid_parameter", "multipart field 'file' must be a file, not text"),
    ),
    "bad JSON": (
        "POST",
        "/v1/classify",
        {"content": b"{no", "headers": {"Content-Type": "application/json"}},
        422,
        error("invalid_parameter", "the JSON body is not valid JSON"),
    ),
    "empty list": (
        "POST",
        "/v1/classify",
        {"json": {"images": []}},
        422,
        error(
            "invalid_parameter",
            "JSON field images: List should have at least 1 item after validation, not 0",
        ),
    ),
    "no images key": (
        "POST",
        "/v1/classify",
        {"json": {"pictures": ["x"]}},
        422,
        error("invalid_parameter", "JSON field images: Field required"),
    ),
    "two for one": (
        "POST",
        "/v1/models/fashion-mnist/cam",
        {"json": {"images": [b64(PNG_BYTES)] * 2}},
        422,
        error("invalid_parameter", "this endpoint takes exactly one picture, not 2"),
    ),
}


@pytest.mark.parametrize("case", ERRORS)
def test_every_error_is_one_json_shape(client: TestClient, case: str) -> None:
    method, path, kwargs, status, payload = ERRORS[case]
    r = client.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    if payload is None:  # an unknown layer: the message lists the model's real layers
        assert body["error"]["code"] == "not_found"
        start = "model fashion-mnist has no layer 'fc9' (layers: "
        assert body["error"]["message"].startswith(start)
    else:
        assert body == payload
    assert "Traceback" not in r.text and "/tmp" not in r.text and "/work" not in r.text


def test_the_error_table_has_every_status() -> None:
    assert {case[3] for case in ERRORS.values()} == {400, 404, 405, 413, 415, 422}


def test_unexpected_errors_are_a_plain_500_with_the_request_id(
    make_settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(), static_dir=None)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail /etc/shadow")

    with TestClient(app) as client:
        r = client.get("/boom")
    request_id = r.headers["x-request-id"]
    assert r.status_code == 500
    assert r.json() == error("internal_error", f"internal error (request id {request_id})")
    assert "secret" not in r.text
    logged = [rec for rec in caplog.records if request_id in rec.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback is in the log, not the reply


def test_request_id_is_made_or_passed_through(client: TestClient) -> None:
    made = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    given = client.get("/healthz", headers={"X-Request-ID": "abc-123.x_y"})
    assert given.headers["x-request-id"] == "abc-123.x_y"
    hostile = client.get("/healthz", headers={"X-Request-ID": "a b\tc" + "x" * 100})
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["x-request-id"])


def test_body_limit(make_settings, shirt: np.ndarray) -> None:
    app = create_app(make_settings(max_upload_bytes=2000), static_dir=None)
    too_large = error(
        "payload_too_large", "the request body is larger than the limit of 2000 bytes"
    )

    def chunks(total: int) -> Iterator[bytes]:  # no Content-Length: sent chunked
        for _ in range(total // 500):
            yield b"\0" * 500

    with TestClient(app) as client:
        assert client.post("/v1/classify", content=pics.png(shirt)).status_code == 200
        r = client.post("/v1/classify", content=b"\0" * 2001)
        assert (r.status_code, r.json()) == (413, too_large)
        r = client.post("/v1/classify", content=chunks(10_000))
        assert (r.status_code, r.json()) == (413, too_large)
        files = {"file": ("a.png", b"\0" * 3000)}
        r = client.post("/v1/classify", files=files)
        assert (r.status_code, r.json()) == (413, too_large)


# -- keys, CORS, OpenAPI, page, metrics -----------------------------------------------------------


def test_api_keys(make_settings, shirt: np.ndarray) -> None:
    app = create_app(make_settings(api_keys=["key-one", "key-two"]), static_dir=None)
    missing = error(
        "unauthorized",
        "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
    )
    wrong = error("unauthorized", "the API key is not valid")
    with TestClient(app) as client:
        r = client.post("/v1/classify", content=pics.png(shirt))
        assert (r.status_code, r.json(), r.headers["www-authenticate"]) == (401, missing, "Bearer")
        r = client.get("/v1/models/imagenet")  # no key: 401 before anything else is said
        assert (r.status_code, r.json()) == (401, missing)
        for headers in ({"Authorization": "Bearer key-three"}, {"X-API-Key": "key-on"}):
            r = client.get("/v1/models", headers=headers)
            assert (r.status_code, r.json()) == (401, wrong)
        for headers in ({"Authorization": "Bearer key-two"}, {"X-API-Key": "key-one"}):
            assert client.get("/v1/models", headers=headers).status_code == 200
        for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert client.get(open_path).status_code == 200


def test_cors_closed_unless_configured(client: TestClient, make_settings) -> None:
    preflight = {"Origin": "https://page.example", "Access-Control-Request-Method": "POST"}
    r = client.options("/v1/classify", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in client.get("/healthz", headers=preflight).headers
    app = create_app(make_settings(cors_origins=["https://page.example"]), static_dir=None)
    with TestClient(app) as open_client:
        r = open_client.options("/v1/classify", headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://page.example"
        other = {**preflight, "Origin": "https://evil.example"}
        assert open_client.options("/v1/classify", headers=other).status_code == 400


def test_openapi_documents_bodies_and_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ops = {
        (path, method): op for path, item in spec["paths"].items() for method, op in item.items()
    }
    assert {op["operationId"] for op in ops.values()} >= {
        "classify",
        "classify_with_model",
        "feature_map_png",
        "cam_png",
        "list_models",
        "get_model",
        "health",
        "ready",
        "metrics",
    }
    classify = ops[("/v1/classify", "post")]
    assert set(classify["requestBody"]["content"]) == {
        "multipart/form-data",
        "application/json",
        "image/*",
        "application/octet-stream",
    }
    for status in ("400", "401", "404", "413", "415", "422", "500", "503"):
        ref = classify["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/ErrorResponse"
    assert "image/png" in ops[("/v1/models/{name}/cam", "post")]["responses"]["200"]["content"]
    assert "ClassifyResponse" in spec["components"]["schemas"]


def test_the_page_is_served_at_root_when_present(tmp_path: Path, make_settings) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>convscope</title>")
    with TestClient(create_app(make_settings(), static_dir=tmp_path)) as client:
        r = client.get("/")
        assert r.status_code == 200 and "<title>convscope</title>" in r.text
        assert client.get("/healthz").json() == {"status": "ok"}  # the API still wins
        r = client.get("/nothing.js")
        assert (r.status_code, r.json()) == (
            404,
            error("not_found", "there is nothing at this path"),
        )


def test_metrics_by_route_template(make_settings, shirt: np.ndarray) -> None:
    with TestClient(create_app(make_settings(), static_dir=None)) as client:
        client.post("/v1/models/fashion-mnist/classify", content=pics.png(shirt))
        files = [("file", ("a.png", pics.png(shirt)))] * 3
        client.post("/v1/models/fashion-mnist/classify", files=files)
        client.get("/v1/models/nope")
        text = client.get("/metrics").text
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )

    def value(name: str) -> float:
        return float(samples[name])

    route = 'route="/v1/models/{name}/classify"'
    assert value(f'convscope_http_requests_total{{method="POST",{route},status="200"}}') == 2
    assert (
        value('convscope_http_requests_total{method="GET",route="/v1/models/{name}",status="404"}')
        == 1
    )
    assert value('convscope_pictures_total{model="fashion-mnist"}') == 4
    assert value('convscope_batch_size_count{model="fashion-mnist"}') == 2
    assert value('convscope_batch_size_sum{model="fashion-mnist"}') == 4
    assert value('convscope_inference_seconds_count{model="fashion-mnist"}') == 2
    assert value(f'convscope_http_request_duration_seconds_count{{method="POST",{route}}}') == 2
    assert not any("/v1/models/nope" in key for key in samples)
