"""``python -m service`` as a user runs it: a bad model or setting stops the start with one clear
line and a non-zero exit; importing the service pulls in neither torch nor an app.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_importing_the_service_leaves_torch_out() -> None:
    modules = [
        "service",
        "service.app",
        "service.settings",
        "service.registry",
        "service.runtime",
        "service.routes",
        "service.deps",
        "service.classify",
        "service.imaging",
        "service.render",
        "service.__main__",
    ]
    code = (
        f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
        "import service.app as a\n"
        "heavy = ('torch', 'torchvision', 'onnx', 'training')\n"
        "print(sorted(k for k in heavy if k in sys.modules))\n"
        "print([n for n in vars(a) if type(vars(a)[n]).__name__ in ('FastAPI', 'Settings')])"
    )
    rc, out = run("-c", code)
    assert (rc, out.split("\n")[:2]) == (0, ["[]", "[]"]), out


def lines(output: str) -> list[str]:
    """Output without uvicorn's routine start-up chatter."""
    routine = ("INFO:", "ERROR:    Application startup failed")
    return [ln for ln in output.splitlines() if ln.strip() and not ln.startswith(routine)]


def model_folder(tmp_path: Path, content: bytes | None) -> Path:
    folder = tmp_path / "models" / "shirts"
    folder.mkdir(parents=True)
    if content is not None:
        (folder / "model.onnx").write_bytes(content)
    return folder / "model.onnx"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "file not found"),
        (b"", "file is empty"),
        (b"\x08\x07" + b"not an onnx model" * 8, "not a loadable ONNX model ("),
    ],
    ids=["missing", "empty", "corrupt"],
)
@pytest.mark.parametrize(
    ("workers", "prefix"),
    [("0", "convscope: "), ("1", "ERROR:    ")],  # the supervisor's check; uvicorn's lifespan
    ids=["one-per-core", "one-process"],
)
def test_a_bad_model_stops_the_start_with_one_line(
    tmp_path: Path, content: bytes | None, problem: str, workers: str, prefix: str
) -> None:
    path = model_folder(tmp_path, content)
    model_dir = str(path.parent.parent)
    rc, out = run("-m", "service", "--model-dir", model_dir, "--port", "0", "--workers", workers)
    assert rc != 0
    assert "Traceback" not in out
    (line,) = lines(out)
    assert line.startswith(f"{prefix}cannot start: {path}: {problem}")


def test_a_model_that_breaks_the_contract_stops_the_start(tmp_path: Path, model_file: Path) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(model_file))
    keep = [p for p in model.metadata_props if p.key != "input"]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    path = model_folder(tmp_path, model.SerializeToString())
    rc, out = run("-m", "service", "--model-dir", str(path.parent.parent), "--workers", "2")
    assert rc == 1 and "Traceback" not in out
    assert lines(out) == [
        f"convscope: cannot start: {path}: metadata lacks input (not a convscope model)"
    ]


def test_a_bad_setting_stops_the_start_with_one_line() -> None:
    rc, out = run("-m", "service", env={"CONVSCOPE_MAX_BATCH": "0"})
    assert (rc, out.strip()) == (
        1,
        "convscope: cannot start: setting max_batch (CONVSCOPE_MAX_BATCH): "
        "Input should be greater than or equal to 1",
    )
    rc, out = run("-m", "service", "--model-dir", "/no/such/models")
    assert (rc, out.strip()) == (
        1,
        "convscope: cannot start: setting model_dir (CONVSCOPE_MODEL_DIR): model folder "
        "/no/such/models does not exist or is not a folder",
    )


def test_help_names_every_flag() -> None:
    rc, out = run("-m", "service", "--help")
    assert rc == 0
    for flag in ("--host", "--port", "--model-dir", "--workers", "--log-level"):
        assert flag in out
