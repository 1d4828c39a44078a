"""docker-compose.yml run for real (Debian's docker-compose 1.29, or `docker compose`): the api
service turns healthy and classifies; the scale profile's three replicas behind nginx lose no
request under a steady load while one replica is stopped gracefully and another is killed with
SIGKILL, and the killed one, restarted by its restart policy, takes requests again.

Everything is published on loopback only, on ports Docker picks."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.docker

ADDRESS = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
CONCURRENCY = 6  # a bounded load: six clients back to back, each waiting for its answer


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def pictures_served(docker: Any, container: str) -> float:
    """The replica's own count of pictures classified (its /metrics, read inside it)."""
    script = (
        "import urllib.request as u;"
        "print(u.urlopen('http://127.0.0.1:8000/metrics', timeout=5).read().decode())"
    )
    text = docker("exec", container, "python", "-c", script).stdout
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("convscope_pictures_total")
    )


@dataclass
class Load:
    url: str
    body: bytes
    label: int
    outcomes: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self) -> None:
        # A heavier request (feature maps and CAM) keeps several in flight on every replica.
        url = f"{self.url}/v1/classify?cam=true&feature_maps=true"
        with httpx.Client(timeout=30) as http:
            while not self.stop.is_set():
                try:
                    r = http.post(url, content=self.body, headers={"content-type": "image/png"})
                    ok = (
                        r.status_code == 200
                        and r.json()["results"][0]["predictions"][0]["index"] == self.label
                    )
                    outcome = "ok" if ok else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as e:
                    outcome = f"{type(e).__name__}: {e}"
                with self.lock:
                    self.outcomes[outcome] += 1

    def ok(self) -> int:
        with self.lock:
            return self.outcomes["ok"]

    def wait_for(self, more: int, timeout: float = 60) -> None:
        target = self.ok() + more
        deadline = time.monotonic() + timeout
        while self.ok() < target:
            assert time.monotonic() < deadline, f"the load stalled: {dict(self.outcomes)}"
            time.sleep(0.05)


@contextmanager
def steady_load(url: str, body: bytes, label: int) -> Iterator[Load]:
    load = Load(url, body, label)
    threads = [threading.Thread(target=load.client) for _ in range(CONCURRENCY)]
    for t in threads:
        t.start()
    try:
        yield load
    finally:
        load.stop.set()
        for t in threads:
            t.join(timeout=60)


def test_compose_up_api_turns_healthy_and_classifies(
    compose: Any,
    docker: Any,
    compose_published: Any,
    decisive_pictures: tuple[np.ndarray, np.ndarray],
) -> None:
    compose("up", "-d", "--no-build", "api", timeout=300)
    (container,) = compose.containers("api")
    # The image's own health check at its own pace (every 10 s).
    docker.wait_healthy(container, timeout=120)
    url = compose_published(compose, "api", 8000)
    assert url.startswith("http://127.0.0.1:")
    images, labels = decisive_pictures
    r = httpx.post(
        f"{url}/v1/classify", content=png(images[0]), headers={"content-type": "image/png"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["predictions"][0]["index"] == labels[0]
    # The file's hardening and limits are what the engine runs (--compatibility: deploy.*).
    host = docker.inspect(
        "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} "
        "{{.HostConfig.CapDrop}} {{.Config.User}} {{.HostConfig.RestartPolicy.Name}}",
        container,
    )
    assert host.split() == [
        "true", "2000000000", str(1 << 30), "[ALL]", "10001:10001", "unless-stopped"
    ]  # fmt: skip


def test_scale_profile_loses_no_request_when_replicas_stop_or_are_killed(
    compose: Any,
    docker: Any,
    compose_published: Any,
    decisive_pictures: tuple[np.ndarray, np.ndarray],
    measure: Any,
) -> None:
    compose("--profile", "scale", "up", "-d", "--no-build", "--scale", "api-pool=3", "proxy")
    replicas = compose.containers("api-pool")
    assert len(replicas) == 3
    for replica in replicas:
        docker.wait_healthy(replica, timeout=120)
    (proxy,) = compose.containers("proxy")
    docker.wait_healthy(proxy, timeout=60)
    url = compose_published(compose, "proxy", 8080)
    images, labels = decisive_pictures
    stopped, killed, _ = replicas
    started = time.monotonic()
    with steady_load(url, png(images[0]), int(labels[0])) as load:
        load.wait_for(50)
        assert all(pictures_served(docker, r) > 0 for r in replicas), "nginx spreads the load"

        # A graceful stop (SIGTERM, as on a rolling update): the replica drains and exits 0.
        docker("stop", "-t", "30", stopped, timeout=60)
        assert docker.inspect("{{.State.ExitCode}}", stopped) == "0"
        load.wait_for(100)
        docker("start", stopped)
        docker.wait_healthy(stopped, timeout=120)

        # SIGKILL to the server (as the kernel's OOM killer would): its requests in flight are
        # cut off, nginx sends them to another replica, and Docker restarts it.
        ip = docker.inspect(ADDRESS, killed)
        os.kill(int(docker.inspect("{{.State.Pid}}", killed)), signal.SIGKILL)
        load.wait_for(100)
        deadline = time.monotonic() + 60
        while docker.inspect("{{.RestartCount}}", killed) == "0":
            assert time.monotonic() < deadline, "the killed replica was not restarted"
            time.sleep(0.2)
        docker.wait_healthy(killed, timeout=120)
        rejoined = time.monotonic()
        before = pictures_served(docker, killed)
        while pictures_served(docker, killed) <= before:
            assert time.monotonic() < rejoined + 60, (
                f"the restarted replica takes no requests (address {ip} before, "
                f"{docker.inspect(ADDRESS, killed)} now)"
            )
            time.sleep(0.5)
        rejoin_s = time.monotonic() - rejoined
        load.wait_for(50)
    seconds = time.monotonic() - started
    outcomes = dict(load.outcomes)
    total = sum(outcomes.values())
    proxy_log = docker.logs(proxy)
    retried = sum(
        "upstream" in line and ("[error]" in line or "[warn]" in line)
        for line in proxy_log.splitlines()
    )
    measure(
        "compose scale: requests",
        f"{total} in {seconds:.0f} s at concurrency {CONCURRENCY}, {total - load.ok()} lost; "
        f"{retried} upstream errors nginx retried; rejoined {rejoin_s:.1f} s after healthy",
    )
    assert outcomes == {"ok": total}, outcomes
