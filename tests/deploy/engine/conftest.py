"""The images built and run on a real Docker engine: the engine, the base, the images, containers
and Compose projects, handed out as fixtures (pytest runs with --import-mode=importlib, so test
modules cannot import this file).

No engine (no CLI, or no daemon answering `docker info`): every test here is skipped with one
line saying why, and the rest of the suite runs. .ci/run installs docker.io and starts dockerd.
Where python:3.11-slim cannot be pulled, deploy/docker/local-base.sh makes a base from Debian's
packages (reused when an earlier run left it, as are the image layers).

What is measured (sizes, build and start times) is printed in a "docker measurements" section
at the end of the run.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
LOCAL_BASE = ROOT / "deploy" / "docker" / "local-base.sh"
LOCAL_NGINX = ROOT / "deploy" / "docker" / "local-nginx.sh"
OFFICIAL_BASE = "python:3.11-slim"
LOCAL_BASE_NAME = "convscope-base:bookworm"
LOCAL_NGINX_NAME = "convscope-nginx:bookworm"
RUNTIME = "convscope:test"
TRAINER = "convscope-trainer:test"
# pip inside a build trusts this bundle (a build secret, never stored in a layer): behind a
# TLS-intercepting proxy it holds the proxy's CA, elsewhere the same public CAs as the image's.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
RUN_ID = uuid.uuid4().hex[:8]
LABEL = f"convscope.test={RUN_ID}"
MEASURED: dict[str, str] = {}  # printed by pytest_terminal_summary


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "docker: builds and runs the images on a real Docker engine (-m docker)"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASURED:
        terminalreporter.section("docker measurements")
        for key, value in MEASURED.items():
            terminalreporter.write_line(f"{key:<34} {value}")


def record(key: str, value: str) -> None:
    MEASURED[key] = value
    print(f"{key}: {value}")


def mb(size: float) -> str:
    return f"{size / 1e6:.1f} MB"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_cli() -> str | None:
    """CONVSCOPE_DOCKER, else Debian's /usr/bin/docker (docker.io: its `docker build` drives the
    daemon's own BuildKit; a newer CLI needs the buildx plugin for that), else PATH's."""
    if os.environ.get("CONVSCOPE_DOCKER"):
        return os.environ["CONVSCOPE_DOCKER"]
    if Path("/usr/bin/docker").is_file():
        return "/usr/bin/docker"
    return shutil.which("docker")


@dataclass
class Docker:
    cli: str
    server_version: str = ""

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.cli, *args], capture_output=True, text=True, timeout=timeout, input=input
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)}: exit {result.returncode}\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def build(self, *args: str, timeout: float = 1200) -> float:
        """`docker build` with BuildKit and the host's network (the package index; a wheel
        folder served on loopback), the CA bundle as a secret; returns the seconds it took."""
        secret = ["--secret", f"id=ca-certificates,src={HOST_CA}"] if HOST_CA.is_file() else []
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        start = time.monotonic()
        result = subprocess.run(
            [self.cli, "build", "--progress", "plain", "--network", "host", *secret, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=ROOT,
        )
        assert result.returncode == 0, f"docker build {' '.join(args)}:\n{result.stderr[-6000:]}"
        return time.monotonic() - start

    def inspect(self, template: str, *names: str, kind: str = "container") -> str:
        return self(kind, "inspect", "-f", template, *names).stdout.strip()

    def size(self, image: str) -> int:
        return int(self.inspect("{{.Size}}", image, kind="image"))

    def layers(self, image: str) -> list[str]:
        return self.inspect("{{range .RootFS.Layers}}{{.}} {{end}}", image, kind="image").split()

    def url(self, name: str, port: int = 8000) -> str:
        """The published loopback address of a container's port."""
        (line,) = self("port", name, f"{port}/tcp").stdout.split()[:1]
        return "http://" + line.replace("0.0.0.0", "127.0.0.1")

    def logs(self, name: str) -> str:
        result = self("logs", name, check=False)
        return result.stdout + result.stderr

    def health(self, name: str) -> str:
        return self.inspect("{{if .State.Health}}{{.State.Health.Status}}{{end}}", name)

    def wait_healthy(self, name: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while (status := self.health(name)) != "healthy":
            running = self.inspect("{{.State.Running}}", name)
            assert running == "true", f"{name} exited:\n{self.logs(name)[-3000:]}"
            assert time.monotonic() < deadline, f"{name} is {status!r} after {timeout} s"
            time.sleep(0.1)


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    cli = find_cli()
    if cli is None:
        pytest.skip("docker tests skipped: no docker CLI here (.ci/run installs docker.io)")
    try:
        info = subprocess.run(
            [cli, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"docker tests skipped: `docker info` failed ({e})")
    if info.returncode != 0 or not info.stdout.strip():
        reason = (info.stderr.strip().splitlines() or ["no answer"])[-1]
        pytest.skip(f"docker tests skipped: no Docker engine answers ({reason})")
    engine = Docker(cli, info.stdout.strip())
    record("engine", f"Docker {engine.server_version} ({cli})")
    yield engine
    # Everything this run started, whatever the tests left behind; the images stay (layer reuse).
    ids = engine("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
    if ids:
        engine("rm", "-f", "-v", *ids, check=False, timeout=120)


@pytest.fixture(scope="session")
def base_image(docker: Docker) -> str:
    """CONVSCOPE_DOCKER_BASE, else python:3.11-slim where it is there, else the Debian-built
    base (made by deploy/docker/local-base.sh, or reused)."""
    name = os.environ.get("CONVSCOPE_DOCKER_BASE")
    if name:
        docker("image", "inspect", name)
    elif docker("image", "inspect", OFFICIAL_BASE, check=False).returncode == 0:
        name = OFFICIAL_BASE
    else:
        name = LOCAL_BASE_NAME
        start = time.monotonic()
        result = subprocess.run(
            ["sh", str(LOCAL_BASE), name],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "PATH": f"{Path(docker.cli).parent}:{os.environ['PATH']}"},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        record("base image", f"{name}: {result.stdout.strip()} ({time.monotonic() - start:.0f} s)")
    record("base image size", f"{name}: {mb(docker.size(name))}")
    return name


@pytest.fixture(scope="session")
def runtime_image(docker: Docker, base_image: str) -> str:
    seconds = docker.build("--build-arg", f"PYTHON_IMAGE={base_image}", "-t", RUNTIME, ".")
    record("runtime image build", f"{seconds:.0f} s (layers from an earlier run are reused)")
    return RUNTIME


@dataclass
class Container:
    name: str
    url: str = ""
    started: float = 0.0  # time.monotonic() just before `docker run`
    ready_s: float = 0.0


@pytest.fixture(scope="session")
def start_container(docker: Docker) -> Any:
    """``start(image, *docker_run_options, command=[...], wait=True)``: a detached container
    hardened as compose runs it (read-only root, a tmpfs /tmp, no capabilities), its port 8000
    published on a free loopback port; with wait, returned once /readyz answers 200."""

    def start(
        image: str, *options: str, command: tuple[str, ...] = (), wait: bool = True
    ) -> Container:
        name = f"convscope-test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
        hardened = ["--read-only", "--tmpfs", "/tmp:size=128m,mode=1777", "--cap-drop", "ALL"]
        hardened += ["--security-opt", "no-new-privileges:true"]
        container = Container(name, started=time.monotonic())
        docker(
            "run", "-d", "--name", name, "--label", LABEL, "-p", "127.0.0.1::8000",
            *hardened, *options, image, *command,
        )  # fmt: skip
        container.url = docker.url(name)
        if wait:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(f"{container.url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass  # docker-proxy accepts before the server listens, then hangs up
                running = docker.inspect("{{.State.Running}}", name)
                assert running == "true", f"{name} exited:\n{docker.logs(name)[-3000:]}"
                assert time.monotonic() < deadline, f"{name} not ready:\n{docker.logs(name)}"
                time.sleep(0.02)
            container.ready_s = time.monotonic() - container.started
        return container

    return start


@dataclass
class HostService:
    url: str
    ready_s: float  # from Popen to /readyz 200


@contextmanager
def host_service() -> Iterator[HostService]:
    """The service as a process on this machine (`python -m service`, the committed models), for
    comparing the container's answers with."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    cmd = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        started = time.monotonic()
        process = subprocess.Popen(
            [*cmd, "--model-dir", str(ROOT / "models")],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                assert process.poll() is None, "the host service exited"
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the host service was not ready in 90 s"
                time.sleep(0.02)
            yield HostService(url, time.monotonic() - started)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def start_host() -> Any:
    """``with start_host() as host``: a service process of its own, its start timed now."""
    return host_service


@pytest.fixture(scope="session")
def host() -> Iterator[HostService]:
    with host_service() as service:
        yield service


def compose_command() -> list[str] | None:
    """Debian's docker-compose (1.x) or the v2 plugin, whichever answers."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    cli = find_cli()
    if cli and subprocess.run([cli, "compose", "version"], capture_output=True).returncode == 0:
        return [cli, "compose"]
    return None


@dataclass
class Compose:
    """One Compose project of docker-compose.yml, on free loopback ports, images built here."""

    command: list[str]
    env: dict[str, str]
    project: str
    files: list[str] = field(default_factory=list)

    def __call__(
        self, *args: str, timeout: float = 180, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        # --compatibility: Compose 1.x applies deploy.replicas and deploy.resources with it.
        cmd = [*self.command, "--compatibility", "-p", self.project, "-f", "docker-compose.yml"]
        result = subprocess.run(
            [*cmd, *args], capture_output=True, text=True, timeout=timeout, env=self.env, cwd=ROOT
        )
        if check and result.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)}: {result.returncode}\n{result.stderr}")
        return result

    def containers(self, service: str) -> list[str]:
        return self("ps", "-q", service).stdout.split()


@pytest.fixture(scope="session")
def nginx_image(docker: Docker, base_image: str) -> str:
    """nginx for the scale profile: nginx:1.28-alpine when it is there (compose's default),
    else Debian's nginx-light on the base (deploy/docker/local-nginx.sh)."""
    official = "nginx:1.28-alpine"
    if docker("image", "inspect", official, check=False).returncode == 0:
        return official
    env = {**os.environ, "PATH": f"{Path(docker.cli).parent}:{os.environ['PATH']}"}
    env["DOCKER_BUILDKIT"] = "1"
    result = subprocess.run(
        ["sh", str(LOCAL_NGINX), base_image, LOCAL_NGINX_NAME],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return LOCAL_NGINX_NAME


@pytest.fixture
def compose(docker: Docker, runtime_image: str, nginx_image: str) -> Iterator[Compose]:
    command = compose_command()
    if command is None:
        pytest.skip("compose tests skipped: no docker-compose and no `docker compose`")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    env |= {
        "CONVSCOPE_IMAGE": runtime_image,
        "CONVSCOPE_NGINX_IMAGE": nginx_image,
        # Docker picks free host ports, on loopback.
        "CONVSCOPE_PUBLISH": "127.0.0.1:",
        "CONVSCOPE_PROXY_PUBLISH": "127.0.0.1:",
    }
    project = Compose(command, env, f"convscopetest{RUN_ID}{uuid.uuid4().hex[:4]}")
    try:
        yield project
    finally:
        project("down", "-v", "--remove-orphans", "-t", "30", check=False, timeout=300)


def published(compose: Compose, service: str, port: int) -> str:
    out = compose("port", service, str(port)).stdout.strip()
    host, _, number = out.rpartition(":")
    assert re.fullmatch(r"\d+", number), out
    return f"http://{host.replace('0.0.0.0', '127.0.0.1')}:{number}"


@pytest.fixture(scope="session")
def compose_published() -> Any:
    """``published(compose, service, port)``: the loopback URL a service's port is published on."""
    return published


@pytest.fixture(scope="session")
def measure() -> Any:
    """``measure(key, value)``: a figure for the "docker measurements" section."""
    return record
