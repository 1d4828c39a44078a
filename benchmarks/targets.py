"""What the load and cold-start benchmarks run: convscope (with variants) and the plain FastAPI
baseline, each a command with its environment and the URL path it classifies at."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository root: the one server harness
from tests import server as harness  # noqa: E402


@dataclass
class Target:
    name: str
    command: list[str]
    path: str  # the classify URL path
    env: dict[str, str] = field(default_factory=dict)
    extras: bool = False  # has feature maps and CAMs


def convscope(name: str, model_dir: str, port: int, spec: str = "") -> Target:
    args, env = [], {"CONVSCOPE_LOG_LEVEL": "warning"}
    for token in shlex.split(spec):
        key, sep, value = token.partition("=")
        if sep and key.isupper():  # CONVSCOPE_*, MALLOC_ARENA_MAX, PYTHONPATH, ...
            env[key] = value
        else:
            args.append(token)
    command = harness.service_command(port, model_dir, args)
    return Target(name, command, "/v1/classify", env, extras=True)


def plain(model_dir: str, port: int, model: str) -> Target:
    onnx = str(Path(model_dir) / model / "model.onnx")
    command = [sys.executable, str(HERE / "plain_fastapi.py"), "--port", str(port)]
    return Target("plain FastAPI", [*command, "--model", onnx], "/classify")


def with_port(target: Target, port: int) -> Target:
    command, i = list(target.command), target.command.index("--port") + 1
    command[i] = str(port)
    return Target(target.name, command, target.path, target.env, target.extras)
