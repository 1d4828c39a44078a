"""Reload: SIGHUP (and, when enabled, a file watch) swaps in new models; a corrupt new model is
refused while the old one keeps serving, with no failed request; reloads are logged and counted.
No HTTP endpoint loads, unloads or fetches models.

The service runs its default worker processes (one per core): /metrics adds up every worker's
reloads, so each count below is one per worker, which shows that the signal reached them all."""

from __future__ import annotations

import re
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from hardening_harness import png_bytes

from service.cpus import available_cpus
from tests.server import MODELS, Server, run_server

pytestmark = pytest.mark.e2e

onnx = pytest.importorskip("onnx")

NAME = "fashion-mnist"
W = float(available_cpus())  # the service's default number of workers


def copy_models(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / NAME
    folder.mkdir(parents=True)
    shutil.copy(MODELS / NAME / "model.onnx", folder / "model.onnx")
    return folder.parent


def with_version(version: str, path: Path) -> None:
    """The committed model with another version in its metadata, written in place atomically
    (write aside, then rename), as a deployment would."""
    model = onnx.load(MODELS / NAME / "model.onnx")
    props = {p.key: p.value for p in model.metadata_props}
    props["version"] = f'"{version}"'
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    aside = path.with_suffix(".tmp")
    onnx.save(model, aside)
    aside.replace(path)


class Traffic:
    """Classifies without pause in a thread; every status (or transport error) is counted."""

    def __init__(self, url: str) -> None:
        self.url, self.seen = url, Counter[str]()
        self.versions = Counter[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    r = client.post("/v1/classify", files={"file": ("a.png", png_bytes())})
                    self.seen[str(r.status_code)] += 1
                    if r.status_code == 200:
                        self.versions[r.json()["model"]["version"]] += 1
                except httpx.HTTPError as exc:
                    self.seen[type(exc).__name__] += 1

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def version(server: Server) -> str:
    models = httpx.get(f"{server.url}/v1/models", timeout=10).json()["models"]
    return next(m["version"] for m in models if m["name"] == NAME)


def reloads(server: Server) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    found = re.findall(r'^convscope_model_reloads_total\{result="(\w+)"\} (\S+)$', text, re.M)
    return {result: float(n) for result, n in found}


def wait_for(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


def test_sighup_reloads_refuses_a_corrupt_model_and_never_fails_a_request(tmp_path: Path) -> None:
    model_dir = copy_models(tmp_path)
    path = model_dir / NAME / "model.onnx"
    with run_server(model_dir) as server, Traffic(server.url) as traffic:
        old = version(server)
        assert reloads(server) == {}

        # A corrupt model arrives: no watch is on, so nothing happens until SIGHUP.
        path.write_bytes(path.read_bytes()[:5000])
        time.sleep(1.0)
        assert "model reload" not in server.log() and "models reloaded" not in server.log()
        server.signal(signal.SIGHUP)
        log = server.wait_log("refused")
        line = next(ln for ln in log.splitlines() if "refused" in ln)
        assert str(path) in line and "Traceback" not in log, line
        wait_for(lambda: reloads(server).get("refused") == W)
        assert version(server) == old

        # A good one: swapped in.
        with_version("9.9.9-reloaded", path)
        server.signal(signal.SIGHUP)
        server.wait_log("models reloaded (SIGHUP)")
        wait_for(lambda: version(server) == "9.9.9-reloaded")
        wait_for(lambda: reloads(server) == {"refused": W, "ok": W})

        # Three in a row, each while the previous may still be loading: they queue, none fails.
        for _ in range(3):
            server.signal(signal.SIGHUP)
            time.sleep(0.3)
        wait_for(lambda: reloads(server).get("ok") == 4 * W)
        time.sleep(0.5)  # traffic on the last swapped-in session
    assert set(traffic.seen) == {"200"}, traffic.seen
    assert traffic.seen["200"] >= 20, traffic.seen
    assert set(traffic.versions) == {old, "9.9.9-reloaded"}, traffic.versions
    assert server.process.returncode == 0


def test_file_watch_reloads_when_enabled(tmp_path: Path) -> None:
    model_dir = copy_models(tmp_path)
    path = model_dir / NAME / "model.onnx"
    env = {"CONVSCOPE_RELOAD_WATCH": "true", "CONVSCOPE_RELOAD_POLL_S": "0.3"}
    with run_server(model_dir, env=env) as server, Traffic(server.url) as traffic:
        with_version("2.0.0-watched", path)
        wait_for(lambda: reloads(server).get("ok") == W)  # every worker, not just one
        assert version(server) == "2.0.0-watched"
        assert "models reloaded (file change)" in server.log()
        path.write_bytes(b"\x00" * 1000)  # a broken copy: refused, the watched model stays
        wait_for(lambda: reloads(server).get("refused") == W)
        assert version(server) == "2.0.0-watched"
        assert reloads(server) == {"ok": W, "refused": W}
    assert set(traffic.seen) == {"200"}, traffic.seen


def test_no_http_endpoint_manages_models(server: Server) -> None:
    spec = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    words = ("load", "unload", "reload", "repository", "fetch", "download", "upload")
    for path, operations in spec["paths"].items():
        assert not any(w in path.lower() for w in words), path
        for op in operations.values():
            assert not any(w in op.get("operationId", "").lower() for w in words), op
    for method, path in [
        ("POST", f"/v2/repository/models/{NAME}/load"),
        ("POST", f"/v2/repository/models/{NAME}/unload"),
        ("POST", "/v2/repository/index"),
        ("POST", "/v1/models"),
        ("PUT", f"/v1/models/{NAME}"),
        ("DELETE", f"/v1/models/{NAME}"),
    ]:
        status = httpx.request(method, f"{server.url}{path}", timeout=10).status_code
        assert status in (404, 405), (method, path, status)
