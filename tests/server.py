"""The one server harness: a real ``python -m service`` on a free loopback port, ready when
handed out, stopped (and its whole process group reaped) after.

Used by tests/e2e, tests/hardening and benchmarks/ (scripts there put the repository root on
``sys.path`` and import ``tests.server``). A server's output goes to a file the caller can read.

    with run_server(env={"CONVSCOPE_API_KEYS": "k"}) as server:
        httpx.get(server.url + "/readyz")
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
STARTUP_S = 90.0  # model loading shares two cores with other work in CI


def free_port() -> int:
    """A port the OS says is free now (other engineers and tests run servers too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without any CONVSCOPE_* it had set, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    return {**base, "PYTHONUNBUFFERED": "1", **(env or {})}


def service_command(
    port: int, model_dir: Path | str = MODELS, args: Sequence[str] = ()
) -> list[str]:
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    return [*command, "--model-dir", str(model_dir), *args]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


@dataclass
class Server:
    """A started process serving HTTP on ``port`` (any command: the service or a peer)."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def pids(self) -> list[int]:
        """The server's processes: the one started and its workers."""
        return [self.process.pid, *children(self.process.pid)]

    def peak_rss_mb(self) -> float:
        """The kernel's high-water mark of resident memory (VmHWM) of the server's largest
        process: the one that took the load."""
        return max(status_mb(pid, "VmHWM") for pid in self.pids())

    def rss_mb(self) -> float:
        return max(status_mb(pid, "VmRSS") for pid in self.pids())

    def wait_log(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            time.sleep(0.1)
        raise AssertionError(
            f"{text!r} did not appear in the log within {timeout} s:\n{self.log()}"
        )

    def wait_ready(self, timeout: float = STARTUP_S, poll: float = 0.05) -> None:
        """Until GET /readyz is 200; the log in the error when it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(poll)
        raise RuntimeError(f"the server was not ready in {timeout:.0f} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to its process group (workers too), SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start(
    command: Sequence[str] | None = None,
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    cwd: Path = ROOT,
) -> Server:
    """Start ``command`` (default: the service on ``port``, a free one by default), not waiting.

    The process gets its own process group, so ``stop`` reaches its workers too. Its output goes
    to ``server.log`` in ``log_dir`` (default: a new temporary folder, left for the OS to clean).
    """
    port = port or free_port()
    folder = log_dir or Path(tempfile.mkdtemp(prefix="convscope-server-"))
    log_path = folder / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command or service_command(port)),
            cwd=cwd,
            env=clean_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(f"http://127.0.0.1:{port}", port, process, log_path)


@contextmanager
def run_server(
    model_dir: Path | str = MODELS,
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    *,
    ready: bool = True,
) -> Iterator[Server]:
    """The service, ready (GET /readyz is 200) when yielded; stopped (and reaped) after."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="convscope-server-") as tmp:
        server = start(
            service_command(port, model_dir, args), port=port, env=env, log_dir=Path(tmp)
        )
        try:
            if ready:
                server.wait_ready()
            yield server
        finally:
            server.stop()


def start_and_exit(model_dir: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a service that is expected to refuse to start; the caller reads its output."""
    return subprocess.Popen(
        service_command(free_port(), model_dir),
        cwd=ROOT,
        env=clean_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
