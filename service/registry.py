"""The models the service runs: every ``<model_dir>/<name>/model.onnx``, checked by the contract.

A model that is missing, empty, unreadable or breaks the contract raises ``ModelError`` naming
the file and the problem, so the service refuses to start rather than fail on the first request.
Models come only from the configured folder; no request can name a path or URL to load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import ModelError, NotFound
from .plain_graph import keep_outputs
from .runtime import INPUT_NAME, ModelRuntime, open_session
from .spec import ModelSpec

if TYPE_CHECKING:
    import onnxruntime

    from .metrics import Metrics
    from .settings import Settings

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
PLAIN_OUTPUT = "probabilities"  # what a plain classification asks for
PREFERRED_DEFAULT = "fashion-mnist"


@dataclass(frozen=True)
class LoadedModel:
    name: str
    path: Path
    spec: ModelSpec
    runtime: ModelRuntime


def _dims(shape: list[object]) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in shape]


def _shape_ok(got: list[object], want: list[int | None]) -> bool:
    """Static dims must match; symbolic ones (the batch axis) match anything."""
    dims = _dims(got)
    return len(dims) == len(want) and all(
        g is None or w is None or g == w for g, w in zip(dims, want, strict=True)
    )


def check_contract(session: onnxruntime.InferenceSession, spec: ModelSpec, path: Path) -> None:
    inputs = session.get_inputs()
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise ModelError(path, f"inputs are {[i.name for i in inputs]}, expected ['{INPUT_NAME}']")
    inp, want = inputs[0], spec.input
    if inp.type != "tensor(uint8)":
        raise ModelError(path, f"input '{INPUT_NAME}' is {inp.type}, expected tensor(uint8)")
    if not _shape_ok(inp.shape, [None, want.height, want.width, want.channels]):
        raise ModelError(
            path,
            f"input shape {inp.shape} does not match the metadata "
            f"[N, {want.height}, {want.width}, {want.channels}]",
        )
    if isinstance(inp.shape[0], int):
        raise ModelError(path, "input has a fixed batch size; the batch axis must be dynamic")

    outputs = {o.name: o for o in session.get_outputs()}
    k = len(spec.labels)
    required: dict[str, list[int | None]] = {"probabilities": [None, k], "logits": [None, k]}
    if spec.cam is not None:
        required["cam"] = [None, k, None, None]
    for layer in spec.layers:
        if not layer.output.startswith("features/"):
            raise ModelError(
                path, f"layer {layer.name!r} output {layer.output!r} is not under features/"
            )
        required[layer.output] = [None, layer.channels, layer.height, layer.width]
    for name, shape in required.items():
        if name not in outputs:
            raise ModelError(path, f"output {name!r} is missing")
        if outputs[name].type != "tensor(float)":
            raise ModelError(path, f"output {name!r} is {outputs[name].type}, expected float32")
        if not _shape_ok(outputs[name].shape, shape):
            raise ModelError(path, f"output {name!r} has shape {outputs[name].shape}, not {shape}")
    unlisted = [n for n in outputs if n.startswith("features/") and n not in required]
    if unlisted:
        raise ModelError(path, f"output {unlisted[0]!r} is not listed in the metadata layers")


def warm_up(runtime: ModelRuntime, spec: ModelSpec, path: Path) -> None:
    """One inference on a blank picture: proves the graph runs and its softmax is a softmax."""
    blank = np.zeros((1, spec.input.height, spec.input.width, spec.input.channels), np.uint8)
    sessions = [s for s in (runtime.plain_session, runtime.lone_session) if s is not None]
    try:
        probs = runtime.session.run([PLAIN_OUTPUT], {INPUT_NAME: blank})[0]
        others = [s.run([PLAIN_OUTPUT], {INPUT_NAME: blank})[0] for s in sessions]
    except Exception as exc:
        raise ModelError(path, f"warm-up inference failed ({_first_line(exc)})") from exc
    # fused kernels sum in another order: equal within float32 rounding, not bitwise
    if not all(np.allclose(other, probs, rtol=0, atol=1e-5) for other in others):
        raise ModelError(path, "the plain graph's probabilities differ from the model's")
    if probs.shape != (1, len(spec.labels)):
        raise ModelError(path, f"warm-up gave probabilities of shape {list(probs.shape)}")
    if not np.all(np.isfinite(probs)) or abs(float(probs.sum()) - 1) > 1e-3:
        raise ModelError(path, "warm-up probabilities are not a distribution (sum != 1)")


def plain_graph(
    path: Path, session: onnxruntime.InferenceSession, settings: Settings
) -> tuple[bytes | None, onnxruntime.InferenceSession | None]:
    """The model with ``probabilities`` as its only output (service/plain_graph.py) and its
    batching session; (None, None) where that gains nothing (no other output) or cannot be made
    (weights in external files, which a session made from bytes cannot find; bytes the edit
    cannot walk): then the full graph serves every request, as it can."""
    if [o.name for o in session.get_outputs()] == [PLAIN_OUTPUT]:
        return None, None
    try:
        plain = keep_outputs(path.read_bytes(), frozenset({PLAIN_OUTPUT}))
        plain_session = open_session(plain, settings.providers, settings.intra_op_threads)
    except Exception as exc:  # any failure: the full graph serves them
        log.info("%s: the full graph serves plain classifications (%s)", path, _first_line(exc))
        return None, None
    return plain, plain_session


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def load_model(
    name: str, path: Path, settings: Settings, metrics: Metrics | None = None
) -> LoadedModel:
    if not path.is_file():
        raise ModelError(path, "file not found")
    if path.stat().st_size == 0:
        raise ModelError(path, "file is empty")
    try:
        session = open_session(path, settings.providers, settings.intra_op_threads)
    except Exception as exc:
        raise ModelError(path, f"not a loadable ONNX model ({_first_line(exc)})") from exc
    spec = ModelSpec.from_metadata(name, session.get_modelmeta().custom_metadata_map, path)
    check_contract(session, spec, path)
    plain, plain_session = plain_graph(path, session, settings)
    lone = None
    if settings.lone_threads and settings.providers[0] == "CPUExecutionProvider":
        lone_graph = path if plain is None else plain
        lone = open_session(lone_graph, settings.providers, settings.lone_threads, spinning=True)
    runtime = ModelRuntime(
        session,
        name,
        max_batch=settings.max_batch,
        batch_delay_ms=settings.batch_delay_ms,
        metrics=metrics,
        lone_session=lone,
        plain_session=plain_session,
    )
    warm_up(runtime, spec, path)
    return LoadedModel(name=name, path=path, spec=spec, runtime=runtime)


def load_all(settings: Settings, metrics: Metrics | None = None) -> dict[str, LoadedModel]:
    """Every sub-folder of the model folder is a model; each must hold a good model.onnx."""
    folders = sorted(
        p for p in settings.model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not folders:
        raise ModelError(settings.model_dir, f"no models found (expected <name>/{MODEL_FILE})")
    models = {}
    for folder in folders:
        models[folder.name] = load_model(folder.name, folder / MODEL_FILE, settings, metrics)
        log.info("loaded model %s from %s", folder.name, folder / MODEL_FILE)
    return models


def pick_default(models: dict[str, LoadedModel], settings: Settings) -> str:
    if settings.default_model is not None:
        if settings.default_model not in models:
            raise ModelError(
                settings.model_dir,
                f"default model {settings.default_model!r} is not there "
                f"(found: {', '.join(models)})",
            )
        return settings.default_model
    return PREFERRED_DEFAULT if PREFERRED_DEFAULT in models else next(iter(models))


class Registry:
    """Name -> loaded model. ``reload()`` swaps in a new set only when all of it loads."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings, self.metrics = settings, metrics
        self._models: dict[str, LoadedModel] = {}
        self.default_name = ""

    @classmethod
    async def load(cls, settings: Settings, metrics: Metrics | None = None) -> Registry:
        registry = cls(settings, metrics)
        await registry.reload()
        return registry

    async def reload(self) -> list[str]:
        """Load every model again (in a worker thread); on any ModelError keep the current set."""
        models = await asyncio.to_thread(load_all, self.settings, self.metrics)
        default = pick_default(models, self.settings)
        # Requests already holding a LoadedModel finish on the old session.
        self._models, self.default_name = models, default
        return list(models)

    def get(self, name: str) -> LoadedModel:
        try:
            return self._models[name]
        except KeyError:
            raise NotFound(f"no model named {name[:64]!r}") from None

    def find(self, name: str) -> LoadedModel | None:
        return self._models.get(name)

    @property
    def default(self) -> LoadedModel:
        return self._models[self.default_name]

    def __iter__(self) -> Iterator[LoadedModel]:
        return iter(list(self._models.values()))

    def __len__(self) -> int:
        return len(self._models)
