"""Fixtures shared by the service and end-to-end tests: the committed model, a model folder
holding only it, real Fashion-MNIST test pictures, and onnxruntime run directly as the reference.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
COMMITTED_MODEL = REPO / "models" / "fashion-mnist" / "model.onnx"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def model_file() -> Path:
    assert COMMITTED_MODEL.is_file(), "the committed model models/fashion-mnist/model.onnx is gone"
    return COMMITTED_MODEL


@pytest.fixture
def model_dir(tmp_path: Path, model_file: Path) -> Path:
    """A model folder with exactly the committed model, whatever else models/ holds."""
    folder = tmp_path / "models" / "fashion-mnist"
    folder.mkdir(parents=True)
    (folder / "model.onnx").symlink_to(model_file)
    return folder.parent


@pytest.fixture(scope="session")
def model_meta(model_file: Path) -> dict[str, Any]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    return {key: json.loads(value) for key, value in props.items()}


@pytest.fixture(scope="session")
def reference(model_file: Path) -> Callable[..., np.ndarray]:
    """onnxruntime on raw uint8 pixels [N, H, W, C] -> the requested output (probabilities)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])

    def run(pixels: np.ndarray, output: str = "probabilities") -> np.ndarray:
        return session.run([output], {"image": pixels})[0]

    return run


@pytest.fixture(scope="session")
def fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The first 200 Fashion-MNIST test pictures (uint8 [N, 28, 28]) and labels."""
    images = FASHION_MNIST / "t10k-images-idx3-ubyte.gz"
    if not images.is_file():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    from training.data import read_idx

    labels = read_idx(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")
    return read_idx(images)[:200], labels[:200]


@pytest.fixture(scope="session")
def decisive_pictures(
    fashion_mnist: tuple[np.ndarray, np.ndarray], reference: Callable[..., np.ndarray]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Test pictures the model is sure about (top-1 ahead by > 0.5), with its top-1 on raw pixels.

    Lossy encodings (JPEG) move a pixel value or two; on a picture where two classes are nearly
    tied that may flip the answer, which says nothing about the service.
    """
    images = fashion_mnist[0]
    probs = reference(images[..., None])
    top2 = np.sort(probs, axis=1)[:, -2:]
    sure = np.flatnonzero(top2[:, 1] - top2[:, 0] > 0.5)[:8]
    assert len(sure) >= 4, "the model is sure of too few test pictures to test with"
    yield images[sure], probs[sure].argmax(axis=1)


@pytest.fixture(scope="session")
def own_models(tmp_path_factory: pytest.TempPathFactory, model_file: Path) -> Any:
    """tests/own_models.py's folder: the default model beside four networks of other shapes
    (exported from PyTorch or adopted from ONNX) and one without a cam; built once a session."""
    pytest.importorskip("torch")
    from tests import own_models

    return own_models.build_folder(tmp_path_factory.mktemp("own-models"), model_file)
