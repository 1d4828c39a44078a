"""docker-compose.yml: validated by Compose itself (`config` needs no engine) and read for the
properties the issue asks of it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def graceful_shutdown_s(env: dict[str, Any]) -> float:
    """uvicorn's graceful-shutdown timeout as the service will run it with this environment."""
    from service.settings import Settings

    default = Settings.model_fields["graceful_shutdown_s"].default
    return float(env.get("CONVSCOPE_GRACEFUL_SHUTDOWN_S") or default)


def compose_command() -> list[str] | None:
    """Debian's docker-compose (1.x) or the v2 plugin, whichever answers."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|h|m|s)", duration))


def env_dict(environment: list[str] | dict[str, Any]) -> dict[str, str | None]:
    if isinstance(environment, dict):
        return {k: None if v is None else str(v) for k, v in environment.items()}
    return {e.split("=", 1)[0]: (e.split("=", 1)[1] if "=" in e else None) for e in environment}


def test_compose_config_accepts_the_file() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no docker-compose and no `docker compose` here (.ci/run installs one)")
    # A clean environment: the file must render with every variable unset.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "--profile", "train", "--profile", "scale", "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)["services"]
    assert set(rendered) == {"api", "train", "api-pool", "proxy"}
    # Published on loopback only, whichever output format this Compose version writes.
    (port,) = rendered["api"]["ports"]
    if isinstance(port, dict):
        assert (port["host_ip"], str(port["published"]), port["target"]) == (
            "127.0.0.1",
            "8000",
            8000,
        )
    else:
        assert port.startswith("127.0.0.1:8000:8000")
    volumes = rendered["train"]["volumes"]
    sources = {v["source"] if isinstance(v, dict) else v.split(":")[0] for v in volumes}
    assert str(ROOT / "models") in sources


def test_api_is_hardened_limited_and_health_checked(
    services: dict[str, Any], stages: dict[str, Any]
) -> None:
    api = services["api"]
    assert api["ports"] == ["${CONVSCOPE_PUBLISH:-127.0.0.1:8000}:8000"]
    assert api["read_only"] is True
    assert any(t.startswith("/tmp:") or t == "/tmp" for t in api["tmpfs"])
    assert api["restart"] in ("unless-stopped", "always")
    assert api["cap_drop"] == ["ALL"] and "no-new-privileges:true" in api["security_opt"]
    # The image's own health check, so `docker run` and compose agree.
    healthcheck = stages["runtime"].values("HEALTHCHECK")[0]
    assert api["healthcheck"]["test"] == ["CMD", *re.findall(r'"([^"]+)"', healthcheck)]
    env = env_dict(api["environment"])
    assert seconds(api["stop_grace_period"]) > graceful_shutdown_s(env) + 5
    limits = api["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0 and re.fullmatch(r"\d+[mg]", limits["memory"])
    # A worker per CPU of the limit, one onnxruntime thread each: not the host's cores.
    workers = int(env["CONVSCOPE_WORKERS"] or 0)
    assert workers == float(limits["cpus"])
    assert workers * int(env["CONVSCOPE_INTRA_OP_THREADS"] or 0) == float(limits["cpus"])
    assert workers * int(env["CONVSCOPE_DECODE_THREADS"] or 0) == 2 * float(limits["cpus"])
    # Optional settings pass through unset, so the service's defaults apply.
    assert env["CONVSCOPE_API_KEYS"] is None


def test_environment_names_are_the_services_settings(services: dict[str, Any]) -> None:
    from service.settings import Settings

    known = {f"CONVSCOPE_{name.upper()}" for name in Settings.model_fields}
    for name in ("api", "api-pool"):
        unknown = set(env_dict(services[name]["environment"])) - known
        assert not unknown, f"{name}: not a setting: {unknown}"


def test_environment_values_are_accepted_by_the_settings(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.settings import Settings

    for key, value in env_dict(services["api"]["environment"]).items():
        if value is not None:
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("CONVSCOPE_MODEL_DIR", str(ROOT / "models"))
    settings = Settings()
    assert settings.workers == 2 and settings.intra_op_threads == 1 and settings.decode_threads == 2


def test_train_profile_retrains_into_models(
    services: dict[str, Any], stages: dict[str, Any]
) -> None:
    train = services["train"]
    assert train["profiles"] == ["train"]
    assert train["build"]["target"] == "trainer"
    assert "./models:/work/models" in train["volumes"] and "./runs:/work/runs" in train["volumes"]
    assert train["command"] == stages["trainer"].exec_form("CMD") == ["train-and-export"]
    script = (ROOT / "deploy" / "docker" / "train-and-export.sh").read_text()
    assert 'python -m training train --out-dir runs/fashion-mnist "$@"' in script
    assert (
        "training export runs/fashion-mnist/best.pt --out models/fashion-mnist/model.onnx" in script
    )
    assert not train["user"].startswith(("0:", "root"))


def test_scale_profile_puts_replicas_behind_nginx(services: dict[str, Any]) -> None:
    api, pool, proxy = services["api"], services["api-pool"], services["proxy"]
    assert pool["profiles"] == proxy["profiles"] == ["scale"]
    assert "ports" not in pool, "replicas are reached through the proxy only"
    assert pool["deploy"]["replicas"] >= 2
    shared = set(api) - {"ports", "profiles", "deploy"}
    assert {k: pool[k] for k in shared} == {k: api[k] for k in shared}
    assert pool["deploy"]["resources"] == api["deploy"]["resources"]
    assert proxy["depends_on"] == {"api-pool": {"condition": "service_healthy"}}
    assert "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert proxy["read_only"] is True
    assert proxy["ports"][0].split(":-")[1].startswith("127.0.0.1:")
    assert "server api-pool:8000" in (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()


def test_images_default_to_the_official_bases_and_can_be_named(services: dict[str, Any]) -> None:
    """Unset, the file builds on python:3.11-slim and runs nginx:1.28-alpine; where those cannot
    be pulled, CONVSCOPE_PYTHON_IMAGE / CONVSCOPE_NGINX_IMAGE name local stand-ins
    (deploy/docker/local-base.sh, local-nginx.sh) and CONVSCOPE_IMAGE an image built already."""
    api, train, proxy = services["api"], services["train"], services["proxy"]
    assert api["image"] == "${CONVSCOPE_IMAGE:-convscope:latest}"
    assert train["image"] == "${CONVSCOPE_TRAINER_IMAGE:-convscope-trainer:latest}"
    for service in (api, train):
        assert service["build"]["args"] == {
            "PYTHON_IMAGE": "${CONVSCOPE_PYTHON_IMAGE:-python:3.11-slim}"
        }
    assert proxy["image"] == "${CONVSCOPE_NGINX_IMAGE:-nginx:1.28-alpine}"
