"""The scripts the image runs: the health check (against a real local HTTP server), the venv
slimming step (on real fresh venvs) and the smoke test that follows it in the builder stage."""

from __future__ import annotations

import http.server
import importlib.metadata
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"
SLIM = ROOT / "deploy" / "docker" / "slim-venv.sh"
SMOKE = ROOT / "deploy" / "docker" / "smoke.py"
needs_strip = pytest.mark.skipif(not shutil.which("strip"), reason="slim-venv.sh needs binutils")


class Readyz(http.server.BaseHTTPRequestHandler):
    status = 200  # set per test

    def do_GET(self) -> None:
        code = self.status if self.path == "/readyz" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Readyz)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONVSCOPE_PORT": str(port)}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1), (500, 1)])
def test_healthcheck_follows_readyz(
    server: http.server.ThreadingHTTPServer, status: int, exit_code: int
) -> None:
    Readyz.status = status
    result = run_healthcheck(server.server_address[1])
    assert result.returncode == exit_code, result.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_healthcheck(port)
    assert result.returncode == 1
    assert "/readyz" in result.stderr


def fresh_venv(venv: Path) -> Path:
    """A new venv (with pip, as `python -m venv` makes it); returns its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    return Path(
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )


@needs_strip
def test_slim_venv_drops_installers_tests_and_caches_and_keeps_packages(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    site = fresh_venv(venv)
    python = venv / "bin" / "python"
    package = site / "demo"
    (package / "tests").mkdir(parents=True)
    (package / "__pycache__").mkdir()
    (package / "__init__.py").write_text("VALUE = 42\n")
    (package / "testing.py").write_text("HELPER = 1\n")  # a module, not a test suite: kept
    (package / "tests" / "test_demo.py").write_text("")
    (package / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"")

    subprocess.run(["sh", str(SLIM), str(venv)], check=True, timeout=120)

    assert not (venv / "bin" / "pip").exists()
    assert not list(site.glob("pip*")) and not list(site.glob("setuptools*"))
    assert not (package / "tests").exists() and not (package / "__pycache__").exists()
    check = subprocess.run(
        [str(python), "-c", "import demo, demo.testing; print(demo.VALUE)"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.stdout.strip() == "42", check.stderr


def runtime_distributions(pyproject: dict[str, Any]) -> list[importlib.metadata.Distribution]:
    """pyproject.toml's base dependencies and everything they require, as installed here."""
    todo = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    found: dict[str, importlib.metadata.Distribution] = {}
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name in found:
            continue
        dist = found[name] = importlib.metadata.distribution(name)
        for sub in map(Requirement, dist.requires or []):
            if not sub.marker or any(sub.marker.evaluate({"extra": e}) for e in req.extras | {""}):
                todo.append(sub)
    return list(found.values())


def has_symbols(library: Path) -> bool:
    sections = subprocess.run(
        ["readelf", "-S", "-W", str(library)], capture_output=True, text=True, check=True
    ).stdout
    return ".symtab" in sections


@pytest.fixture(scope="module")
def slim_runtime_venv(
    tmp_path_factory: pytest.TempPathFactory, pyproject: dict[str, Any]
) -> tuple[Path, Path]:
    """The image's venv without a download: the runtime distributions' files copied from this
    venv (the same wheels pip installs in the builder) plus service/, then slim-venv.sh.
    Returns (venv, the unslimmed copy's site-packages) so tests can compare."""
    base = tmp_path_factory.mktemp("runtime")
    venv = base / "venv"
    site = fresh_venv(venv)
    for dist in runtime_distributions(pyproject):
        root = Path(str(dist.locate_file("")))
        for file in dist.files or []:
            source = root / file
            if file.parts[0] == ".." or "__pycache__" in file.parts or not source.is_file():
                continue  # console scripts and byte-code caches
            (site / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, site / file)
    shutil.copytree(
        ROOT / "service", site / "service", ignore=shutil.ignore_patterns("__pycache__")
    )
    original = base / "original"
    shutil.copytree(site, original, symlinks=True)
    subprocess.run(["sh", str(SLIM), str(venv)], check=True, timeout=300)
    return venv, original


