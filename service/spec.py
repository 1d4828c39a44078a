"""The model contract as typed data: what the service reads from an ONNX file's metadata_props.

training/export.py writes these keys (see DESIGN.md); ``ModelSpec.from_metadata`` validates
them, so a model that breaks the contract is refused at start with a sentence naming the problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ModelError

REQUIRED_KEYS = ("labels", "input", "layers", "temperature", "version")


@dataclass(frozen=True)
class InputSpec:
    height: int
    width: int
    channels: int
    mode: Literal["L", "RGB"]
    resize: Literal["pad", "crop", "stretch"]
    background: Literal["dark", "light"] | None
    # "trim": the training pictures are objects trimmed to their box, longest edge to the size,
    # centred (Fashion-MNIST's conversion); photos are framed the same way (service/framing.py).
    framing: Literal["trim"] | None = None


@dataclass(frozen=True)
class LayerSpec:
    output: str  # "features/<name>"
    name: str
    kind: Literal["conv", "pool"]
    kernel: int
    stride: int
    padding: int
    channels: int
    height: int
    width: int


@dataclass(frozen=True)
class CamSpec:
    """What the ``cam`` output is: an exact class-activation map (global-average-pooling +
    linear head) or a gradient-free approximation, computed on one stage."""

    kind: Literal["exact", "approximate"]
    layer: str
    method: str


# Models exported before the ``cam`` key existed all had the exact CAM of the GAP head.
LEGACY_CAM = "class-activation map: the linear head's weights over the last stage (GAP head)"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    labels: list[str]
    input: InputSpec
    layers: list[LayerSpec]
    temperature: float
    version: str
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    cam: CamSpec | None = None  # None: the model has no cam output

    def layer(self, name: str) -> LayerSpec | None:
        return next((ly for ly in self.layers if name in (ly.name, ly.output)), None)

    @classmethod
    def from_metadata(cls, name: str, props: dict[str, str], path: object = None) -> ModelSpec:
        where = path or name
        missing = [k for k in REQUIRED_KEYS if k not in props]
        if missing:
            raise ModelError(where, f"metadata lacks {', '.join(missing)} (not a convscope model)")
        try:
            meta = {k: json.loads(v) for k, v in props.items()}
        except json.JSONDecodeError as e:
            raise ModelError(where, f"metadata is not JSON ({e})") from e
        try:
            inp = InputSpec(**meta["input"])
            layers = [LayerSpec(**ly) for ly in meta["layers"]]
        except TypeError as e:
            raise ModelError(where, f"metadata input/layers malformed ({e})") from e
        if inp.mode not in ("L", "RGB") or inp.channels != (1 if inp.mode == "L" else 3):
            raise ModelError(where, f"input mode {inp.mode!r} with {inp.channels} channels")
        if inp.resize not in ("pad", "crop", "stretch"):
            raise ModelError(where, f"unknown resize policy {inp.resize!r}")
        if inp.framing not in (None, "trim"):
            raise ModelError(where, f"unknown framing policy {inp.framing!r}")
        if inp.framing == "trim" and inp.mode != "L":
            raise ModelError(where, "framing 'trim' makes grey pictures: the input mode must be L")
        cam = _cam(meta, layers, where)
        labels = meta["labels"]
        if not isinstance(labels, list) or not labels:
            raise ModelError(where, "labels must be a non-empty list")
        return cls(
            name=name,
            labels=[str(x) for x in labels],
            input=inp,
            layers=layers,
            temperature=float(meta["temperature"]),
            version=str(meta["version"]),
            metrics=meta.get("metrics", {}),
            created=meta.get("created"),
            recipe=meta.get("recipe", {}),
            cam=cam,
        )


def _cam(meta: dict[str, Any], layers: list[LayerSpec], where: object) -> CamSpec | None:
    if "cam" not in meta:
        convs = [ly.name for ly in layers if ly.kind == "conv"]
        return CamSpec("exact", convs[-1] if convs else "", LEGACY_CAM)
    if meta["cam"] is None:
        return None
    try:
        cam = CamSpec(**meta["cam"])
    except TypeError as e:
        raise ModelError(where, f"metadata cam malformed ({e})") from e
    if cam.kind not in ("exact", "approximate"):
        raise ModelError(where, f"cam kind {cam.kind!r} is not exact or approximate")
    return cam
