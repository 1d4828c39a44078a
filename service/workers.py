"""Several server processes on one port, forked by a supervisor after the imports.

``python -m service`` with more than one worker imports the service, checks every model once,
binds the listening socket and forks the workers. Each inherits the socket and the imported
modules (copy-on-write: no second import, shared pages), loads its own onnxruntime sessions and
batcher, and accepts connections on the shared socket. The supervisor serves nothing; it
- forwards SIGHUP (model reload) and SIGTERM/SIGINT (drain) to every worker; on a stop it waits
  for them and exits 0 when each drained and exited cleanly;
- restarts a worker that dies (a crash, the OOM killer), after a pause that grows while
  restarted workers keep dying young; a worker of the first start that cannot start (exit 3)
  stops the whole service instead;
- gives each worker a parent-death signal, so no orphan keeps serving if it is killed itself;
- owns the folder where the workers keep their metrics (prometheus_client's multiprocess mode):
  every /metrics answer, whichever worker gives it, adds up all of them (service/metrics.py).

No threads run in the supervisor (``fork`` copies only the calling thread: a lock held by another
thread would stay locked forever in the child), and all its signals are taken synchronously with
``sigtimedwait``, so none can arrive between a check and a fork.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("service.workers")

SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
STARTUP_FAILED = 3  # a worker's exit status when its app did not start (a model failed to load)
YOUNG_S = 10.0  # a worker that dies younger than this makes the next restart wait longer
FIRST_PAUSE_S, MAX_PAUSE_S = 0.5, 30.0
KILL_AFTER_S = 10.0  # past the graceful-shutdown time, leftover workers are killed
PR_SET_PDEATHSIG = 1


MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def shared_metrics() -> Iterator[Path]:
    """A private, empty folder for the workers' metric files, removed at exit.

    Must be entered before prometheus_client is imported: it picks its storage at import time.
    An operator's own PROMETHEUS_MULTIPROC_DIR is used instead, emptied of old files at start.
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError("shared_metrics() must come before prometheus_client is imported")
    given = os.environ.get(MULTIPROC_DIR)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.db"):
            old.unlink(missing_ok=True)
        yield folder
        return
    folder = Path(tempfile.mkdtemp(prefix="convscope-metrics-"))
    os.environ[MULTIPROC_DIR] = str(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _exit(code: int) -> None:
    """End a forked child now (no atexit, no parent's cleanup), its output flushed first."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def in_child(work: Callable[[], int]) -> int:
    """Run ``work`` in a forked child and return its exit status: whatever it loads (an
    onnxruntime session, its threads, its memory) goes with it, not into the supervisor."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = work()
        except BaseException:
            traceback.print_exc()
        finally:
            _exit(code)
    while True:
        try:
            return exit_status(os.waitpid(pid, 0)[1])
        except InterruptedError:  # pragma: no cover - retried by Python itself since 3.5
            continue


@dataclass
class Worker:
    index: int
    pid: int
    started: float


def _die_with_parent() -> None:
    """Linux: the kernel sends this process SIGTERM when the supervisor dies (even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def exit_status(status: int) -> int:
    """A waitpid status as a shell would show it: the exit code, or 128 + the signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Supervisor:
    """Forks ``count`` workers that each run ``serve(index)`` (its return value is the worker's
    exit status) and keeps them running until a stop signal; ``run`` returns the exit status."""

    def __init__(
        self,
        count: int,
        serve: Callable[[int], int],
        graceful_s: float,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.count, self.serve, self.graceful_s = count, serve, graceful_s
        self.on_exit = on_exit  # called with a worker's index once it has exited
        self.workers: dict[int, Worker] = {}
        self.pause = dict.fromkeys(range(count), FIRST_PAUSE_S)
        self.restart_at: dict[int, float] = {}  # index -> when its replacement starts
        self.first_start = True
        self.stopping_since: float | None = None
        self.status = 0

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            for index in range(self.count):
                self._spawn(index)
            while self.workers or (self.restart_at and self.stopping_since is None):
                self._wait_for_signal()
                self._reap()
                self._restart_due()
                self._kill_overdue()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        return self.status

    def _spawn(self, index: int) -> None:
        supervisor = os.getpid()  # 1 in a container, where the supervisor is the init process
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for sig in SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
                _die_with_parent()
                if os.getppid() != supervisor:  # it died before the line above took effect
                    os._exit(1)
                code = self.serve(index)
            except BaseException:
                traceback.print_exc()
            finally:
                _exit(code)
        self.workers[pid] = Worker(index, pid, time.monotonic())
        log.debug("worker %d started (pid %d)", index, pid)

    def _timeout(self) -> float:
        now = time.monotonic()
        waits = [at - now for at in self.restart_at.values()]
        if self.stopping_since is not None:
            waits.append(self.stopping_since + self.graceful_s + KILL_AFTER_S - now)
        return max(0.01, min([1.0, *waits]))

    def _wait_for_signal(self) -> None:
        info = signal.sigtimedwait(SIGNALS, self._timeout())
        while info is not None:  # take every pending signal before acting on the children
            self._on_signal(info.si_signo)
            info = signal.sigtimedwait(SIGNALS, 0)

    def _on_signal(self, signo: int) -> None:
        if signo == signal.SIGHUP and self.stopping_since is None:
            self._forward(signal.SIGHUP)
        elif signo in (signal.SIGTERM, signal.SIGINT):
            if self.stopping_since is None:
                self.stopping_since = time.monotonic()
                self.restart_at.clear()
                # SIGTERM, even for SIGINT: a worker in the terminal's process group also gets
                # the terminal's SIGINT, and a second SIGINT would make uvicorn skip the drain.
                self._forward(signal.SIGTERM)
            elif signo == signal.SIGINT:
                self._forward(signal.SIGINT)  # a second Ctrl-C: stop without waiting

    def _forward(self, sig: signal.Signals) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is not None:
                if self.on_exit is not None:
                    self.on_exit(worker.index)
                self._exited(worker, exit_status(status))

    def _exited(self, worker: Worker, code: int) -> None:
        if self.stopping_since is not None:
            if code != 0:
                log.warning("worker %d (pid %d) exited with %d", worker.index, worker.pid, code)
                self.status = self.status or code
            return
        if code == STARTUP_FAILED and self.first_start:
            # Its own line said why; the others would fail alike. Stop them all.
            self.status = code
            self.stopping_since = time.monotonic()
            self.restart_at.clear()
            self._forward(signal.SIGTERM)
            return
        lived = time.monotonic() - worker.started
        pause = self.pause[worker.index] if lived < YOUNG_S else 0.0
        self.pause[worker.index] = min(MAX_PAUSE_S, 2 * pause) if pause else FIRST_PAUSE_S
        log.error(
            "worker %d (pid %d) exited with %d after %.1f s; restarting it%s",
            worker.index,
            worker.pid,
            code,
            lived,
            f" in {pause:.1f} s" if pause else "",
            extra={"event": "worker_exit", "worker": worker.index, "status": code},
        )
        self.restart_at[worker.index] = time.monotonic() + pause

    def _restart_due(self) -> None:
        if self.stopping_since is not None:
            return
        now = time.monotonic()
        for index, at in list(self.restart_at.items()):
            if at <= now:
                del self.restart_at[index]
                self.first_start = False
                self._spawn(index)

    def _kill_overdue(self) -> None:
        if self.stopping_since is None or not self.workers:
            return
        if time.monotonic() - self.stopping_since > self.graceful_s + KILL_AFTER_S:
            log.error("workers %s still running after the drain: killed", sorted(self.workers))
            self._forward(signal.SIGKILL)
            self.status = self.status or 1
