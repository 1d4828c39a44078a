"""Layer SPECs: the stages of a ConvNet written by the user, checked before any training.

A SPEC is a string of comma-separated stages, or a JSON/YAML file with a list of the same stages
as objects; the presets are named SPECs::

    conv 6 k5 p2 tanh, avgpool k2, conv 16 k5 tanh nobn, maxpool k2 s2, dropout 0.25

conv FILTERS [kK] [sS] [pP] [relu|tanh|gelu] [nobn] (kernel 3, stride 1, padding 0, relu,
BatchNorm); maxpool|pool|avgpool [kK] [sS] [pP] (kernel 2, stride = kernel, padding 0);
dropout RATE. ``plan`` walks the shapes and names the first stage that cannot work.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FEATURE_KINDS = ("conv", "pool", "avgpool")
ACTIVATION_NAMES = ("relu", "tanh", "gelu")

PRESETS: dict[str, str] = {
    # small: fast preset for tests and quick experiments (~25k parameters).
    "small": "conv 16 k3 p1, pool k2 s2, conv 32 k3 p1, pool k2 s2, conv 64 k3 p1",
    # default: VGG-style, 3 stages; the committed Fashion-MNIST model.
    "default": "conv 32 k3 p1, conv 32 k3 p1, pool k2 s2, conv 64 k3 p1, conv 64 k3 p1, "
    "pool k2 s2, conv 128 k3 p1, conv 128 k3 p1",
}
_KINDS = {"conv": "conv", "pool": "pool", "maxpool": "pool", "avgpool": "avgpool",
          "dropout": "dropout"}  # fmt: skip
_OPTION = re.compile(r"([ksp])(\d+)")


class LayerError(ValueError):
    """A SPEC that cannot be built: one sentence naming the stage and the reason."""


def _stage(text: str, index: int) -> dict[str, Any]:
    words = text.split()
    where = f"stage {index} ({text.strip()!r})"
    if not words or words[0].lower() not in _KINDS:
        raise LayerError(f"{where}: starts with {words[0] if words else 'nothing'!r}, expected "
                         "conv, maxpool, avgpool or dropout")  # fmt: skip
    kind = _KINDS[words[0].lower()]
    if kind == "dropout":
        if len(words) != 2:
            raise LayerError(f"{where}: dropout takes one rate, e.g. 'dropout 0.25'")
        try:
            return {"kind": kind, "rate": float(words[1])}
        except ValueError:
            raise LayerError(f"{where}: the rate {words[1]!r} is not a number") from None
    spec: dict[str, Any] = {"kind": kind}
    for word in words[1:]:
        w = word.lower()
        option = _OPTION.fullmatch(w)
        if kind == "conv" and w.isdigit() and "channels" not in spec:
            spec["channels"] = int(w)
        elif option:
            spec[{"k": "kernel", "s": "stride", "p": "padding"}[option[1]]] = int(option[2])
        elif kind == "conv" and w in ACTIVATION_NAMES:
            spec["activation"] = w
        elif kind == "conv" and w == "nobn":
            spec["batchnorm"] = False
        else:
            raise LayerError(f"{where}: does not understand {word!r}")
    if kind == "conv" and "channels" not in spec:
        raise LayerError(f"{where}: a conv block needs its number of filters, e.g. 'conv 32 k3'")
    return normalised(spec)


def normalised(spec: dict[str, Any]) -> dict[str, Any]:
    """Every field filled in, so checkpoints and metadata say exactly what was built."""
    kind = spec.get("kind")
    if kind == "conv":
        return {"kind": "conv", "channels": int(spec["channels"]),
                "kernel": int(spec.get("kernel", 3)), "stride": int(spec.get("stride", 1)),
                "padding": int(spec.get("padding", 0)),
                "activation": str(spec.get("activation", "relu")),
                "batchnorm": bool(spec.get("batchnorm", True))}  # fmt: skip
    if kind in ("pool", "maxpool", "avgpool"):
        kernel = int(spec.get("kernel", 2))
        return {"kind": "pool" if kind == "maxpool" else kind, "kernel": kernel,
                "stride": int(spec.get("stride", kernel)),
                "padding": int(spec.get("padding", 0))}  # fmt: skip
    if kind == "dropout":
        return {"kind": "dropout", "rate": float(spec["rate"])}
    raise LayerError(f"unknown layer kind {kind!r} (conv, maxpool, avgpool or dropout)")


def parse_layers(spec: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A preset name, a SPEC string, a .json/.yaml file, or a list of stage dicts."""
    if isinstance(spec, list):
        return [normalised(s) for s in spec]
    text = spec.strip()
    if text in PRESETS:
        return parse_layers(PRESETS[text])
    if text.endswith((".json", ".yaml", ".yml")):
        return parse_layers(_read_file(Path(text)))
    stages = [s for s in re.split(r"[,;\n]", text) if s.strip()]
    return [_stage(s, i + 1) for i, s in enumerate(stages)]


