"""``python -m service``: Settings -> uvicorn (uvloop + httptools) running ``create_app(settings)``.

Each flag is also an environment variable (``--model-dir`` is ``CONVSCOPE_MODEL_DIR``); a flag
wins over the variable. A bad setting or model stops the start with one line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .settings import Settings

FLAGS = ("host", "port", "model_dir", "workers", "log_level")
STARTUP_FAILED = 3  # the exit status when a model failed to load in the app's start


def parse_args(argv: list[str] | None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m service", description="Serve the convscope models over HTTP."
    )
    parser.add_argument("--host", help="address to bind (CONVSCOPE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (CONVSCOPE_PORT, default 8000)")
    parser.add_argument(
        "--model-dir", help="folder of <name>/model.onnx (CONVSCOPE_MODEL_DIR, default models/)"
    )
    parser.add_argument(
        "--workers", type=int, help="processes (CONVSCOPE_WORKERS, default 0: one per core)"
    )
    parser.add_argument("--log-level", help="info, debug, warning, ... (CONVSCOPE_LOG_LEVEL)")
    args = vars(parser.parse_args(argv))
    return {k: v for k, v in args.items() if v is not None}


def log_config(level: str, fmt: str = "text") -> dict[str, Any]:
    """uvicorn's own logging, plus the service's loggers on the same handler (text or JSON)."""
    from .logs import log_config as config

    return config(level, fmt)


def fail(message: str) -> int:
    print(f"convscope: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    from .workers import SIGNALS, shared_metrics

    # Blocked before the imports below start threads (onnxruntime's, OpenBLAS's), which keep
    # this mask: the signals then reach the main thread alone. A supervisor that is PID 1 (in a
    # container) otherwise loses one the kernel hands such a thread, as init drops a signal it
    # has no handler for, and a SIGTERM then never stops the service.
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    from pydantic import ValidationError

    from .settings import Settings, describe_error

    overrides = parse_args(argv)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        return fail(f"cannot start: {describe_error(exc)}")
    if settings.workers == 1:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # uvicorn's handlers take them
        return serve_one(settings, uvicorn_options(settings))

    with shared_metrics():  # before prometheus_client is imported (by the logs and the app)
        return serve_many(settings, uvicorn_options(settings))


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    from .deadlines import http_protocol

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        # httptools with read deadlines: uvicorn alone waits forever for slow headers/bodies.
        "http": http_protocol(settings.header_timeout_s, settings.body_timeout_s),
        "log_level": settings.log_level,
        "log_config": log_config(settings.log_level, settings.log_format),
        "access_log": False,  # service.logs writes the request lines, with request ids
        "ws": "none",  # no WebSocket routes: do not accept upgrades at all
        "timeout_graceful_shutdown": settings.graceful_shutdown_s,
        "proxy_headers": False,
        "server_header": False,
    }
    return options


def quiet_exit_signals() -> None:
    """uvicorn re-raises SIGTERM/SIGINT once its graceful shutdown is done, which would end the
    process by that signal; with these no-op handlers underneath it exits with 0."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)


def serve_one(settings: Settings, options: dict[str, Any]) -> int:
    """One process, no supervisor: uvicorn runs the app here."""
    import uvicorn

    from .app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings), **options))
    # The ~75,000 objects of the imports and the app never die: keep them out of the garbage
    # collector's full passes, which otherwise stall every request in flight (c=8 p99
    # 31 ms -> 10 ms; benchmarks/README.md).
    gc.freeze()
    quiet_exit_signals()
    server.run()
    # A lifespan failure (a bad model) has been printed as one line; say so in the status.
    return 0 if server.started else STARTUP_FAILED


def serve_many(settings: Settings, options: dict[str, Any]) -> int:
    """Several worker processes on one listening socket, forked after the imports and the model
    check (service/workers.py): each loads its own sessions and batcher."""
    import uvicorn

    from . import balance
    from .app import create_app
    from .errors import ModelError
    from .registry import load_all, pick_default
    from .workers import Supervisor, in_child

    def check_models() -> int:
        try:
            pick_default(load_all(settings), settings)
        except ModelError as exc:
            return fail(f"cannot start: {exc}")
        return 0

    # Check the models once, in a child: a bad one stops the start with one line instead of
    # every worker failing alike, and the supervisor keeps no session, no onnxruntime thread
    # and none of its memory (15 MB less resident, counted again in every worker's RSS).
    if status := in_child(check_models):
        return status
    config = uvicorn.Config(create_app(settings), **options)
    # One listening socket, inherited by every worker: the kernel gives each new connection to
    # one that is waiting. A socket per worker (SO_REUSEPORT, spread by a hash) was no faster
    # (benchmarks/README.md), cannot share a port 0, and loses its backlog when a worker dies.
    sock = config.bind_socket()
    # ... and whichever wakes first takes every connection queued: service/balance.py evens out
    # the kept-alive ones.
    shares = balance.Balance(settings.workers)
    balance.install(shares)

    def serve(index: int) -> int:
        shares.join(index)
        server = uvicorn.Server(config)
        quiet_exit_signals()
        server.run(sockets=[sock])
        return 0 if server.started else STARTUP_FAILED

    gc.freeze()  # shared with the workers, copy-on-write, and out of their full passes
    return Supervisor(settings.workers, serve, settings.graceful_shutdown_s, shares.left).run()


if __name__ == "__main__":
    sys.exit(main())
