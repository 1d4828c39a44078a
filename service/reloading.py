"""Model reloads without a restart: on SIGHUP, and on file changes when ``reload_watch`` is on.

A reload loads the whole model folder again off the event loop and swaps it in only if every
model loads (``Registry.reload``); otherwise the models already running keep serving and the
refusal is logged with the file and the problem. Requests in flight finish on the session they
started with. Reloads are counted in /metrics (``convscope_model_reloads_total{result}``).
No HTTP endpoint can trigger a reload: only the process owner can (a signal, or the files).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from .metrics import Metrics
from .registry import MODEL_FILE, Registry
from .settings import Settings

log = logging.getLogger(__name__)

Signature = dict[str, tuple[int, int]]


def model_files(model_dir: Path) -> Signature:
    """What a change looks like: every model folder's model.onnx (mtime, size), or (-1, -1)."""
    files: Signature = {}
    try:
        folders = [p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return files
    for folder in folders:
        try:
            stat = (folder / MODEL_FILE).stat()
            files[folder.name] = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            files[folder.name] = (-1, -1)
    return files


class Reloader:
    def __init__(self, registry: Registry, metrics: Metrics, settings: Settings) -> None:
        self.registry, self.metrics, self.settings = registry, metrics, settings
        self._lock = asyncio.Lock()  # one reload at a time; a second waits, then loads afresh

    async def reload(self, reason: str) -> bool:
        async with self._lock:
            before = ", ".join(f"{m.name} {m.spec.version}" for m in self.registry)
            try:
                await self.registry.reload()
            except Exception as exc:  # ModelError, or the folder gone: keep what runs
                self.metrics.reloads.labels("refused").inc()
                log.error(
                    "model reload (%s) refused, still serving %s: %s",
                    reason,
                    before,
                    exc,
                    extra={"event": "reload", "result": "refused", "reason": reason},
                )
                return False
            self.metrics.reloads.labels("ok").inc()
            after = ", ".join(f"{m.name} {m.spec.version}" for m in self.registry)
            log.info(
                "models reloaded (%s): %s",
                reason,
                after,
                extra={"event": "reload", "result": "ok", "reason": reason},
            )
            return True

    async def watch(self, every: float) -> None:
        """Poll the model files; reload once a change has been still for one interval (so a
        file being copied in is not read half-written)."""
        loaded = model_files(self.settings.model_dir)
        seen = loaded
        while True:
            await asyncio.sleep(every)
            now = model_files(self.settings.model_dir)
            if now != loaded and now == seen:
                await self.reload("file change")
                loaded = now  # a refused version is not retried until the files change again
            seen = now


@contextlib.asynccontextmanager
async def reloading(
    registry: Registry, metrics: Metrics, settings: Settings
) -> AsyncIterator[None]:
    """For the lifespan: SIGHUP (and the optional watch) reload ``registry`` while it runs."""
    reloader = Reloader(registry, metrics, settings)
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[bool]] = set()

    def on_sighup() -> None:
        task = loop.create_task(reloader.reload("SIGHUP"))
        pending.add(task)
        task.add_done_callback(pending.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
        handled = True
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        handled = False  # not the main thread (a TestClient) or no SIGHUP on this platform
    watcher = (
        loop.create_task(reloader.watch(settings.reload_poll_s)) if settings.reload_watch else None
    )
    try:
        yield
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGHUP)
        for task in [*pending, *([watcher] if watcher else [])]:
            task.cancel()
        for task in [*pending, *([watcher] if watcher else [])]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
