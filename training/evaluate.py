"""Evaluate an exported ONNX model with onnxruntime on a test set; plots and the model card."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import expected_calibration_error, reliability


@dataclass
class EvalResult:
    labels: list[str]
    dataset: str
    confusion: np.ndarray  # [true, predicted]
    ece: float
    nll: float
    reliability: list[dict[str, Any]]
    seconds: float

    @property
    def size(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(self.size, 1))

    def per_class(self) -> list[dict[str, Any]]:
        rows = []
        for i, label in enumerate(self.labels):
            tp = self.confusion[i, i]
            predicted, actual = self.confusion[:, i].sum(), self.confusion[i].sum()
            precision = tp / predicted if predicted else 0.0
            recall = tp / actual if actual else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            rows.append(
                {"label": label, "precision": float(precision), "recall": float(recall),
                 "f1": float(f1), "support": int(actual)}
            )  # fmt: skip
        return rows

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "test_size": self.size,
            "test_accuracy": round(self.accuracy, 5),
            "ece": round(self.ece, 5),
            "nll": round(self.nll, 5),
        }


def run_model(path: Path, x: np.ndarray, batch: int = 500) -> tuple[np.ndarray, float]:
    import time

    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    t = time.perf_counter()
    probs = [
        session.run(["probabilities"], {"image": x[i : i + batch]})[0]
        for i in range(0, len(x), batch)
    ]
    return np.concatenate(probs), time.perf_counter() - t


def evaluate_model(
    path: Path, x: np.ndarray, y: np.ndarray, plot_dir: Path | None = None
) -> EvalResult:
    from .export import read_metadata

    meta = read_metadata(path)
    labels = meta["labels"]
    probs, seconds = run_model(path, x)
    pred = probs.argmax(1)
    k = len(labels)
    confusion = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    nll = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
    result = EvalResult(
        labels=labels,
        dataset=meta.get("metrics", {}).get("dataset", "?"),
        confusion=confusion,
        ece=expected_calibration_error(probs, y),
        nll=nll,
        reliability=reliability(probs, y),
        seconds=seconds,
    )
    if plot_dir is not None:
        plot_confusion(result, plot_dir / "confusion.png")
        plot_reliability(result, plot_dir / "reliability.png")
    return result


def plot_confusion(result: EvalResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = result.confusion
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(cm / cm.sum(1, keepdims=True).clip(1), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(result.labels)), result.labels, rotation=45, ha="right")
    ax.set_yticks(range(len(result.labels)), result.labels)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            share = cm[i, j] / max(cm[i].sum(), 1)
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if share > 0.5 else "black")  # fmt: skip
    title = f"Confusion matrix ({result.size} test images, {100 * result.accuracy:.2f} %)"
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(result: EvalResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    bins = [b for b in result.reliability if b["count"]]
    width = 1 / len(result.reliability)
    ax.bar([b["lo"] for b in bins], [b["accuracy"] for b in bins], width=width, align="edge",
           edgecolor="black", alpha=0.8, label="accuracy")  # fmt: skip
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title=f"Reliability (ECE {100 * result.ece:.2f} %, 15 bins)")  # fmt: skip
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_card(model_path: Path, result: EvalResult) -> Path:
    """The model card starts with the measured result and the command that measured it."""
    from .export import read_metadata

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
        f"resize `{inp['resize']}`, background `{inp['background']}`; scaling, normalisation "
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


def evaluate_command(args: argparse.Namespace) -> None:
    from .data import load_dataset
    from .export import read_metadata

    path = Path(args.model)
    meta = read_metadata(path)
    dataset = meta.get("metrics", {}).get("dataset", "fashion-mnist")
    ds = load_dataset(dataset, args.data_dir, int(meta["input"]["height"]))
    x, y = ds.test_x, ds.test_y
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    result = evaluate_model(path, x, y, None if args.no_card else path.parent)
    print(json.dumps(result.summary()))
    for row in result.per_class():
        print(f"{row['label']:>12}  precision {100 * row['precision']:5.1f} %  "
              f"recall {100 * row['recall']:5.1f} %")  # fmt: skip
    photos = None
    if args.photos:
        from .photo_eval import evaluate_photos

        n = min(args.photos, len(ds.test_x))
        examples = None if args.no_card else path.parent / "photos.png"
        photos = evaluate_photos(path, ds.test_x[:n], ds.test_y[:n], examples=examples)
        print(json.dumps({"photos": photos.accuracy, "framed": photos.framed}))
    if not args.no_card:
        card = write_card(path, result)
        if photos is not None:
            from .photo_eval import card_section

            command = f"python -m training evaluate {path} --photos {args.photos}"
            section = "\n".join(card_section(photos, command))
            card.write_text(f"{card.read_text()}\n{section}\n")
        print(f"card: {card}")
