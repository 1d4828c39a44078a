"""One shared onnxruntime session per model, run off the event loop, with request batching.

``run_pictures`` is the one entry point for a request's pictures: it decides how they run, from
what it alone knows (is the model idle?) and what the caller knows (is this request alone?).

Pictures from concurrent requests that ask for the same outputs are stacked into one
``session.run`` (up to ``max_batch`` pictures). A picture that reaches an idle model runs at
once: the batch wait (``batch_delay_ms``, counted from the oldest queued picture) only applies
to pictures that queued behind a running batch, i.e. when there is load to group. A lone
picture for an idle model can also be decoded and run in one worker-thread call
(``run_alone``): one thread round trip instead of two. And when the caller knows that nothing
else is in flight (a lone client, concurrency 1), a picture already decoded runs on the calling
thread in a second, latency-tuned session (``run_inline``: two intra-op threads that spin, no
thread round trip): 0.15 instead of 0.26 ms for the default model, and no hop. onnxruntime
computes only the outputs asked for, so plain classification pays nothing for feature maps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

if TYPE_CHECKING:
    import onnxruntime

    from .metrics import Metrics

INPUT_NAME = "image"


class HasPixels(Protocol):
    pixels: np.ndarray  # one picture, [H, W, C]


P = TypeVar("P", bound=HasPixels)


class Source(Protocol[P]):
    """A request's encoded pictures (service/decoding.py's ``Pictures``)."""

    def lone_slow(self) -> Callable[[], P] | None: ...

    async def decode(self) -> list[P]: ...


def open_session(
    model: Path | bytes,
    providers: Sequence[str],
    intra_op_threads: int = 1,
    *,
    spinning: bool = False,
) -> onnxruntime.InferenceSession:
    """``spinning=False`` for the batching session: idle pool threads would spin waiting for
    work, taking the CPU that the event loop and the decoding threads need (benchmarks/README.md:
    the layout). The lone-request session spins: it only runs when nothing else does."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3  # errors only: no provider chatter on stderr
    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, sess_options=options, providers=list(providers))


@dataclass(eq=False)
class _Job:
    pixels: np.ndarray
    outputs: tuple[str, ...]
    future: asyncio.Future[dict[str, np.ndarray]]
    queued_at: float = field(default_factory=time.monotonic)
    behind_run: bool = False  # queued while a batch was running: load, worth a short wait


