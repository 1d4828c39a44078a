"""The process model as a user meets it: ``python -m service`` starts one worker per core behind
one port; /metrics adds up every worker; a worker that dies is replaced while the others serve;
SIGTERM drains them all and exits 0 leaving no metric files behind; killing the supervisor
itself takes the workers with it; a pool of kept-alive connections landed on one worker is
spread over both.

Which worker takes a new connection is the kernel's choice. To send requests to a known worker,
the others are paused (SIGSTOP): a paused process accepts nothing, so the running one takes the
connection."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hardening_harness import png_bytes

from service.cpus import available_cpus
from tests.server import Server, children, free_port, run_server, service_command, start

pytestmark = pytest.mark.e2e

WORKERS = 2


def classify(server: Server) -> dict:
    # A new connection each time (no keep-alive), so that any running worker may take it.
    response = httpx.post(
        f"{server.url}/v1/classify",
        content=png_bytes(),
        headers={"content-type": "image/png"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def classified(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    found = re.findall(
        r'^convscope_http_requests_total\{method="POST",route="(\S+)",status="200"\} (\S+)$',
        text,
        re.M,
    )
    return sum(float(n) for route, n in found if route.endswith("classify"))


@contextlib.contextmanager
def only(worker: int, workers: list[int]) -> Iterator[None]:
    """Every worker but ``worker`` paused: new connections go to ``worker``."""
    paused = [pid for pid in workers if pid != worker]
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may linger if nothing reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_for(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


def metric_folders(server: Server) -> set[Path]:
    """The folders of the metric files the workers have mapped."""
    folders = set()
    for pid in children(server.process.pid):
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            if line.endswith(".db"):
                folders.add(Path(line.split()[-1]).parent)
    return folders


def test_the_default_is_one_worker_per_core(tmp_path: Path) -> None:
    with run_server() as server:
        assert len(children(server.process.pid)) == available_cpus()


def test_metrics_add_up_every_worker_and_survive_a_dead_one() -> None:
    with run_server(env={"CONVSCOPE_WORKERS": str(WORKERS)}) as server:
        workers = children(server.process.pid)
        assert len(workers) == WORKERS
        before = classified(server)
        for count, worker in zip((3, 5), workers, strict=True):
            with only(worker, workers):
                for _ in range(count):
                    classify(server)
        (folder,) = metric_folders(server)  # one, private to this service
        assert folder.name.startswith("convscope-metrics-")
        # Whichever worker answers /metrics, it counts what both served.
        for _ in range(6):
            assert classified(server) == before + 8

        # A worker killed: another takes its place; its requests still count; none fails.
        os.kill(workers[0], signal.SIGKILL)

        def replaced() -> bool:
            now = children(server.process.pid)
            return len(now) == WORKERS and workers[0] not in now

        wait_for(replaced)
        (replacement,) = set(children(server.process.pid)) - set(workers)
        with only(replacement, children(server.process.pid)):
            classify(server)
        assert classified(server) == before + 9
        log = server.wait_log(f"worker 0 (pid {workers[0]}) exited with 137")
        assert "restarting it" in log

        server.signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0, server.log()[-2000:]
        assert not any(running(p) for p in children(server.process.pid))
        assert not folder.exists(), "the metric files were left behind"


def established(pid: int, port: int) -> int:
    """How many connections to ``port`` the process ``pid`` holds open (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:  # ESTABLISHED
                count += 1
    return count


def test_kept_alive_connections_spread_over_the_workers() -> None:
    """A client that opens its pool at once (wrk, a proxy) can land all of it on one worker,
    as here with the other paused: answers with `Connection: close` move the surplus to the
    other worker, the clients reconnect on their own, and once even the moving stops."""
    import http.client

    with run_server(env={"CONVSCOPE_WORKERS": str(WORKERS)}) as server:
        workers = children(server.process.pid)
        port = int(server.url.rsplit(":", 1)[1])
        pool = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(8)]
        with only(workers[0], workers):
            for connection in pool:
                connection.connect()
            wait_for(lambda: established(workers[0], port) == 8, timeout=10)
        assert established(workers[1], port) == 0

        def round_of_requests() -> int:
            """One request on each connection; how many answers said `Connection: close`."""
            closes = 0
            for connection in pool:
                headers = {"content-type": "image/png"}
                connection.request("POST", "/v1/classify", png_bytes(), headers)
                response = connection.getresponse()
                assert response.status == 200, response.read()
                assert json.loads(response.read())["results"][0]["predictions"]
                closes += response.getheader("connection", "").lower() == "close"
            return closes

        moved, counts = 0, [8, 0]
        for _ in range(20):  # a reconnect may land on the busier worker again: a few rounds
            moved += round_of_requests()
            time.sleep(0.2)  # the closed connections gone from /proc
            counts = [established(worker, port) for worker in workers]
            if counts == [4, 4]:
                break
        assert counts == [4, 4], counts
        assert moved >= 4
        # Even: no more moving.
        assert round_of_requests() + round_of_requests() == 0
        assert [established(worker, port) for worker in workers] == [4, 4]
        for connection in pool:
            connection.close()
        assert "Traceback" not in server.log()


