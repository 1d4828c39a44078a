"""Networks of other shapes beside the default model, served by a real `python -m service` and
shown by the page in a real Chromium: the model picker, every stage's feature maps and the CAM
with its kind (tests/own_models.py builds the folder: two exported, two adopted, one without a
cam). The answers equal onnxruntime on each original file for the same pixels.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

torch = pytest.importorskip("torch")  # the networks are built from PyTorch code
sync_api = pytest.importorskip("playwright.sync_api")

from tests import own_models as om  # noqa: E402

pytestmark = [pytest.mark.e2e]

CHROMIUM = os.environ.get("CONVSCOPE_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
]
OWN = ["lenet5", "resnet-lite", "plain-torch", "keras-like", "keras-no-cam"]
KINDS = {
    "lenet5": "approximate",
    "resnet-lite": "exact",
    "plain-torch": "approximate",
    "keras-like": "exact",
    "keras-no-cam": None,
    "fashion-mnist": "exact",
}


@pytest.fixture(scope="module")
def service(own_models: om.OwnModels, service_factory: Any) -> Iterator[Any]:
    with service_factory(model_dir=own_models.models) as svc:
        yield svc


@pytest.fixture(scope="module")
def listing(service: Any) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{service.url}/v1/models", timeout=10).json()
    return {m["name"]: m for m in body["models"]}


def picture(model: dict[str, Any], seed: int = 5) -> np.ndarray:
    """A generated picture already at the model's size and mode: the service changes nothing."""
    inp = model["input"]
    x, _ = om.stripes(1, inp["height"], inp["channels"], seed)
    return x[0]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, "PNG")
    return buffer.getvalue()


def original_probabilities(name: str, own: om.OwnModels, pixels: np.ndarray) -> np.ndarray:
    x = om.original_input(name, own, pixels[None])
    if name in own.nets:  # exported: the PyTorch module is the original
        with torch.no_grad():
            return torch.softmax(own.nets[name](torch.from_numpy(x)), 1).numpy()[0]
    s = ort.InferenceSession(str(own.originals[name]), providers=["CPUExecutionProvider"])
    out = s.run(None, {s.get_inputs()[0].name: x})[0][0].astype(np.float64)
    if name == "plain-torch":  # logits
        out = np.exp(out - out.max()) / np.exp(out - out.max()).sum()
    return out


def test_the_folder_serves_every_model_with_its_cam_kind(listing: dict[str, Any]) -> None:
    assert set(listing) == {"fashion-mnist", *OWN}
    assert {n: (m["cam"] or {}).get("kind") for n, m in listing.items()} == KINDS


@pytest.mark.parametrize("name", OWN)
def test_served_probabilities_equal_the_original(
    service: Any, listing: dict[str, Any], own_models: om.OwnModels, name: str
) -> None:
    model = listing[name]
    pixels = picture(model)
    k = len(model["labels"])
    cam = "true" if model["cam"] else "false"
    r = httpx.post(
        f"{service.url}/v1/models/{name}/classify",
        params={"top_k": k, "feature_maps": "true", "cam": cam, "input_image": "true"},
        content=png(pixels),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["input_image"].split(",")[1]))))
    assert np.array_equal(seen.reshape(pixels.shape), pixels)  # the same pixels
    served = np.zeros(k)
    for p in result["predictions"]:
        served[p["index"]] = p["probability"]
    np.testing.assert_allclose(served, original_probabilities(name, own_models, pixels), atol=1e-5)
    assert [f["layer"] for f in result["feature_maps"]] == [ly["name"] for ly in model["layers"]]
    if model["cam"]:
        assert result["cam"]["kind"] == model["cam"]["kind"]
        assert result["cam"]["layer"] == model["cam"]["layer"]


def test_a_model_without_cam_answers_cam_requests_with_404(service: Any) -> None:
    pixels = picture({"input": {"height": 32, "channels": 3}})
    for url, params in [
        ("/v1/models/keras-no-cam/classify", {"cam": "true"}),
        ("/v1/models/keras-no-cam/classify", {"cam": "dog"}),
        ("/v1/models/keras-no-cam/cam", {}),
    ]:
        r = httpx.post(service.url + url, params=params, content=png(pixels), timeout=30)
        assert r.status_code == 404, (url, r.text)
        assert r.json()["error"]["code"] == "no_cam"
        assert "has no class-activation map" in r.json()["error"]["message"]
    ok = httpx.post(f"{service.url}/v1/models/keras-no-cam/classify", content=png(pixels))
    assert ok.status_code == 200 and ok.json()["results"][0]["cam"] is None
    png_cam = httpx.post(f"{service.url}/v1/models/resnet-lite/cam", content=png(pixels))
    assert png_cam.headers["x-cam-kind"] == "exact"


@pytest.mark.browser
def test_the_page_shows_every_models_maps_and_cam_kind(
    service: Any, listing: dict[str, Any], tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(service.url + "/")
        page.wait_for_function("!document.getElementById('model').disabled")
        options = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
        assert sorted(options) == sorted(listing)
        for name in ["fashion-mnist", *OWN]:
            model = listing[name]
            page.select_option("#model", name)
            assert model["version"] in page.inner_text("#model-info")
            path = tmp_path / f"{name}.png"
            path.write_bytes(png(picture(model)))
            page.set_input_files("#file", str(path))
            page.wait_for_function(
                "n => document.querySelectorAll('#maps figure.layer').length === n"
                " && !document.getElementById('results').hasAttribute('aria-busy')",
                arg=len(model["layers"]),
            )
            shown = page.eval_on_selector_all(
                "#maps figure.layer", "fs => fs.map(f => f.dataset.layer)"
            )
            assert shown == [ly["name"] for ly in model["layers"]], name
            page.wait_for_function(
                "() => [...document.querySelectorAll('#maps figure.layer img')]"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            kind = KINDS[name]
            info = page.inner_text("#model-info")
            if kind is None:
                assert page.locator("#cam-panel").is_hidden(), name
                assert "none (this model has no class-activation map)" in info
                continue
            page.wait_for_function(
                "k => { const i = document.getElementById('cam');"
                " return !i.hidden && i.dataset.kind === k && i.naturalWidth > 0; }",
                arg=kind,
            )
            caption = page.inner_text("#cam-caption")
            word = "exact class-activation map" if kind == "exact" else "an approximation"
            assert word in caption, (name, caption)
            assert model["cam"]["layer"] in caption
            assert page.locator("#cam-choice").is_visible() == (kind == "exact")
        browser.close()
    assert errors == []
