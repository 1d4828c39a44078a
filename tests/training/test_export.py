from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from training.config import TrainConfig
from training.contract import PARITY_TOLERANCE
from training.export import ServingWrapper, export_onnx, parity
from training.train import load_checkpoint, train

from .conftest import DEFAULT_MODEL

METADATA_KEYS = {"labels", "input", "layers", "temperature", "metrics", "version", "created",
                 "recipe"}  # fmt: skip


@pytest.fixture(scope="module")
def exported(tiny_idx_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("export")
    cfg = TrainConfig(dataset="mnist", data_dir=str(tiny_idx_dir), preset="small", epochs=1,
                      val_size=500, out_dir=str(out / "run"), allow_download=False)  # fmt: skip
    best = train(cfg)
    net, ckpt = load_checkpoint(best)
    return best, export_onnx(net, ckpt, out / "model" / "model.onnx", "9.9.9")


def check_contract(path: Path) -> dict:
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert set(meta) >= METADATA_KEYS
    inp, k = meta["input"], len(meta["labels"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    assert image.name == "image" and image.type == "tensor(uint8)"
    assert image.shape[1:] == [inp["height"], inp["width"], inp["channels"]]
    assert isinstance(image.shape[0], str)  # dynamic batch axis
    names = [o.name for o in session.get_outputs()]
    layer_outputs = [ly["output"] for ly in meta["layers"]]
    cam = [] if meta.get("cam", {}) is None else ["cam"]
    assert names == ["probabilities", "logits", *layer_outputs, *cam]
    assert all(o.type == "tensor(float)" for o in session.get_outputs())
    shape = (3, inp["height"], inp["width"], inp["channels"])
    batch = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = dict(zip(names, session.run(names, {"image": batch})))
    assert out["probabilities"].shape == out["logits"].shape == (3, k)
    np.testing.assert_allclose(out["probabilities"].sum(1), 1, atol=1e-5)
    for ly in meta["layers"]:
        assert ly["kind"] in ("conv", "pool") and {"kernel", "stride", "padding"} <= set(ly)
        assert out[ly["output"]].shape == (3, ly["channels"], ly["height"], ly["width"])
    if meta.get("cam", {}) is None:  # no cam output at all
        assert "cam" not in names
    else:  # on the stage the metadata names (models from before the key: the last conv)
        convs = [ly["name"] for ly in meta["layers"] if ly["kind"] == "conv"]
        name = meta.get("cam", {"layer": convs[-1]})["layer"]
        stage = next(ly for ly in meta["layers"] if ly["name"] == name)
        assert out["cam"].shape == (3, k, stage["height"], stage["width"])
    # the temperature lives in the graph: probabilities == softmax(logits / T)
    z = out["logits"] / meta["temperature"]
    p = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(out["probabilities"], p / p.sum(1, keepdims=True), atol=1e-6)
    # one self-contained file: no external-data side file
    assert not [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    return meta


def test_exported_model_meets_the_contract(exported: tuple[Path, Path]) -> None:
    meta = check_contract(exported[1])
    assert meta["version"] == "9.9.9"
    assert meta["cam"]["kind"] == "exact" and meta["cam"]["layer"] == "conv3"
    assert meta["input"] == {"height": 28, "width": 28, "channels": 1, "mode": "L",
                             "resize": "pad", "background": "dark", "framing": None}  # fmt: skip
    assert meta["recipe"]["command"].startswith("python -m training train --dataset mnist")


def test_parity_with_pytorch_on_256_real_images(
    exported: tuple[Path, Path], fashion_test: tuple[np.ndarray, np.ndarray]
) -> None:
    net, ckpt = load_checkpoint(exported[0])
    d = ckpt["data"]
    wrapper = ServingWrapper(net, d["mean"], d["std"], ckpt["calibration"]["temperature"])
    diffs = parity(wrapper, exported[1], fashion_test[0][:256])
    assert diffs["probabilities"] <= PARITY_TOLERANCE
    assert max(diffs.values()) < 1e-3


def test_committed_default_model_meets_the_contract() -> None:
    meta = check_contract(DEFAULT_MODEL)
    assert DEFAULT_MODEL.stat().st_size <= 2_000_000
    assert meta["labels"][0] == "T-shirt/top" and len(meta["labels"]) == 10