@needs_strip
def test_slim_venv_strips_libraries_and_drops_onnxruntimes_offline_tools(
    slim_runtime_venv: tuple[Path, Path],
) -> None:
    venv, original = slim_runtime_venv
    site = next((venv / "lib").glob("python3*/site-packages"))
    ort = site / "onnxruntime"
    assert (ort / "capi").is_dir() and (original / "onnxruntime" / "transformers").is_dir()
    for unused in ("transformers", "quantization", "tools", "datasets"):
        assert not (ort / unused).exists(), unused
    assert list((original / "onnxruntime" / "capi").glob("libonnxruntime.so.*"))
    assert not list((ort / "capi").glob("libonnxruntime.so.*"))
    assert not (site / "numpy" / "f2py").exists() and not list(site.rglob("*.pyi"))
    # uvloop's wheel ships its symbol table (14 MB); stripped, the loop is a fraction of that.
    (loop,) = (site / "uvloop").glob("loop.*.so")
    before = original / loop.relative_to(site)
    assert has_symbols(before) and not has_symbols(loop)
    assert loop.stat().st_size < before.stat().st_size / 4
    # Pillow's Tk glue (needs tkinter, absent from slim Pythons) and its AVIF codec are gone;
    # the rest of Pillow stays, and the service still refuses AVIF itself.
    for unused in ("PIL/_imagingtk.*", "PIL/_avif.*", "pillow.libs/libavif-*"):
        assert list(original.glob(unused)), unused
        assert not list(site.glob(unused)), unused
    assert list(site.glob("PIL/_imaging.*")) and list(site.glob("PIL/_webp.*"))
    from service import imaging

    assert "AVIF" not in {f for formats in imaging._PILLOW_FORMATS.values() for f in formats}, (
        "the service accepts AVIF now: keep PIL._avif in deploy/docker/slim-venv.sh"
    )
    libraries = [p for p in site.rglob("*.so*") if p.is_file()]
    assert sum(p.stat().st_size for p in libraries) < sum(
        (original / p.relative_to(site)).stat().st_size for p in libraries
    )


@needs_strip
@pytest.mark.e2e
def test_slimmed_venv_runs_the_service_and_classifies_like_the_full_one(
    slim_runtime_venv: tuple[Path, Path], tmp_path: Path
) -> None:
    """The builder's smoke test (every extension module imports; `python -m service` answers a
    classification over HTTP and stops on SIGTERM), then real Fashion-MNIST pictures through
    the slimmed onnxruntime, numpy and OpenBLAS against this venv's results."""
    venv, _ = slim_runtime_venv
    python = str(venv / "bin" / "python")
    smoke = subprocess.run(
        [python, str(SMOKE), str(ROOT / "models")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert smoke.returncode == 0, smoke.stdout[-2000:] + smoke.stderr[-2000:]
    assert "classified as" in smoke.stdout

    from training.data import read_idx

    images = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")[:8]
    np.save(tmp_path / "images.npy", images[..., None])
    model = ROOT / "models" / "fashion-mnist" / "model.onnx"
    script = (
        "import sys, numpy as np, onnxruntime as ort, service.app;"
        "a = np.random.default_rng(0).standard_normal((64, 64));"
        "assert np.allclose(a @ np.linalg.solve(a, np.ones(64)), 1);"  # OpenBLAS
        "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider']);"
        "np.save(sys.argv[3], s.run(['probabilities'], {'image': np.load(sys.argv[2])})[0])"
    )
    args = [str(model), str(tmp_path / "images.npy"), str(tmp_path / "slim.npy")]
    run = subprocess.run(
        [python, "-c", script, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (expected,) = session.run(["probabilities"], {"image": images[..., None]})
    np.testing.assert_array_equal(np.load(tmp_path / "slim.npy"), expected)


@needs_strip
def test_smoke_test_fails_on_a_venv_whose_library_is_broken(
    slim_runtime_venv: tuple[Path, Path], tmp_path: Path
) -> None:
    """The smoke test can fail, and names the module: a copy of the slimmed venv with one
    extension module overwritten."""
    venv, _ = slim_runtime_venv
    broken = tmp_path / "venv"
    shutil.copytree(venv, broken, symlinks=True)
    site = next((broken / "lib").glob("python3*/site-packages"))
    (parser,) = (site / "httptools" / "parser").glob("parser.*.so")
    parser.write_bytes(b"not an ELF file\n" * 64)
    smoke = subprocess.run(
        [str(broken / "bin" / "python"), str(SMOKE), str(ROOT / "models")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert smoke.returncode != 0
    assert "smoke: cannot import httptools.parser.parser" in smoke.stderr
