"""The plain graph (service/plain_graph.py): the committed model with ``probabilities`` as its
only output gives the same probabilities, and the service runs plain classifications on it and
feature maps on the full graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from service.plain_graph import WireError, keep_outputs
from service.registry import load_model
from service.settings import Settings
from training.data import read_idx

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "fashion-mnist" / "model.onnx"
FASHION_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


@pytest.fixture(scope="module")
def pictures() -> np.ndarray:
    return read_idx(FASHION_TEST)[:64, :, :, None]


def test_only_the_kept_output_is_left_and_the_rest_is_untouched() -> None:
    data = MODEL.read_bytes()
    plain = onnx.load_from_string(keep_outputs(data, frozenset({"probabilities"})))
    full = onnx.load_from_string(data)
    assert [o.name for o in plain.graph.output] == ["probabilities"]
    assert len(full.graph.output) > 1
    assert plain.metadata_props == full.metadata_props
    assert list(plain.graph.node) == list(full.graph.node)
    assert list(plain.graph.initializer) == list(full.graph.initializer)
    onnx.checker.check_model(plain, full_check=True)


def test_the_plain_graph_gives_the_models_probabilities(pictures: np.ndarray) -> None:
    full = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(
        keep_outputs(MODEL.read_bytes(), frozenset({"probabilities"})),
        providers=["CPUExecutionProvider"],
    )
    want = full.run(["probabilities"], {"image": pictures})[0]
    got = plain.run(["probabilities"], {"image": pictures})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_bytes_that_are_not_a_model_are_refused() -> None:
    with pytest.raises(WireError):
        keep_outputs(b"\x0a\xff\xff\xff", frozenset({"probabilities"}))
    with pytest.raises(WireError):
        keep_outputs(b"\x08\x07", frozenset({"probabilities"}))  # a model without a graph


def test_the_service_runs_plain_requests_on_the_plain_graph(pictures: np.ndarray) -> None:
    runtime = load_model("fashion-mnist", MODEL, Settings(model_dir=ROOT / "models")).runtime
    assert runtime.plain_session is not None
    assert [o.name for o in runtime.plain_session.get_outputs()] == ["probabilities"]
    assert runtime._session_for(["probabilities"], lone=False) is runtime.plain_session
    assert runtime._session_for(["probabilities", "features/conv1"], lone=False) is (
        runtime.session
    )
    both = runtime.run(pictures, ["probabilities", "features/conv1"])
    plain = runtime.run(pictures, ["probabilities"])
    np.testing.assert_allclose(plain["probabilities"], both["probabilities"], rtol=0, atol=1e-6)
