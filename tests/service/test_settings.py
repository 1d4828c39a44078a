from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.cpus import available_cpus
from service.settings import REPO_MODELS, Settings, describe_error


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CONVSCOPE_"):
            monkeypatch.delenv(key)


def test_defaults_are_safe_for_a_public_port() -> None:
    s = Settings()
    assert (s.host, s.port, s.log_level) == ("127.0.0.1", 8000, "info")
    assert s.model_dir == REPO_MODELS and (REPO_MODELS / "fashion-mnist").is_dir()
    assert s.default_model is None
    assert (s.max_upload_bytes, s.max_pixels, s.max_images) == (10 * 1024 * 1024, 40_000_000, 16)
    assert (s.api_keys, s.cors_origins) == ([], [])
    assert (s.max_batch, s.batch_delay_ms) == (32, 2.0)
    assert s.providers[-1] == "CPUExecutionProvider"


def test_by_default_one_worker_per_core_each_with_its_share_of_the_threads() -> None:
    cores = available_cpus()
    s = Settings()
    assert s.workers == cores
    # The lone session runs only while the other workers hold no connection: every core.
    assert (s.intra_op_threads, s.lone_threads, s.decode_threads) == (1, cores, 2)
    # One process: it has every core for its sessions and two decoding threads per core.
    one = Settings(workers=1)
    assert (one.intra_op_threads, one.lone_threads, one.decode_threads) == (cores, cores, 2 * cores)


def test_thread_counts_given_are_kept() -> None:
    cores = available_cpus()
    s = Settings(workers=3, intra_op_threads=0, lone_threads=0, decode_threads=5)
    assert (s.workers, s.intra_op_threads, s.lone_threads, s.decode_threads) == (3, 0, 0, 5)
    # More workers than cores: each still has one thread, not zero (zero means something else).
    many = Settings(workers=64)
    assert (many.intra_op_threads, many.lone_threads, many.decode_threads) == (1, cores, 2)


def test_environment_variables_with_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    env = {
        "CONVSCOPE_PORT": "9001",
        "CONVSCOPE_MODEL_DIR": str(tmp_path),
        "CONVSCOPE_LOG_LEVEL": "DEBUG",
        "CONVSCOPE_API_KEYS": " k1 , k2,,",
        "CONVSCOPE_CORS_ORIGINS": "https://a.example,http://localhost:3000/",
        "CONVSCOPE_PROVIDERS": "cpu",
        "CONVSCOPE_MAX_BATCH": "8",
        "CONVSCOPE_BATCH_DELAY_MS": "0.5",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert (s.port, s.model_dir, s.log_level) == (9001, tmp_path, "debug")
    assert s.api_keys == ["k1", "k2"]
    assert s.cors_origins == ["https://a.example", "http://localhost:3000"]
    assert s.providers == ["CPUExecutionProvider"]
    assert (s.max_batch, s.batch_delay_ms) == (8, 0.5)
    # Arguments (the command-line flags) win over the environment.
    assert Settings(port=7000).port == 7000


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "model_dir",
            "/no/such/folder",
            "setting model_dir (CONVSCOPE_MODEL_DIR): model folder /no/such/folder does not "
            "exist or is not a folder",
        ),
        (
            "max_batch",
            "0",
            "setting max_batch (CONVSCOPE_MAX_BATCH): Input should be greater than or equal to 1",
        ),
        (
            "port",
            "http",
            "setting port (CONVSCOPE_PORT): Input should be a valid integer, unable to parse "
            "string as an integer",
        ),
        (
            "cors_origins",
            "example.org/app",
            "setting cors_origins (CONVSCOPE_CORS_ORIGINS): each CORS origin must look like "
            "https://example.org (scheme and host, no path) or be *",
        ),
        (
            "api_keys",
            ["has space"],
            "setting api_keys (CONVSCOPE_API_KEYS): API keys cannot contain spaces",
        ),
        (
            "providers",
            "TensorrtExecutionProvider",
            "setting providers (CONVSCOPE_PROVIDERS): onnxruntime provider "
            "TensorrtExecutionProvider is not available here (available: ",
        ),
        (
            "log_level",
            "loud",
            "setting log_level (CONVSCOPE_LOG_LEVEL): Input should be 'critical', 'error', "
            "'warning', 'info', 'debug' or 'trace'",
        ),
    ],
)
def test_bad_values_fail_fast_with_one_sentence(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(**{field: value})
    text = describe_error(info.value)
    assert text.startswith(message)
    assert "\n" not in text
