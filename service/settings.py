"""Every knob of the service in one Settings class: env vars with the CONVSCOPE_ prefix.

The only reader of environment variables. ``python -m service`` builds one instance and passes it
to ``create_app(settings)``; nothing here creates a settings object at import time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_MODELS = Path(__file__).resolve().parent.parent / "models"
PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
ORIGIN = re.compile(r"^https?://[^/\s]+$")

CommaList = Annotated[list[str], NoDecode]
# Default of the thread counts: "this process's share of the cores", worked out once the number
# of workers is known.
SHARE = -1


def default_providers() -> list[str]:
    """CUDA first when onnxruntime-gpu is installed (CPU stays as the fallback), else CPU."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVSCOPE_", extra="forbid")

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    # Server processes sharing the port, each with its own sessions and batcher
    # (service/workers.py); 0: one per core this process may use (service/cpus.py: affinity and
    # cgroup quota). 1: one process and no supervisor.
    workers: Annotated[int, Field(ge=0, le=64)] = 0
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"

    model_dir: Path = REPO_MODELS
    # None: "fashion-mnist" when present, else the first model by name.
    default_model: str | None = None

    max_upload_bytes: Annotated[int, Field(ge=1)] = 10 * 1024 * 1024
    max_pixels: Annotated[int, Field(ge=1)] = 40_000_000
    max_images: Annotated[int, Field(ge=1, le=1024)] = 16

    # Empty: no key needed. Otherwise every /v1 call needs one (Bearer or X-API-Key).
    api_keys: CommaList = []
    # Empty: no CORS headers at all, so browsers refuse cross-origin calls.
    cors_origins: CommaList = []

    max_batch: Annotated[int, Field(ge=1, le=4096)] = 32
    batch_delay_ms: Annotated[float, Field(ge=0, le=1000)] = 2.0
    # Threads inside one batched onnxruntime call (they do not spin). -1: the process's share
    # of the cores (cores / workers, at least 1); 0: onnxruntime's choice (one per core it
    # sees). Two processes of one thread beat one of two on two cores (benchmarks/README.md).
    intra_op_threads: Annotated[int, Field(ge=SHARE, le=256)] = SHARE
    providers: CommaList = Field(default_factory=default_providers)
    # Threads that decode pictures (all but small PNGs, which decode on the event loop); 0: two
    # per core of the process's share. More only contend for the cores and the GIL
    # (benchmarks/README.md).
    decode_threads: Annotated[int, Field(ge=0, le=256)] = 0
    # A second session for requests that arrive when nothing else is in flight, run without a
    # thread hop, with this many spinning intra-op threads (lower latency for a lone client;
    # benchmarks/README.md). 0: none, lone pictures go through the batcher. -1: every core the
    # process may use: a worker's request counts as lone only while no other worker holds a
    # connection (service/balance.py), so the others' cores are idle. CPU provider only.
    lone_threads: Annotated[int, Field(ge=SHARE, le=256)] = SHARE

    # Slow clients (service/deadlines.py): headers must be in within header_timeout_s of the
    # connection (or request) starting, the body within body_timeout_s of the app's first read
    # (10 MB in 60 s needs about 1.4 Mbit/s).
    header_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    body_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # SIGTERM: requests in flight get this long to finish before the process exits anyway.
    graceful_shutdown_s: Annotated[float, Field(ge=0, le=3600)] = 20.0
    # "json": one JSON object per log line (uvicorn's lines too), for log collectors.
    log_format: Literal["text", "json"] = "text"
    # SIGHUP always reloads the models; with reload_watch the model files are also polled and
    # a change reloads them (a model being written is refused until it loads, then swapped in).
    reload_watch: bool = False
    reload_poll_s: Annotated[float, Field(ge=0.1, le=3600)] = 2.0

    # The Open Inference Protocol over gRPC (service/grpc/) on this port, same host; unset: off.
    # Off by default: a second open port should be asked for, and grpcio (19 MB) is the `grpc`
    # extra. 0: a port the OS chooses (logged).
    grpc_port: Annotated[int | None, Field(ge=0, le=65535)] = None

    @field_validator("grpc_port")
    @classmethod
    def grpc_installed(cls, value: int | None) -> int | None:
        import importlib.util

        if value is not None and not all(
            importlib.util.find_spec(m) for m in ("grpc", "grpc_health")
        ):
            raise ValueError(
                "gRPC needs grpcio and grpcio-health-checking: pip install 'convscope[grpc]'"
            )
        return value

    @model_validator(mode="after")
    def share_the_cores(self) -> Settings:
        """Every "auto" of the process model made concrete: the number of workers (0: one per
        core), and each process's share of the cores for its onnxruntime and decoding threads."""
        from .cpus import available_cpus

        cores = available_cpus()
        self.workers = self.workers or cores
        share = max(1, cores // self.workers)
        if self.intra_op_threads == SHARE:
            self.intra_op_threads = share
        if self.lone_threads == SHARE:
            self.lone_threads = cores
        self.decode_threads = self.decode_threads or 2 * share
        return self

    @field_validator("api_keys", "cors_origins", "providers", mode="before")
    @classmethod
    def split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("model_dir")
    @classmethod
    def model_dir_exists(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"model folder {value} does not exist or is not a folder")
        return value

    @field_validator("api_keys")
    @classmethod
    def keys_are_tokens(cls, value: list[str]) -> list[str]:
        if any(re.search(r"\s", key) for key in value):
            raise ValueError("API keys cannot contain spaces")
        return value

    @field_validator("cors_origins")
    @classmethod
    def origins_are_origins(cls, value: list[str]) -> list[str]:
        value = [origin.rstrip("/") for origin in value]
        for origin in value:
            if origin != "*" and not ORIGIN.match(origin):
                raise ValueError(
                    "each CORS origin must look like https://example.org (scheme and host, "
                    "no path) or be *"
                )
        return value

    @field_validator("providers")
    @classmethod
    def providers_available(cls, value: list[str]) -> list[str]:
        import onnxruntime

        names = [PROVIDER_ALIASES.get(p.lower(), p) for p in value]
        available = onnxruntime.get_available_providers()
        missing = [p for p in names if p not in available]
        if not names:
            raise ValueError("name at least one onnxruntime execution provider")
        if missing:
            raise ValueError(
                f"onnxruntime provider {missing[0]} is not available here "
                f"(available: {', '.join(available)})"
            )
        return names


def describe_error(exc: Exception) -> str:
    """One line for a settings ValidationError: which variable, what is wrong."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"setting {field} (CONVSCOPE_{field.upper()}): {msg}" if field else msg)
    return "; ".join(parts)
