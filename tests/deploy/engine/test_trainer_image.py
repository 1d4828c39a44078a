"""The trainer image, built with torch from this machine's wheel folder (pip's find-links, served
on loopback: the PyTorch index cannot be reached here), trains a dry run and exports into a
mounted folder with no network at all; the runtime image then serves the model it wrote, with
the answers onnxruntime gives for that file here."""

from __future__ import annotations

import functools
import io
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.docker

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
TORCH_VERSION = "2.13.0"
UID = 10001


def local_torch_folder() -> Path | None:
    """The folder among pip's find-links (`pip config list`) that holds the torch CPU wheel."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        if not key.endswith("find-links"):
            continue
        for location in value.strip("'\"").split():
            folder = Path(location.removeprefix("file://"))
            if list(folder.glob(f"torch-{TORCH_VERSION}+cpu-cp311-*.whl")):
                return folder
    return None


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def torch_from() -> Iterator[list[str]]:
    """The TORCH_FROM build argument: the local wheel folder on a loopback port, else the
    Dockerfile's default (PyTorch's CPU index)."""
    folder = local_torch_folder()
    if folder is None:
        yield []
        return
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ["--build-arg", f"TORCH_FROM=--find-links http://127.0.0.1:{server.server_port}/"]
    finally:
        server.shutdown()
        server.server_close()


def test_trainer_trains_and_exports_a_model_the_runtime_image_serves(
    docker: Any,
    base_image: str,
    torch_from: list[str],
    runtime_image: str,
    start_container: Any,
    tmp_path: Path,
    measure: Any,
) -> None:
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    trainer = "convscope-trainer:test"
    seconds = docker.build(
        "--target", "trainer", "--build-arg", f"PYTHON_IMAGE={base_image}", *torch_from,
        "-t", trainer, ".",
    )  # fmt: skip
    measure("trainer image build", f"{seconds:.0f} s ({docker.size(trainer) / 1e6:.0f} MB)")
    assert "+cpu" in docker(
        "run", "--rm", "--network", "none", trainer, "python", "-c",
        "import torch; print(torch.__version__, torch.version.cuda)",
    ).stdout  # fmt: skip

    runs, models = tmp_path / "runs", tmp_path / "models"
    for folder in (runs, models):
        folder.mkdir()
        subprocess.run(["chown", f"{UID}:{UID}", str(folder)], check=True)
    tmp_path.chmod(0o755)
    # No network: the data comes from the mounted Fashion-MNIST, nothing is downloaded.
    train = docker(
        "run", "--rm", "--network", "none",
        "-v", f"{runs}:/work/runs", "-v", f"{models}:/work/models",
        "-v", f"{FASHION_MNIST}:{FASHION_MNIST}:ro",
        trainer, "train-and-export", "--dry-run",
        timeout=900,
    )  # fmt: skip
    model = models / "fashion-mnist" / "model.onnx"
    assert model.is_file(), train.stdout[-3000:] + train.stderr[-3000:]
    assert model.stat().st_uid == UID  # written by the image's user, not root
    assert (runs / "fashion-mnist" / "best.pt").is_file()

    container = start_container(runtime_image, "-v", f"{models}:/app/models:ro")
    listed = httpx.get(f"{container.url}/v1/models").json()
    assert [m["name"] for m in listed["models"]] == ["fashion-mnist"]

    from training.data import read_idx

    pictures = read_idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz")[:4]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (expected,) = session.run(["probabilities"], {"image": pictures[..., None]})
    for pixels, probs in zip(pictures, expected):
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "PNG")
        r = httpx.post(
            f"{container.url}/v1/classify?top_k=10",
            content=out.getvalue(),
            headers={"content-type": "image/png"},
        )
        assert r.status_code == 200, r.text
        served = {p["index"]: p["probability"] for p in r.json()["results"][0]["predictions"]}
        np.testing.assert_allclose([served[i] for i in range(10)], probs, atol=1e-6)
