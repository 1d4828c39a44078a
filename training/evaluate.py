"""Evaluate an exported ONNX model with onnxruntime on a test set; plots and the model card."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import expected_calibration_error, reliability
from .contract import read_metadata


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