class ModelRuntime:
    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        name: str,
        *,
        max_batch: int = 32,
        batch_delay_ms: float = 2.0,
        metrics: Metrics | None = None,
        lone_session: onnxruntime.InferenceSession | None = None,
        plain_session: onnxruntime.InferenceSession | None = None,
    ) -> None:
        self.session, self.name = session, name
        # for run_inline; None: lone pictures batch as usual. It runs the plain graph when
        # there is one, so it takes only requests that ask for no more than its outputs.
        self.lone_session = lone_session
        # The graph cut down to the plain outputs (service/plain_graph.py): faster for them.
        self.plain_session = plain_session
        self.plain_outputs = frozenset(o.name for o in (plain_session or session).get_outputs())
        self.max_batch, self.batch_delay = max_batch, batch_delay_ms / 1000
        self.metrics = metrics
        self.output_names = [o.name for o in session.get_outputs()]
        shape = session.get_inputs()[0].shape[1:]
        self.input_shape = tuple(d if isinstance(d, int) else None for d in shape)
        self._queue: list[_Job] = []
        self._arrived: asyncio.Event | None = None  # made inside the loop that drains
        self._worker: asyncio.Task[None] | None = None
        self._running = 0  # session.run calls in flight (batches and lone pictures)

    async def run_pictures(
        self, pictures: Source[P], outputs: Sequence[str], *, lone: bool = False
    ) -> tuple[list[P], dict[str, np.ndarray]]:
        """Decode and run a request's pictures; ``lone``: the caller knows that no other request
        is in flight. The one place that chooses how:

        - alone: one picture worth a worker thread to decode, for an idle model (nobody to batch
          with): decoded and run in one worker-thread call (``run_alone``);
        - inline: one picture, a lone request, an idle model with a lone session: decoded as
          usual, run on the event loop (``run_inline``), no thread round trip;
        - batched: everything else, queued with concurrent requests' pictures (``infer``).
        """
        slow = pictures.lone_slow() if self.idle else None
        if slow is not None:
            picture, arrays = await self.run_alone(slow, outputs, lone=lone)
            return [picture], arrays
        prepared = await pictures.decode()
        one = len(prepared) == 1  # a view, not a copy, for the common case
        pixels = prepared[0].pixels[None] if one else np.stack([p.pixels for p in prepared])
        if lone and one and self.can_run_inline:
            return prepared, self.run_inline(pixels, outputs)
        return prepared, await self.infer(pixels, outputs)

    def run(
        self, pixels: np.ndarray, outputs: Sequence[str], *, lone: bool = False
    ) -> dict[str, np.ndarray]:
        """Blocking call, no batching (warm-up, checks). Safe from any thread."""
        session = self._session_for(outputs, lone)
        start = time.perf_counter()
        arrays = session.run(list(outputs), {INPUT_NAME: pixels})
        if self.metrics is not None:
            self.metrics.observe_batch(self.name, len(pixels), time.perf_counter() - start)
        return dict(zip(outputs, arrays, strict=True))

    def _session_for(self, outputs: Sequence[str], lone: bool) -> onnxruntime.InferenceSession:
        plain = self.plain_outputs.issuperset(outputs)
        if lone and plain and self.lone_session is not None:
            return self.lone_session
        if plain and self.plain_session is not None:
            return self.plain_session
        return self.session

    def _check(self, pixels: np.ndarray, outputs: Sequence[str]) -> None:
        unknown = [o for o in outputs if o not in self.output_names]
        if unknown or not outputs:
            raise ValueError(f"model {self.name} has no output {unknown or '(none asked)'}")
        if (
            pixels.dtype != np.uint8
            or pixels.ndim != 4
            or len(pixels) == 0
            or any(
                want is not None and want != got
                for want, got in zip(self.input_shape, pixels.shape[1:], strict=True)
            )
        ):
            raise ValueError(f"model {self.name} takes uint8 [N, *{self.input_shape}] pictures")

    @property
    def idle(self) -> bool:
        """Nothing queued or running: a picture arriving now has nobody to share a batch with."""
        return not self._running and not self._queue and self._worker is None

    async def run_alone(
        self, prepare: Callable[[], P], outputs: Sequence[str], *, lone: bool = False
    ) -> tuple[P, dict[str, np.ndarray]]:
        """Decode one picture (``prepare``) and run it, both in one worker-thread call.

        For an ``idle`` model (the caller checks, with no await in between): a lone request then
        crosses threads once, not twice. Pictures that arrive meanwhile queue and batch as usual.
        ``lone``: nothing else is in flight, so the spinning lone session may have the cores; not
        otherwise, where its spinning would take them from the other requests' decoding.
        """

        def work() -> tuple[P, dict[str, np.ndarray]]:
            picture = prepare()
            pixels = picture.pixels[None]
            self._check(pixels, outputs)
            return picture, self.run(pixels, outputs, lone=lone)

        self._running += 1
        try:
            return await asyncio.to_thread(work)
        finally:
            self._running -= 1

    @property
    def can_run_inline(self) -> bool:
        return self.lone_session is not None and self.idle

    def run_inline(self, pixels: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Run on the calling thread (the event loop) in the lone session. Only for a caller
        that knows nothing else is in flight and has checked ``can_run_inline``: it blocks."""
        self._check(pixels, outputs)
        self._running += 1
        try:
            return self.run(pixels, outputs, lone=True)
        finally:
            self._running -= 1

    async def infer(self, pixels: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Run uint8 pictures [N, H, W, C]; returns each requested output with N rows."""
        self._check(pixels, outputs)
        key = tuple(sorted(set(outputs)))
        future = asyncio.get_running_loop().create_future()
        job = _Job(pixels, key, future, behind_run=self._running > 0)
        self._queue.append(job)
        if self._worker is None:
            # A task rather than running inline: pictures queued in the same loop tick join in.
            self._arrived = asyncio.Event()
            self._worker = asyncio.create_task(self._drain())
        assert self._arrived is not None
        self._arrived.set()
        result = await job.future
        return {o: result[o] for o in outputs}

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = await self._collect()
                if batch:
                    await self._run_batch(batch)
        finally:
            self._worker = None

    def _take(self) -> list[_Job]:
        """The oldest job and the queued jobs asking for the same outputs, up to max_batch."""
        self._queue = [j for j in self._queue if not j.future.done()]  # drop cancelled callers
        if not self._queue:
            return []
        key, size, batch = self._queue[0].outputs, 0, list[_Job]()
        for job in self._queue:
            if job.outputs == key and (not batch or size + len(job.pixels) <= self.max_batch):
                batch.append(job)
                size += len(job.pixels)
        return batch

    async def _collect(self) -> list[_Job]:
        batch = self._take()
        if not batch or not batch[0].behind_run:
            return self._pop(batch)
        deadline = batch[0].queued_at + self.batch_delay
        while sum(len(j.pixels) for j in batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            assert self._arrived is not None
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
            batch = self._take()
            if not batch:
                return []
        return self._pop(batch)

    def _pop(self, batch: list[_Job]) -> list[_Job]:
        taken = set(map(id, batch))
        self._queue = [j for j in self._queue if id(j) not in taken]
        return batch

    async def _run_batch(self, batch: list[_Job]) -> None:
        pixels = batch[0].pixels if len(batch) == 1 else np.concatenate([j.pixels for j in batch])
        self._running += 1
        try:
            result = await asyncio.to_thread(self.run, pixels, batch[0].outputs)
        except Exception as exc:  # every waiting caller gets the error, the loop keeps going
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        finally:
            self._running -= 1
        start = 0
        for job in batch:
            end = start + len(job.pixels)
            if not job.future.done():
                job.future.set_result({name: arr[start:end] for name, arr in result.items()})
            start = end
