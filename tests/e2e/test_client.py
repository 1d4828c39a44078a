"""service.client.Client and the ``convscope`` command against a real service process.

The client's answers must be /v1's (same probabilities, same feature-map grids); the command is
run as installed (the console script next to this interpreter), as a user runs it.
"""

from __future__ import annotations

import io
import json
import os
import pty
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.client import Client, ServiceError, Unreachable

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CONVSCOPE = Path(sys.executable).parent / "convscope"
MODEL = "fashion-mnist"


@pytest.fixture(scope="module")
def service(service_factory: Any) -> Iterator[Any]:
    with service_factory({"CONVSCOPE_API_KEYS": "secret"}) as svc:
        yield svc


@pytest.fixture(scope="module")
def pngs(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> list[bytes]:
    out = []
    for picture in fashion_mnist[0][:6]:
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


@pytest.fixture
def folder(tmp_path: Path, pngs: list[bytes]) -> Path:
    pictures = tmp_path / "pictures"
    (pictures / "more").mkdir(parents=True)
    for i, data in enumerate(pngs[:4]):
        (pictures / f"p{i}.png").write_bytes(data)
    (pictures / "more" / "p0.png").write_bytes(pngs[4])  # the same stem in a sub-folder
    (pictures / "notes.txt").write_text("not a picture, and not picked from a folder")
    return pictures


def _v1(url: str, data: bytes, **params: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/v1/classify",
        params=params,
        content=data,
        headers={"Authorization": "Bearer secret"},
        timeout=30,
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()["results"][0]
    return result


def _format(path: Path) -> str | None:
    with Image.open(path) as image:
        return image.format


def _convscope(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    return subprocess.run(
        [str(CONVSCOPE), *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- the client ---------------------------------------------------------------------------------


def test_client_classifies_paths_bytes_and_several_as_v1(
    service: Any, pngs: list[bytes], tmp_path: Path
) -> None:
    path = tmp_path / "shirt.png"
    path.write_bytes(pngs[0])
    with Client(service.url, api_key="secret") as client:
        [by_path] = client.classify(path, top_k=10)
        [by_bytes] = client.classify(pngs[0], top_k=10, model=MODEL)
        several = client.classify([str(path), *pngs[1:3]], top_k=10)
    want = _v1(service.url, pngs[0], top_k=10)["predictions"]
    for result in (by_path, by_bytes, several[0]):
        assert result.model == MODEL
        assert [(p.label, p.index, p.probability) for p in result.predictions] == [
            (p["label"], p["index"], p["probability"]) for p in want
        ]
        assert result.preprocessing["format"] == "PNG"
        assert result.feature_maps == [] and result.cam is None and result.input_png is None
    assert len(several) == 3
    assert several[2].predictions[0].label == _v1(service.url, pngs[2])["predictions"][0]["label"]


def test_client_models_feature_maps_and_cam(service: Any, pngs: list[bytes]) -> None:
    with Client(service.url, api_key="secret") as client:
        models = client.models()
        assert [m.name for m in models] == [MODEL] and models[0].default
        model = client.model(MODEL)
        assert len(model.labels) == 10 and model.metrics
        fmaps = client.feature_maps(pngs[0])
        assert [f.layer for f in fmaps] == [ly["name"] for ly in model.layers]
        only = client.feature_maps(pngs[0], layers=["conv1", "pool2"])
        [with_cam] = client.classify(pngs[0], cam=True, input_image=True)
    assert [f.layer for f in only] == ["conv1", "pool2"]
    conv1 = Image.open(io.BytesIO(fmaps[0].png))
    grid = fmaps[0].grid
    assert fmaps[0].shape == (32, 28, 28) and grid["channels"] == 32
    # The same grid as the dedicated endpoint's PNG, pixel for pixel (within one grey level:
    # the two ask the network separately).
    response = httpx.post(
        f"{service.url}/v1/models/{MODEL}/feature-maps/conv1",
        content=pngs[0],
        headers={"Authorization": "Bearer secret"},
        timeout=30,
    )
    assert {k: int(response.headers[f"X-Grid-{k.title()}"]) for k in grid} == grid
    dedicated = np.asarray(Image.open(io.BytesIO(response.content)), np.int16)
    assert dedicated.shape == np.asarray(conv1).shape
    assert np.abs(np.asarray(conv1, np.int16) - dedicated).max() <= 1
    assert with_cam.cam is not None and with_cam.cam.label == with_cam.predictions[0].label
    assert Image.open(io.BytesIO(with_cam.cam.png)).format == "PNG"
    assert with_cam.input_png is not None
    assert Image.open(io.BytesIO(with_cam.input_png)).size == (28, 28)


@pytest.mark.parametrize(
    ("call", "status", "code", "message"),
    [
        (lambda c: c.model("nope"), 404, "not_found", "no model named 'nope'"),
        (
            lambda c: c.classify(b"plain text"),
            415,
            "unsupported_media_type",
            "not a supported picture: send PNG, JPEG, WebP, GIF, BMP or TIFF",
        ),
        (
            lambda c: c.feature_maps(b"x", layers=["nope"]),
            404,
            "not_found",
            f"model {MODEL} has no layer 'nope' (layers: conv1, conv2, pool1, conv3, conv4, "
            "pool2, conv5, conv6)",
        ),
    ],
    ids=["unknown model", "not a picture", "unknown layer"],
)
def test_client_errors_carry_the_services_code_and_sentence(
    service: Any, call: Any, status: int, code: str, message: str
) -> None:
    with Client(service.url, api_key="secret") as client, pytest.raises(ServiceError) as info:
        call(client)
    assert (info.value.status, info.value.code, info.value.message) == (status, code, message)
    assert str(info.value) == f"{code}: {message}"


def test_client_without_a_key_and_without_a_service(service: Any) -> None:
    with Client(service.url) as client, pytest.raises(ServiceError) as info:
        client.models()
    assert (info.value.status, info.value.code) == (401, "unauthorized")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: nothing answers there
        with Client(f"http://127.0.0.1:{port}") as client, pytest.raises(Unreachable):
            client.models()


def test_client_survives_the_server_closing_idle_connections(
    service: Any, pngs: list[bytes]
) -> None:
    with Client(service.url, api_key="secret") as client:
        client.classify(pngs[0])
        time.sleep(5.5)  # past uvicorn's keep-alive timeout (5 s): it closes the connection
        [result] = client.classify(pngs[1])
    assert result.predictions


def test_client_needs_nothing_beyond_the_standard_library(service: Any, pngs: list[bytes]) -> None:
    # -S: no site-packages at all (no numpy, no httpx, no onnxruntime); -I: no user paths.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from service.client import Client\n"
        "with Client(sys.argv[2], api_key='secret') as c:\n"
        "    print(c.classify(bytes.fromhex(sys.argv[3]))[0].predictions[0].label)\n"
        "print(sorted(m for m in ('numpy', 'httpx', 'onnxruntime', 'torch') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-I", "-c", code, str(ROOT), service.url, pngs[0].hex()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    label, modules = done.stdout.strip().splitlines()
    assert label == _v1(service.url, pngs[0])["predictions"][0]["label"]
    assert modules == "[]"


# ---- the command --------------------------------------------------------------------------------


def test_classify_a_folder_prints_a_table_and_writes_pngs(
    service: Any, folder: Path, tmp_path: Path, pngs: list[bytes]
) -> None:
    fmaps, cams = tmp_path / "fmaps", tmp_path / "cams"
    done = _convscope(
        "classify",
        str(folder),
        "--url",
        service.url,
        "--top-k",
        "2",
        "--feature-maps",
        str(fmaps),
        "--cam",
        str(cams),
        env={"CONVSCOPE_API_KEY": "secret"},
    )
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.strip().splitlines()
    assert header.split() == ["picture", "top-1", "top-2"]
    files = sorted(p for p in folder.rglob("*.png"))
    assert [row.split()[0] for row in rows] == [str(p) for p in files]
    for row, path in zip(rows, files, strict=True):
        top = _v1(service.url, path.read_bytes())["predictions"][0]
        assert f"{top['label']} {100 * top['probability']:.1f}%" in row
    # One folder of layer grids per picture (same stems numbered), one heat map per picture.
    names = ["p0", "p0-2", "p1", "p2", "p3"]  # more/p0.png sorts first: p0.png is p0-2
    written = sorted(p.name for p in fmaps.iterdir())
    assert written == sorted(names)
    layers = ["conv1", "conv2", "pool1", "conv3", "conv4", "pool2", "conv5", "conv6"]
    for name in names:
        assert sorted(p.stem for p in (fmaps / name).iterdir()) == sorted(layers)
        assert _format(fmaps / name / "conv1.png") == _format(cams / f"{name}.png") == "PNG"


def test_classify_json_lines_and_failures(service: Any, folder: Path) -> None:
    bad = folder / "notes.txt"
    missing = folder / "gone.png"
    good = folder / "p1.png"
    done = _convscope(
        "classify",
        str(good),
        str(bad),
        str(missing),
        "--url",
        service.url,
        "--api-key",
        "secret",
        "--json",
    )
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["picture"] for line in lines] == [str(good), str(bad), str(missing)]
    want = _v1(service.url, good.read_bytes(), top_k=3)["predictions"]
    assert lines[0]["predictions"] == want and lines[0]["model"] == MODEL
    assert lines[1]["error"]["code"] == "unsupported_media_type"
    assert lines[2]["error"] == {"code": "unreadable_file", "message": "no such file or directory"}
    assert done.stderr.splitlines() == [
        "convscope: 2 of 3 pictures failed:",
        f"  {bad}: unsupported_media_type: not a supported picture: send PNG, JPEG, WebP, GIF, "
        "BMP or TIFF",
        f"  {missing}: no such file or directory",
    ]


def test_classify_without_the_key_or_the_service(service: Any, folder: Path) -> None:
    # Answers that are the same for every picture stop the run with one sentence.
    done = _convscope("classify", str(folder), "--url", service.url)
    assert done.returncode == 1
    assert done.stderr.startswith("convscope: unauthorized: an API key is required")
    assert len(done.stderr.splitlines()) == 1
    key = {"CONVSCOPE_API_KEY": "secret"}
    done = _convscope("classify", str(folder), "--url", service.url, "--model", "nope", env=key)
    assert done.stderr.splitlines() == ["convscope: not_found: no model named 'nope'"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        done = _convscope("classify", str(folder), "--url", url)
    assert done.returncode == 1
    assert done.stderr.startswith(f"convscope: cannot reach {url}: ")
    assert len(done.stderr.splitlines()) == 1  # one sentence, not one per picture


def test_classify_shows_a_progress_bar_on_a_terminal(service: Any, folder: Path) -> None:
    leader, follower = pty.openpty()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    process = subprocess.Popen(
        [str(CONVSCOPE), "classify", str(folder), "--url", service.url, "--api-key", "secret"],
        stdout=subprocess.PIPE,
        stderr=follower,
        env=clean,
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the command ended and closed its end of the terminal
            break
        if not chunk:
            break
        shown += chunk
    stdout, _ = process.communicate(timeout=60)
    os.close(leader)
    assert process.returncode == 0
    assert b"] 0/5 " in shown and b"] 5/5" in shown and b"#" * 30 in shown
    assert b"\r" in shown and b"top-1" in stdout  # redrawn in place; the table still on stdout


def test_serve_is_python_m_service(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    process = subprocess.Popen(
        [str(CONVSCOPE), "serve", "--port", str(port), "--model-dir", str(ROOT / "models")],
        env={**clean, "CONVSCOPE_WORKERS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("convscope serve was not ready in 90 s")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert _convscope("serve", "--port", "nope").returncode == 2  # python -m service's parser


def test_training_commands_without_the_train_extra_say_so() -> None:
    # -S: no site-packages, so no torch; the training code itself is on the path.
    done = subprocess.run(
        [
            sys.executable,
            "-S",
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); from service.cli import main; "
            "sys.exit(main(['export', 'x.pt']))",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "convscope export needs the training code and PyTorch, which are not installed here: "
        "pip install 'convscope[train]' (from a checkout of convscope)."
    )


def test_training_commands_forward_to_the_training_cli() -> None:
    pytest.importorskip("torch")
    done = _convscope("evaluate", "--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python -m training evaluate")
