"""The model contract of DESIGN.md as code: its metadata keys, how they are read and written, and
how a finished model is checked and saved (export, adopt and quantize all end here).

Every writer of a convscope model goes through ``save_model``: the full ``onnx.checker`` check
runs first and the file appears only when complete, so a failure never leaves half a model.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import onnx

OPSET = 18
METADATA_KEYS = ("labels", "input", "layers", "temperature", "metrics", "version", "created",
                 "recipe", "cam")  # fmt: skip
PARITY_TOLERANCE = 1e-5
INPUT_NAME = "image"
CAM_KINDS = ("exact", "approximate")


class ContractError(ValueError):
    """A model (or a labels file) that cannot be made to meet the contract: one sentence."""


def set_metadata(model: onnx.ModelProto, metadata: dict[str, Any]) -> None:
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=json.dumps(value))


def metadata_of(model: onnx.ModelProto) -> dict[str, Any]:
    """The contract's keys (others, such as the quantizer's own, are not JSON and not ours)."""
    return {p.key: json.loads(p.value) for p in model.metadata_props if p.key in METADATA_KEYS}


def read_metadata(path: str | Path) -> dict[str, Any]:
    return metadata_of(onnx.load(str(path), load_external_data=False))


def update_metadata(path: str | Path, **changes: Any) -> None:
    """Rewrite some keys of a saved model's metadata (the rest stays as it is)."""
    model = onnx.load(str(path))
    set_metadata(model, {**metadata_of(model), **changes})
    save_model(model, Path(path), check=False)  # the graph is as it was checked


def cam_entry(kind: str, layer: str, method: str) -> dict[str, str]:
    """The ``cam`` key: which stage the map is computed on, and whether it is an exact CAM."""
    if kind not in CAM_KINDS:
        raise ValueError(f"cam kind {kind!r} is not one of {CAM_KINDS}")
    return {"kind": kind, "layer": layer, "method": method}


def input_entry(
    height: int, width: int, channels: int, resize: str, background: str | None
) -> dict[str, Any]:
    if channels not in (1, 3):
        raise ValueError(f"the input has {channels} channels; convscope serves 1 (L) or 3 (RGB)")
    if resize not in ("pad", "crop", "stretch"):
        raise ValueError(f"resize {resize!r} is not pad, crop or stretch")
    if background not in ("dark", "light", None):
        raise ValueError(f"background {background!r} is not dark, light or none")
    return {"height": height, "width": width, "channels": channels,
            "mode": "L" if channels == 1 else "RGB", "resize": resize,
            "background": background}  # fmt: skip


def read_labels(path: str | Path) -> list[str]:
    """Class names from a JSON list or a text file with one name a line."""
    if not Path(path).is_file():
        raise ContractError(f"labels file {path} not found")
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        labels = [str(x) for x in json.loads(text)]
    else:
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise ContractError(f"{path} lists no labels")
    return labels


def save_model(model: onnx.ModelProto, out: Path, check: bool = True) -> Path:
    """Full check, then write to a temporary file beside ``out`` and rename it into place."""
    if check:
        onnx.checker.check_model(model, full_check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=".onnx", dir=out.parent)
    os.close(fd)
    try:
        onnx.save_model(model, tmp, save_as_external_data=False)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
