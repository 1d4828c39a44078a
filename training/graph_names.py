"""Stage names for models convscope did not build: readable, unique and safe in a URL path."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def stage_name(raw: str, kind: str, taken: set[str], op_types: tuple[str, ...] = ()) -> str:
    """``/features/conv1/Conv`` -> ``features.conv1``; ``layer1.0.conv1`` stays; else conv3."""
    parts = [p for p in re.split(r"[/:]", raw) if p]
    if parts and parts[-1].lower() in {t.lower() for t in op_types}:
        parts = parts[:-1]  # torch.onnx and tf2onnx end node names with the op type
    name = _UNSAFE.sub("_", ".".join(parts)).strip("._-")
    if not name or name in taken:
        n = sum(1 for t in taken if re.fullmatch(rf"{kind}\d+", t)) + 1
        while f"{kind}{n}" in taken:
            n += 1
        name = f"{kind}{n}"
    taken.add(name)
    return name