def test_sigterm_drains_a_request_on_every_worker() -> None:
    """A slow upload in flight on each worker when SIGTERM comes: all finish with 200."""
    import threading

    with run_server(env={"CONVSCOPE_WORKERS": str(WORKERS)}) as server:
        workers = children(server.process.pid)
        data, results = png_bytes(), list[int]()

        def slow_body() -> Iterator[bytes]:
            for i in range(0, len(data), 16):
                yield data[i : i + 16]
                time.sleep(2.0 * 16 / len(data))

        clients = []
        for worker in workers:
            with only(worker, workers):
                client = httpx.Client(base_url=server.url, timeout=60)
                client.get("/healthz")  # the connection is now this worker's
                clients.append(client)

        def post(client: httpx.Client) -> None:
            r = client.post(
                "/v1/classify", content=slow_body(), headers={"content-type": "image/png"}
            )
            results.append(r.status_code)

        threads = [threading.Thread(target=post, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        time.sleep(0.6)  # mid-body on both workers
        server.signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0, server.log()[-2000:]
        for t in threads:
            t.join(timeout=30)
        assert results == [200] * WORKERS, results
        assert "Traceback" not in server.log()


def test_killing_the_supervisor_takes_the_workers_with_it() -> None:
    with run_server(env={"CONVSCOPE_WORKERS": str(WORKERS)}) as server:
        workers = children(server.process.pid)
        server.signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        wait_for(lambda: not any(running(p) for p in workers), timeout=20)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/healthz", timeout=2)


def test_workers_run_under_a_supervisor_that_is_pid_1() -> None:
    """In a container the supervisor is the init process (PID 1) of its PID namespace, as here
    under ``unshare --pid``: its workers must serve there too, not take it for a dead parent."""
    try:
        probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True)
    except FileNotFoundError:
        pytest.skip("no unshare (util-linux)")
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here: {probe.stderr.decode().strip()}")
    port = free_port()
    command = ["unshare", "--pid", "--fork", "--kill-child", *service_command(port)]
    server = start(command, port=port, env={"CONVSCOPE_WORKERS": str(WORKERS)})
    try:
        server.wait_ready()
        (supervisor,) = children(server.process.pid)
        status = Path(f"/proc/{supervisor}/status").read_text()
        assert re.search(r"^NSpid:\t\d+\t1$", status, re.M), status  # PID 1 in its namespace
        workers = children(supervisor)
        assert len(workers) == WORKERS
        time.sleep(2)  # long enough for a worker that exits at once to have done so
        assert children(supervisor) == workers, server.log()[-2000:]
        for worker in workers:
            with only(worker, workers):
                assert classify(server)["results"][0]["predictions"]
        assert "exited with" not in server.log()
        os.kill(supervisor, signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0, server.log()[-2000:]
    finally:
        server.stop()
