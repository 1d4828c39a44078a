"""The supervisor (service/workers.py) with real forked workers that are small Python functions:
signals reach every worker, a dead worker is replaced, a worker that cannot start in the first
start stops the whole service, and the exit status says how the workers ended."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from service.workers import exit_status, in_child

REPO = Path(__file__).resolve().parents[2]

# A supervisor of 2 workers. Each worker notes "<index> start|hup|term <pid>" in the file
# (appends of one short line are atomic) and stops on SIGTERM with the status FINAL[index].
SCRIPT = """
import os, signal, sys, time
from service.workers import Supervisor
LOG, MODE = sys.argv[1], sys.argv[2]

def note(index, what):
    with open(LOG, "a") as f:
        f.write(f"{index} {what} {os.getpid()}\\n")

def serve(index):
    stop = []  # the handlers first: a SIGTERM right after "start" must still be noted
    signal.signal(signal.SIGHUP, lambda *_: note(index, "hup"))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    starts = sum(1 for ln in open(LOG) if ln.startswith(f"{index} start"))
    note(index, "start")
    if MODE == "cannot-start" and index == 1:
        return 3
    if MODE == "crash-once" and index == 0 and starts == 0:
        os._exit(7)
    while not stop:
        time.sleep(0.01)
    note(index, "term")
    return 5 if MODE == "unclean" and index == 1 else 0

open(LOG, "a").close()
sys.exit(Supervisor(2, serve, graceful_s=5).run())
"""


def start(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[bytes], Path]:
    """The supervisor; its own output goes to tmp_path/output."""
    log = tmp_path / "events"
    with (tmp_path / "output").open("wb") as output:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SCRIPT), str(log), mode],
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return proc, log


def events(log: Path) -> list[list[str]]:
    return [ln.split() for ln in log.read_text().splitlines()] if log.exists() else []


def wait_events(log: Path, what: str, count: int, timeout: float = 30.0) -> list[list[str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in events(log) if e[1] == what]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not {count} x {what!r} in {timeout} s: {events(log)}")


def test_sighup_and_sigterm_reach_every_worker_and_a_clean_drain_exits_0(tmp_path: Path) -> None:
    proc, log = start(tmp_path, "serve")
    started = wait_events(log, "start", 2)
    proc.send_signal(signal.SIGHUP)
    hups = wait_events(log, "hup", 2)
    assert {e[2] for e in hups} == {e[2] for e in started}  # each worker once
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, (tmp_path / "output").read_text()
    assert len(wait_events(log, "term", 2)) == 2


def test_a_worker_that_ends_badly_in_the_drain_makes_the_exit_non_zero(tmp_path: Path) -> None:
    proc, log = start(tmp_path, "unclean")
    wait_events(log, "start", 2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 5


def test_a_dead_worker_is_replaced_and_the_others_keep_running(tmp_path: Path) -> None:
    proc, log = start(tmp_path, "crash-once")
    starts = wait_events(log, "start", 3)
    assert sorted(e[0] for e in starts) == ["0", "0", "1"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    output = (tmp_path / "output").read_text()
    assert "worker 0" in output and "exited with 7" in output and "restarting it" in output
    terms = wait_events(log, "term", 2)
    assert {e[0] for e in terms} == {"0", "1"}  # the replacement and the first worker 1


def test_a_worker_that_cannot_start_stops_the_first_start(tmp_path: Path) -> None:
    proc, log = start(tmp_path, "cannot-start")
    assert proc.wait(timeout=30) == 3
    assert [e[0] for e in events(log) if e[1] == "start"].count("1") == 1  # not restarted
    # the other worker was stopped, not left: it noted "term" if it had started (under load the
    # supervisor may stop it before it starts), and no process of this supervisor is running
    started = {e[0] for e in events(log) if e[1] == "start"} - {"1"}
    assert started <= {e[0] for e in events(log) if e[1] == "term"}
    assert not [c for c in Path("/proc").glob("[0-9]*/cmdline") if _runs(c, str(log))]


def _runs(cmdline: Path, arg: str) -> bool:
    try:
        return arg.encode() in cmdline.read_bytes().split(b"\0")
    except OSError:
        return False


def test_in_child_returns_the_status_and_keeps_the_parent_clean() -> None:
    def load() -> int:
        sys.modules["loaded_in_the_child"] = sys  # what the child imports stays there
        return 4

    assert in_child(load) == 4
    assert "loaded_in_the_child" not in sys.modules
    assert in_child(lambda: 1 // 0) == 1  # an exception: status 1, traceback on stderr


@pytest.mark.parametrize(("status", "code"), [(0, 0), (3 << 8, 3), (signal.SIGKILL, 137)])
def test_exit_status_reads_like_a_shell(status: int, code: int) -> None:
    assert exit_status(status) == code
