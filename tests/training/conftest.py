from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import DEFAULT_FASHION_DIR, read_idx, write_idx

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "models" / "fashion-mnist" / "model.onnx"


@pytest.fixture(scope="session")
def fashion_test() -> tuple[np.ndarray, np.ndarray]:
    """The real Fashion-MNIST test set (CI installs the Debian package dataset-fashion-mnist)."""
    x = read_idx(DEFAULT_FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    y = read_idx(DEFAULT_FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    return x[..., None], y.astype(np.int64)


@pytest.fixture(scope="session")
def tiny_idx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MNIST-style IDX folder cut from the real Fashion-MNIST files (3000 + 1000)."""
    d = tmp_path_factory.mktemp("tiny-idx")
    src = DEFAULT_FASHION_DIR
    write_idx(d / "train-images-idx3-ubyte.gz", read_idx(src / "train-images-idx3-ubyte.gz")[:3000])
    write_idx(d / "train-labels-idx1-ubyte.gz", read_idx(src / "train-labels-idx1-ubyte.gz")[:3000])
    write_idx(d / "t10k-images-idx3-ubyte.gz", read_idx(src / "t10k-images-idx3-ubyte.gz")[:1000])
    write_idx(d / "t10k-labels-idx1-ubyte.gz", read_idx(src / "t10k-labels-idx1-ubyte.gz")[:1000])
    return d
