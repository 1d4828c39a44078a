"""Smoke test of a slimmed venv (the Docker builder stage runs it right after slim-venv.sh):
import every native extension module in it, then start the service as the image does
(`python -m service`), classify one picture over HTTP and stop it with SIGTERM.

Usage: VENV/bin/python smoke.py MODEL_DIR. Exit status 0 when all of that worked. Standard
library plus the venv's own packages only: the runtime venv has no test tools."""

from __future__ import annotations

import faulthandler
import importlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def import_extensions() -> int:
    """Import each native extension module: a library that stripping broke fails here, with its
    name, rather than on the first request that happens to need it."""
    site = Path(sysconfig.get_path("purelib"))
    count = 0
    for path in sorted(site.rglob("*.so")):
        rel = path.relative_to(site)
        extension = ".cpython-" in path.name or ".abi3." in path.name
        if rel.parts[0].endswith(".libs") or not extension:
            continue  # vendored C libraries: loaded by the modules that link them
        name = ".".join([*rel.parts[:-1], path.name.split(".")[0]])
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise SystemExit(f"smoke: cannot import {name}: {e}") from e
        count += 1
    return count


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def png_picture() -> bytes:
    from PIL import Image, ImageDraw  # the venv's Pillow: its codecs were stripped too

    image = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(image).rectangle((6, 4, 21, 24), fill=220)  # a light shape on black
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def classify(model_dir: Path) -> dict[str, Any]:
    port = free_port()
    env = {
        **os.environ,
        "CONVSCOPE_HOST": "127.0.0.1",
        "CONVSCOPE_PORT": str(port),
        "CONVSCOPE_MODEL_DIR": str(model_dir),
    }
    base = f"http://127.0.0.1:{port}"
    # cwd: an empty folder, so `-m service` finds the installed package, not a source tree.
    with tempfile.TemporaryDirectory() as cwd:
        server = subprocess.Popen([sys.executable, "-m", "service"], env=env, cwd=cwd)
        try:
            deadline = time.monotonic() + 60
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"smoke: the server exited with {server.returncode}")
                try:
                    if get(f"{base}/readyz")[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("smoke: /readyz not 200 within 60 s")
                time.sleep(0.2)
            request = urllib.request.Request(
                f"{base}/v1/classify?feature_maps=true&cam=true",
                data=png_picture(),
                headers={"Content-Type": "image/png"},
            )
            with urllib.request.urlopen(request, timeout=30) as r:
                body: dict[str, Any] = json.load(r)
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=30)
    # uvicorn re-raises the SIGTERM it handled once it has drained, so -15 is a clean stop.
    if code not in (0, -signal.SIGTERM):
        raise SystemExit(f"smoke: the server exited with {code} on SIGTERM")
    return body


def main() -> None:
    faulthandler.enable()  # a library that crashes on load still leaves a traceback
    # Byte-code caches come from the server process alone (where the builder lets it write them):
    # the image keeps those of the modules the server imports, not of everything imported here.
    sys.dont_write_bytecode = True
    count = import_extensions()
    body = classify(Path(sys.argv[1]))
    result = body["results"][0]
    best = result["predictions"][0]
    if not (result["feature_maps"] and result["cam"]):
        raise SystemExit("smoke: feature maps or CAM missing from the answer")
    print(f"smoke: {count} extension modules import; classified as {best['label']!r}")


if __name__ == "__main__":
    main()
