"""The runtime: only the outputs asked for, concurrent pictures batched, a lone one never waits."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
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


@dataclass
class Picture:
    pixels: np.ndarray


def test_a_lone_picture_is_decoded_and_run_in_one_call(model_file: Path, reference) -> None:
    runtime, metrics = make_runtime(model_file)
    x = pictures(1)
    decoded = Picture(x[0])
    threads: list[int] = []

    def decode() -> Picture:
        threads.append(threading.get_ident())
        return decoded

    async def scenario() -> tuple[Picture, dict[str, np.ndarray], bool]:
        assert runtime.idle
        picture, got = await runtime.run_alone(decode, ["probabilities"])
        return picture, got, runtime.idle

    picture, got, idle_after = asyncio.run(scenario())
    assert picture is decoded and list(got) == ["probabilities"]
    np.testing.assert_array_equal(got["probabilities"], reference(x))
    assert threads and threads[0] != threading.get_ident()  # off the event loop
    assert idle_after and batches(metrics) == (1, 1)


def test_pictures_arriving_during_a_lone_run_are_batched(model_file: Path) -> None:
    runtime, metrics = make_runtime(model_file, batch_delay_ms=0)
    release = threading.Event()

    def slow_decode() -> Picture:
        release.wait(5)
        return Picture(pictures(1)[0])

    async def scenario() -> bool:
        lone = asyncio.create_task(runtime.run_alone(slow_decode, ["probabilities"]))
        await asyncio.sleep(0.01)  # the lone picture is being decoded
        busy = not runtime.idle
        others = [runtime.infer(pictures(1, s), ["probabilities"]) for s in range(3)]
        gathered = asyncio.gather(*others)
        await asyncio.sleep(0.05)  # the three have run by now, as one batch
        release.set()
        await asyncio.gather(lone, gathered)
        return busy

    assert asyncio.run(scenario())
    assert batches(metrics) == (2, 4)  # [three] and the lone one
    assert runtime.idle


def test_a_lone_run_reports_decoding_errors_as_they_are(model_file: Path) -> None:
    runtime, _ = make_runtime(model_file)

    def bad() -> Picture:
        raise LookupError("not a picture")

    with pytest.raises(LookupError, match="not a picture"):
        asyncio.run(runtime.run_alone(bad, ["probabilities"]))
    assert runtime.idle


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
