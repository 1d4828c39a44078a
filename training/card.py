"""The model card (card.md beside model.onnx): the measured result first, then how it was made.

A model trained here gets its test-set result, recipe and plots; a model exported from someone
else's module or adopted from another tool's ONNX file gets what is known about it: where it came
from, its parity figure, its stages and which kind of class-activation map it serves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .contract import read_metadata
from .evaluate import EvalResult


def write_card(model_path: Path, result: EvalResult | None) -> Path:
    """The model card starts with the measured result and the command that measured it."""
    if result is None:
        return write_foreign_card(model_path)
    meta = read_metadata(model_path)
    recipe = meta.get("recipe", {})
    cal = meta.get("metrics", {}).get("calibration", {})
    inp = meta["input"]
    folder = model_path.parent
    name = folder.name
    lines = [
        f"# {name} (version {meta.get('version', '?')})",
        "",
        f"**Test accuracy: {100 * result.accuracy:.2f} %** · **ECE: {100 * result.ece:.2f} %** "
        f"(15 bins) · NLL {result.nll:.4f} — on the {result.size:,} images of the "
        f"{result.dataset} test set, measured on this ONNX file by",
        "",
        "```",
        f"python -m training evaluate {model_path}",
        "```",
        "",
        "## Model",
        f"- Input: uint8 `[N, {inp['height']}, {inp['width']}, {inp['channels']}]` "
        f"({inp['mode']}), "
        f"resize `{inp['resize']}`, background `{inp['background']}`"
        + (
            f", framing `{inp['framing']}` (photos framed like the training pictures)"
            if inp.get("framing")
            else ""
        )
        + "; scaling, normalisation "
        "(mean {m}, std {s}) and the temperature are inside the graph.".format(
            m=recipe.get("normalization", {}).get("mean"),
            s=recipe.get("normalization", {}).get("std"),
        ),
        f"- Parameters: {recipe.get('parameters', 0):,}; layers: "
        + ", ".join(
            f"{ly['name']} ({ly['kind']} k{ly['kernel']} s{ly['stride']} p{ly['padding']} "
            f"-> {ly['channels']}x{ly['height']}x{ly['width']})"
            for ly in meta["layers"]
        )
        + "; global average pooling; linear head.",
        f"- Calibration: temperature {meta['temperature']:.4f} fitted on the validation split "
        f"(validation ECE {100 * cal.get('val_ece_before', float('nan')):.2f} % before, "
        f"{100 * cal.get('val_ece_after', float('nan')):.2f} % after).",
        "",
        "## Recipe",
        "Trained with",
        "",
        "```",
        recipe.get("command", "?"),
        f"python -m training export {recipe.get('training', {}).get('out_dir', 'runs')}/best.pt"
        f" --out {model_path}" + (" --int8" if (folder / "model-int8.onnx").exists() else ""),
        "```",
        "",
        f"- {recipe.get('epochs_run', '?')} epochs (best validation accuracy at epoch "
        f"{recipe.get('best_epoch', '?')}), {recipe.get('train_seconds', 0) / 60:.1f} min of "
        f"training on {recipe.get('machine', '?')}.",
        "- AdamW + OneCycle, label smoothing, random crop with padding"
        + (", horizontal flips" if recipe.get("training", {}).get("flip") is not False else "")
        + (
            f"; the kept weights are a moving average (decay {recipe['training']['ema']} a step),"
            " with BatchNorm statistics measured for them"
            if recipe.get("training", {}).get("ema")
            else ""
        )
        + "; settings: `"
        + json.dumps(
            {
                k: v
                for k, v in recipe.get("training", {}).items()
                if v is not None and k not in ("resume", "out_dir", "allow_download")
            },
            separators=(", ", ": "),
        )
        + "`.",
        "",
        "## Per class",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
        *[
            f"| {r['label']} | {100 * r['precision']:.1f} % | {100 * r['recall']:.1f} % | "
            f"{100 * r['f1']:.1f} % | {r['support']} |"
            for r in result.per_class()
        ],
        "",
        "## Plots",
        "![confusion matrix](confusion.png)",
        "",
        "![reliability diagram](reliability.png)",
    ]
    int8 = folder / "model-int8.onnx"
    if int8.exists():
        m = read_metadata(int8).get("metrics", {})
        if "test_accuracy" in m:
            after_calibration = next(i for i, s in enumerate(lines) if s.startswith("- Calib")) + 1
            lines[after_calibration:after_calibration] = [
                f"- INT8 variant `model-int8.onnx` ({int8.stat().st_size / 1e6:.2f} MB, "
                f"{m.get('quantization', 'static QDQ')}): test accuracy "
                f"{100 * m['test_accuracy']:.2f} % on {m.get('test_size', '?')} images "
                f"({100 * (m['test_accuracy'] - m.get('float_test_accuracy', 0)):+.2f} points).",
            ]
    if (folder / "curves.png").exists():
        lines += ["", "![training curves](curves.png)"]
    card = folder / "card.md"
    card.write_text("\n".join(lines) + "\n")
    return card


def _layer_line(layers: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{ly['name']} ({ly['kind']} k{ly['kernel']} s{ly['stride']} p{ly['padding']} "
        f"-> {ly['channels']}x{ly['height']}x{ly['width']})"
        for ly in layers
    )


def write_foreign_card(model_path: Path) -> Path:
    """The card of a model convscope did not train: its origin and parity instead of accuracy."""
    meta = read_metadata(model_path)
    recipe, inp, cam = meta.get("recipe", {}), meta["input"], meta.get("cam")
    parity = recipe.get("parity", {})
    norm = recipe.get("normalization", {})
    lines = [
        f"# {model_path.parent.name} (version {meta.get('version', '?')})",
        "",
        f"**Not trained by convscope: no test-set result is known.** Made by "
        f"`{recipe.get('source', '?')}` from `{recipe.get('original', '?')}`; onnxruntime on this "
        f"file matches {parity.get('reference', 'the original')} within max |dp| "
        f"{parity.get('max_abs_probabilities', float('nan')):.1e} on "
        f"{parity.get('pictures', '?')} pictures. Measure an accuracy with",
        "",
        "```",
        f"python -m training evaluate {model_path} --data-dir DATA",
        "```",
        "",
        "## How it was made",
        "```",
        recipe.get("command", "?"),
        "```",
        "",
        "## Model",
        f"- Input: uint8 `[N, {inp['height']}, {inp['width']}, {inp['channels']}]` "
        f"({inp['mode']}), resize `{inp['resize']}`, background `{inp['background']}`; scaling, "
        f"normalisation (mean {norm.get('mean')}, std {norm.get('std')}) and the layout change "
        "are inside the graph.",
        f"- Parameters: {recipe.get('parameters', '?'):,}; stages: {_layer_line(meta['layers'])}."
        if isinstance(recipe.get("parameters"), int)
        else f"- Stages: {_layer_line(meta['layers'])}.",
        "- Class-activation map: "
        + (
            f"{cam['kind']} ({cam['method']}, on {cam['layer']})."
            if cam
            else "none (the service answers CAM requests with 404)."
        ),
    ]
    card = model_path.parent / "card.md"
    card.write_text("\n".join(lines) + "\n")
    return card
