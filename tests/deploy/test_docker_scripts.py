"""The two scripts the image runs: the health check (against a real local HTTP server) and the
venv slimming step (on a real fresh venv)."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"
SLIM = ROOT / "deploy" / "docker" / "slim-venv.sh"


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


def test_slim_venv_drops_installers_tests_and_caches_and_keeps_packages(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
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
