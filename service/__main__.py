"""``python -m service``: Settings -> uvicorn (uvloop + httptools) running ``create_app(settings)``.

Each flag is also an environment variable (``--model-dir`` is ``CONVSCOPE_MODEL_DIR``); a flag
wins over the variable. A bad setting or model stops the start with one line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from typing import Any

FLAGS = ("host", "port", "model_dir", "workers", "log_level")


def parse_args(argv: list[str] | None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m service", description="Serve the convscope models over HTTP."
    )
    parser.add_argument("--host", help="address to bind (CONVSCOPE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (CONVSCOPE_PORT, default 8000)")
    parser.add_argument(
        "--model-dir", help="folder of <name>/model.onnx (CONVSCOPE_MODEL_DIR, default models/)"
    )
    parser.add_argument("--workers", type=int, help="processes (CONVSCOPE_WORKERS, default 1)")
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
    from pydantic import ValidationError

    from .errors import ModelError
    from .settings import Settings, describe_error

    overrides = parse_args(argv)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        return fail(f"cannot start: {describe_error(exc)}")

    import uvicorn

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
    if settings.workers == 1:
        from .app import create_app

        config = uvicorn.Config(create_app(settings), **options)
        server = uvicorn.Server(config)
        # The ~75,000 objects of the imports and the app never die: keep them out of the garbage
        # collector's full passes, which otherwise stall every request in flight (c=8 p99
        # 31 ms -> 10 ms; benchmarks/README.md).
        gc.freeze()
        # uvicorn re-raises SIGTERM/SIGINT once its graceful shutdown is done, which would end
        # the process by that signal; with these no-op handlers underneath it exits with 0.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        server.run()
        # A lifespan failure (a bad model) has been printed as one line; say so in the status.
        return 0 if server.started else 3

    # Several processes: each worker builds its own app (and sessions) from the environment, so
    # pass the flags on as variables. Check the models once here first: a bad one would
    # otherwise make every worker fail and be restarted.
    import asyncio

    from .registry import Registry

    try:
        asyncio.run(Registry.load(settings))
    except ModelError as exc:
        return fail(f"cannot start: {exc}")
    for key, value in overrides.items():
        os.environ[f"CONVSCOPE_{key.upper()}"] = str(value)
    factory = "service.app:create_app_from_env"
    uvicorn.run(factory, factory=True, workers=settings.workers, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