def _read_file(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise LayerError(f"layer file {path} not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
    else:
        try:
            import yaml
        except ImportError:
            raise LayerError(f"reading {path} needs PyYAML (pip install pyyaml)") from None
        data = yaml.safe_load(text)
    data = data.get("layers", data) if isinstance(data, dict) else data
    if not isinstance(data, list) or not all(isinstance(s, dict) for s in data):
        raise LayerError(f"{path} must hold a list of stages (objects with a 'kind')")
    return data


def layer_names(layers: list[dict[str, Any]]) -> list[str]:
    """conv1, conv2, pool1, conv3, ...: numbered per kind, in network order."""
    counts: dict[str, int] = {}
    names = []
    for spec in layers:
        counts[spec["kind"]] = counts.get(spec["kind"], 0) + 1
        names.append(f"{spec['kind']}{counts[spec['kind']]}")
    return names


@dataclass(frozen=True)
class Row:
    name: str
    text: str
    shape: tuple[int, int, int]  # channels, height, width after the stage
    parameters: int


def describe(spec: dict[str, Any]) -> str:
    if spec["kind"] == "dropout":
        return f"dropout {spec['rate']}"
    head = f"conv {spec['channels']} " if spec["kind"] == "conv" else f"{spec['kind']} "
    text = head + f"k{spec['kernel']} s{spec['stride']} p{spec['padding']}"
    if spec["kind"] == "conv":
        text += f" {spec['activation']}" + ("" if spec["batchnorm"] else " nobn")
    return text


def plan(
    layers: list[dict[str, Any]], channels: int, height: int, width: int, classes: int
) -> list[Row]:
    """Walk the shapes stage by stage; LayerError names the first stage that cannot work."""
    if not layers:
        raise LayerError("the layer list is empty: give at least one conv block, e.g. 'conv 16'")
    if not any(s["kind"] == "conv" for s in layers):
        raise LayerError("the layers have no conv block: a CNN needs at least one")
    rows, c, h, w = [], channels, height, width
    for i, (name, spec) in enumerate(zip(layer_names(layers), layers), start=1):
        where = f"layer {i} ({name}, {describe(spec)})"
        params = 0
        if spec["kind"] == "dropout":
            if not 0 <= spec["rate"] < 1:
                raise LayerError(f"{where}: the rate {spec['rate']} is not in [0, 1)")
        else:
            k, s, p = spec["kernel"], spec["stride"], spec["padding"]
            if k < 1 or s < 1 or p < 0:
                raise LayerError(f"{where}: kernel and stride must be >= 1 and padding >= 0")
            if p >= k:
                raise LayerError(f"{where}: padding {p} is not smaller than the kernel {k}")
            if spec["kind"] != "conv" and 2 * p > k:
                raise LayerError(f"{where}: pooling padding {p} is more than half the kernel {k}")
            if k > h + 2 * p or k > w + 2 * p:
                raise LayerError(f"{where}: the kernel {k}x{k} is larger than its {h}x{w} input "
                                 f"(padding {p})")  # fmt: skip
            oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            if oh < 1 or ow < 1:
                raise LayerError(f"{where}: stride {s} leaves a {max(oh, 0)}x{max(ow, 0)} map "
                                 f"from its {h}x{w} input")  # fmt: skip
            if spec["kind"] == "conv":
                if spec["channels"] < 1:
                    raise LayerError(f"{where}: a conv block needs at least one filter")
                if spec["activation"] not in ACTIVATION_NAMES:
                    raise LayerError(f"{where}: activation {spec['activation']!r} is not one of "
                                     f"{', '.join(ACTIVATION_NAMES)}")  # fmt: skip
                out = spec["channels"]
                params = c * out * k * k + (2 * out if spec["batchnorm"] else out)
                c = out
            h, w = oh, ow
        rows.append(Row(name, describe(spec), (c, h, w), params))
    rows.append(Row("head", f"global average pool + linear {classes}", (classes, 1, 1),
                    c * classes + classes))  # fmt: skip
    return rows


def table(rows: list[Row], channels: int, height: int, width: int) -> str:
    lines = [f"{'stage':<10} {'layer':<34} {'output (CxHxW)':>15} {'parameters':>11}",
             f"{'input':<10} {'':<34} {f'{channels}x{height}x{width}':>15} {'':>11}"]  # fmt: skip
    for r in rows:
        shape = "x".join(map(str, r.shape)) if r.name != "head" else str(r.shape[0])
        lines.append(f"{r.name:<10} {r.text:<34} {shape:>15} {r.parameters:>11,}")
    lines.append(f"parameters: {sum(r.parameters for r in rows):,}")
    return "\n".join(lines)
