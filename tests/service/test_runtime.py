"""The runtime: only the outputs asked for, concurrent pictures batched, a lone one never waits."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from service.metrics import Metrics
from service.runtime import ModelRuntime, open_session


def make_runtime(model_file: Path, **options: float) -> tuple[ModelRuntime, Metrics]:
    metrics = Metrics()
    session = open_session(model_file, ["CPUExecutionProvider"])
    return ModelRuntime(session, "m", metrics=metrics, **options), metrics  # type: ignore[arg-type]


def batches(metrics: Metrics) -> tuple[float, float]:
    """(number of onnxruntime calls, pictures in them)."""
    get = metrics.registry.get_sample_value
    return get("convscope_batch_size_count", {"model": "m"}), get(
        "convscope_batch_size_sum", {"model": "m"}
    )


def pictures(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


def test_returns_exactly_the_outputs_asked_for(model_file: Path, reference) -> None:
    runtime, _ = make_runtime(model_file)
    layer = next(o for o in runtime.output_names if o.startswith("features/"))
    x = pictures(3)
    got = asyncio.run(runtime.infer(x, ["probabilities", layer]))
    assert list(got) == ["probabilities", layer]
    np.testing.assert_array_equal(got["probabilities"], reference(x))
    np.testing.assert_array_equal(got[layer], reference(x, layer))


def test_concurrent_calls_share_one_session_run(model_file: Path, reference) -> None:
    runtime, metrics = make_runtime(model_file, max_batch=32, batch_delay_ms=0)
    inputs = [pictures(1, seed) for seed in range(6)] + [pictures(3, 99)]

    async def scenario() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(runtime.infer(x, ["probabilities"]) for x in inputs))

    results = asyncio.run(scenario())
    assert batches(metrics) == (1, 9)
    for x, got in zip(inputs, results, strict=True):  # each caller gets its own rows back
        np.testing.assert_allclose(got["probabilities"], reference(x), atol=1e-6)


def test_batches_stop_at_max_batch(model_file: Path) -> None:
    runtime, metrics = make_runtime(model_file, max_batch=4, batch_delay_ms=0)

    async def scenario() -> None:
        await asyncio.gather(*(runtime.infer(pictures(1, s), ["probabilities"]) for s in range(10)))

    asyncio.run(scenario())
    assert batches(metrics) == (3, 10)  # 4 + 4 + 2


def test_different_outputs_are_not_mixed(model_file: Path) -> None:
    runtime, metrics = make_runtime(model_file, batch_delay_ms=0)
    layer = next(o for o in runtime.output_names if o.startswith("features/"))

    async def scenario() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(
            runtime.infer(pictures(1), ["probabilities"]),
            runtime.infer(pictures(1), ["probabilities", layer]),
            runtime.infer(pictures(1), ["probabilities"]),
        )

    plain, with_maps, plain2 = asyncio.run(scenario())
    assert batches(metrics) == (2, 3)
    assert list(plain) == list(plain2) == ["probabilities"]
    assert list(with_maps) == ["probabilities", layer]


def test_a_lone_picture_does_not_wait_for_company(model_file: Path) -> None:
    runtime, metrics = make_runtime(model_file, batch_delay_ms=1000)

    async def scenario() -> float:
        await runtime.infer(pictures(1), ["probabilities"])  # first call pays any lazy set-up
        start = time.perf_counter()
        await runtime.infer(pictures(1), ["probabilities"])
        return time.perf_counter() - start

    assert asyncio.run(scenario()) < 0.5  # a 1 s batch wait would show
    assert batches(metrics) == (2, 2)


def test_pictures_queued_behind_a_running_batch_wait_and_group(model_file: Path) -> None:
    runtime, metrics = make_runtime(model_file, max_batch=64, batch_delay_ms=300)

    async def scenario() -> None:
        first = asyncio.create_task(runtime.infer(pictures(1), ["probabilities"]))
        await asyncio.sleep(0)  # the first batch starts alone, at once
        second = asyncio.create_task(runtime.infer(pictures(1, 1), ["probabilities"]))
        await asyncio.sleep(0.05)  # arrives later, within the second's batch wait
        third = asyncio.create_task(runtime.infer(pictures(1, 2), ["probabilities"]))
        await asyncio.gather(first, second, third)

    asyncio.run(scenario())
    assert batches(metrics) == (2, 3)  # [first], [second, third]


@pytest.mark.parametrize(
    ("pixels", "outputs", "message"),
    [
        (np.zeros((1, 28, 28, 1), np.float32), ["probabilities"], "takes uint8"),
        (np.zeros((1, 27, 28, 1), np.uint8), ["probabilities"], "takes uint8"),
        (np.zeros((0, 28, 28, 1), np.uint8), ["probabilities"], "takes uint8"),
        (np.zeros((1, 28, 28, 1), np.uint8), ["features/nope"], "has no output"),
        (np.zeros((1, 28, 28, 1), np.uint8), [], "has no output"),
    ],
)
def test_callers_get_a_clear_error(model_file: Path, pixels, outputs, message) -> None:
    runtime, _ = make_runtime(model_file)
    with pytest.raises(ValueError, match=message):
        asyncio.run(runtime.infer(pixels, outputs))
