"""The ``cam`` metadata key: which kind of map a model serves, or that it serves none."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.errors import ModelError
from service.settings import Settings
from service.spec import LEGACY_CAM, CamSpec, ModelSpec
from tests import images as pics

onnx = pytest.importorskip("onnx")


def props(model_file: Path, **changes: Any) -> dict[str, str]:
    model = onnx.load(str(model_file), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    for key, value in changes.items():
        meta[key] = json.dumps(value)
    return meta


def test_a_model_from_before_the_key_has_the_exact_cam_of_its_last_conv(model_file: Path) -> None:
    spec = ModelSpec.from_metadata("m", props(model_file))
    last = [ly.name for ly in spec.layers if ly.kind == "conv"][-1]
    assert spec.cam == CamSpec("exact", last, LEGACY_CAM)


@pytest.mark.parametrize(
    ("cam", "want"),
    [
        (
            {"kind": "approximate", "layer": "conv6", "method": "mean"},
            CamSpec("approximate", "conv6", "mean"),
        ),
        (None, None),
    ],
)
def test_the_cam_key_is_read(model_file: Path, cam: Any, want: CamSpec | None) -> None:
    assert ModelSpec.from_metadata("m", props(model_file, cam=cam)).cam == want


@pytest.mark.parametrize(
    ("cam", "problem"),
    [
        (
            {"kind": "guess", "layer": "conv6", "method": "?"},
            "cam kind 'guess' is not exact or approximate",
        ),
        ({"kind": "exact"}, "metadata cam malformed"),
    ],
)
def test_a_bad_cam_key_stops_the_start(model_file: Path, cam: Any, problem: str) -> None:
    with pytest.raises(ModelError) as e:
        ModelSpec.from_metadata("m", props(model_file, cam=cam))
    assert e.value.problem.startswith(problem)


def test_a_model_without_cam_answers_cam_requests_with_404(
    model_file: Path, tmp_path: Path
) -> None:
    """The committed model with its cam output cut off and ``cam: null`` in its metadata."""
    model = onnx.load(str(model_file))
    outputs = [o for o in model.graph.output if o.name != "cam"]
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    for p in model.metadata_props:
        if p.key == "cam":
            p.value = "null"
    if not any(p.key == "cam" for p in model.metadata_props):
        model.metadata_props.add(key="cam", value="null")
    (tmp_path / "m" / "plain").mkdir(parents=True)
    onnx.save(model, str(tmp_path / "m" / "plain" / "model.onnx"))
    app = create_app(Settings(model_dir=tmp_path / "m"))
    picture = pics.png(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8))
    with TestClient(app) as client:
        assert client.get("/v1/models/plain").json()["cam"] is None
        for url in ("/v1/classify?cam=true", "/v1/classify?cam=0", "/v1/models/plain/cam"):
            r = client.post(url, content=picture)
            assert r.status_code == 404, url
            assert r.json() == {
                "error": {
                    "code": "no_cam",
                    "message": (
                        "model plain has no class-activation map (its metadata says cam: "
                        "none); ask for feature maps instead"
                    ),
                }
            }
        r = client.post("/v1/classify?cam=false&feature_maps=true", content=picture)
        assert r.status_code == 200 and r.json()["results"][0]["cam"] is None
        names = [o["name"] for o in client.get("/v2/models/plain").json()["outputs"]]
        assert "cam" not in names and "probabilities" in names
