"""Accuracy on photo-like renditions of the test set, through the real service.

The model is served by ``python -m service`` in a child process on a loopback port and every
picture goes over HTTP as a client would send it: the originals as PNG, the renditions
(training/photos.py) as the JPEGs a phone makes. No service code is imported: what is measured
is what a user gets, framing policy and all. The server is started by the project's one server
harness (tests/server.py), so this runs from a checkout of the repository.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .photos import KINDS, contact_sheet, render_set

PER_REQUEST = 16  # the service's default CONVSCOPE_MAX_IMAGES


@dataclass
class PhotoResult:
    size: int
    accuracy: dict[str, float]  # "original", "light", "dark"
    seconds: float
    examples: Path | None = None
    framed: dict[str, float] = field(default_factory=dict)  # share the framing policy framed


@contextmanager
def serving(model: Path) -> Iterator[str]:
    """The model alone in a temporary model folder, served on loopback by the project's one
    server harness (tests/server.py); yields the base URL."""
    root = str(Path(__file__).resolve().parents[1])  # the checkout, where tests/ lives
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.server import run_server

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / model.parent.name
        folder.mkdir()
        shutil.copy(model, folder / "model.onnx")
        with run_server(tmp, env={"CONVSCOPE_LOG_LEVEL": "warning"}) as server:
            yield server.url


def classify(url: str, model: str, pictures: list[bytes], input_image: bool = False) -> list[dict]:
    """POST up to PER_REQUEST pictures as multipart ``file`` parts; the service's results."""
    boundary = uuid.uuid4().hex
    body = bytearray()
    for i, data in enumerate(pictures):
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="p{i}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    query = "top_k=1" + ("&input_image=true" if input_image else "")
    request = urllib.request.Request(
        f"{url}/v1/models/{model}/classify?{query}",
        data=bytes(body),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=120) as r:
        return list(json.loads(r.read())["results"])


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a.reshape(a.shape[0], a.shape[1])).save(buf, format="PNG")
    return buf.getvalue()


def _picture(data_url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


def evaluate_photos(
    model: Path, x: np.ndarray, y: np.ndarray, seed: int = 0, examples: Path | None = None
) -> PhotoResult:
    """Accuracy of the originals and of light- and dark-background renditions of ``x``."""
    name = model.parent.name
    sets = {"original": [_png(a) for a in x]}
    for kind in KINDS:
        sets[kind] = [r.jpeg for r in render_set(x, kind, seed)]
    t = time.perf_counter()
    accuracy, framed = {}, {}
    with serving(model) as url:
        for key, pictures in sets.items():
            predicted, applied = [], 0
            for i in range(0, len(pictures), PER_REQUEST):
                for r in classify(url, name, pictures[i : i + PER_REQUEST]):
                    predicted.append(r["predictions"][0]["index"])
                    applied += bool((r["preprocessing"].get("framing") or {}).get("applied"))
            accuracy[key] = float((np.array(predicted) == y).mean())
            framed[key] = applied / len(pictures)
        if examples is not None:
            n = min(8, len(x))
            rows = [[Image.open(io.BytesIO(p)) for p in sets[k][:n]] for k in KINDS]
            seen = [classify(url, name, sets[k][:n], input_image=True) for k in KINDS]
            tiles = [rows[0], [_picture(r["input_image"]) for r in seen[0]]]
            tiles += [rows[1], [_picture(r["input_image"]) for r in seen[1]]]
            tiles.append([Image.fromarray(a.reshape(a.shape[0], a.shape[1])) for a in x[:n]])
            contact_sheet(tiles).save(examples)
    return PhotoResult(len(x), accuracy, time.perf_counter() - t, examples, framed)


def card_section(result: PhotoResult, command: str) -> list[str]:
    """The model card's section on photos (appended after the test-set sections)."""
    a = result.accuracy
    lines = [
        "## Photos",
        f"Accuracy through the service (`python -m service`, real HTTP on loopback) on the first "
        f"{result.size:,} test pictures and on photo-like renditions of the same pictures "
        "(training/photos.py: the garment 60-220 px, rotated up to 6 degrees, anywhere in a frame "
        "it fills 30-85 % of; a lamp's uneven light, white balance, texture, gamma, sensor noise, "
        "JPEG quality 55-95), measured by",
        "",
        "```",
        command,
        "```",
        "",
        "| pictures | accuracy | framed by the policy |",
        "|---|---|---|",
        f"| originals (PNG) | {100 * a['original']:.2f} % "
        f"| {100 * result.framed['original']:.1f} % |",
    ]
    for kind, what in (("light", "dark garment on a light sheet"),
                       ("dark", "light garment on a dark table")):  # fmt: skip
        gap = 100 * (a[kind] - a["original"])
        lines.append(
            f"| photos: {what} (JPEG) | {100 * a[kind]:.2f} % ({gap:+.2f} points) "
            f"| {100 * result.framed[kind]:.1f} % |"
        )
    if result.examples is not None:
        lines += [
            "",
            "Rows: light-background photos, what the network saw of them; dark-background "
            "photos, what the network saw; the original test pictures.",
            "",
            f"![photo-like renditions and the network input]({result.examples.name})",
        ]
    return lines
