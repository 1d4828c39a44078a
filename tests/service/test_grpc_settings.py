"""CONVSCOPE_GRPC_PORT: off by default (grpcio not even imported), a clear sentence when grpcio
is missing or the port is taken."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.settings import Settings, describe_error

ROOT = Path(__file__).resolve().parents[2]


def test_off_by_default_and_grpcio_never_imported(model_dir: Path) -> None:
    # A fresh interpreter: this one has imported grpc for other tests.
    code = (
        "import sys\n"
        "from starlette.testclient import TestClient\n"
        "from service.app import create_app\n"
        "from service.settings import Settings\n"
        f"settings = Settings(model_dir={str(model_dir)!r})\n"
        "assert settings.grpc_port is None\n"
        "with TestClient(create_app(settings)) as client:\n"
        "    assert client.get('/readyz').status_code == 200\n"
        "print(sorted(m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_port_without_grpcio_is_one_sentence(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def without_grpc(name: str, *args: Any) -> Any:
        return None if name == "grpc" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_grpc)
    with pytest.raises(ValidationError) as info:
        Settings(model_dir=model_dir, grpc_port=8001)
    assert describe_error(info.value) == (
        "setting grpc_port (CONVSCOPE_GRPC_PORT): gRPC needs grpcio and grpcio-health-checking: "
        "pip install 'convscope[grpc]'"
    )


@pytest.mark.e2e
def test_a_taken_port_stops_the_start_with_one_line(model_dir: Path) -> None:
    pytest.importorskip("grpc")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "service", "--port", "0", "--model-dir", str(model_dir)]
        env = {"CONVSCOPE_GRPC_PORT": str(port), "CONVSCOPE_WORKERS": "1", "PATH": "/usr/bin"}
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    line = f"cannot start: gRPC cannot listen on 127.0.0.1:{port} (in use, or not an address here)"
    assert line in done.stderr
    assert "Traceback" not in done.stderr
