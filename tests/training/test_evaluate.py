from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from training.contract import read_metadata
from training.evaluate import evaluate_model

from .conftest import DEFAULT_MODEL, REPO


def test_committed_model_matches_its_card_on_the_real_test_set(
    fashion_test: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = fashion_test
    result = evaluate_model(DEFAULT_MODEL, x, y)
    card = (DEFAULT_MODEL.parent / "card.md").read_text()
    card_acc = float(re.search(r"Test accuracy: ([\d.]+) %", card).group(1))
    card_ece = float(re.search(r"ECE: ([\d.]+) %", card).group(1))
    assert result.size == 10_000
    assert abs(100 * result.accuracy - card_acc) <= 0.2
    assert abs(100 * result.ece - card_ece) <= 0.2
    meta = read_metadata(DEFAULT_MODEL)["metrics"]
    assert abs(meta["test_accuracy"] - result.accuracy) <= 0.002
    # the project's bar for the default model
    assert result.accuracy >= 0.935 and result.ece <= 0.015


def test_evaluate_command_writes_plots_and_card(tmp_path: Path) -> None:
    model = tmp_path / "fashion-mnist" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes(DEFAULT_MODEL.read_bytes())
    run = subprocess.run(
        [sys.executable, "-m", "training", "evaluate", str(model), "--limit", "2000"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.splitlines()[0])
    assert summary["test_size"] == 2000 and summary["test_accuracy"] > 0.8
    for name in ("card.md", "confusion.png", "reliability.png"):
        assert (model.parent / name).stat().st_size > 500
    card = (model.parent / "card.md").read_text()
    assert card.startswith("# fashion-mnist") and "| Ankle boot |" in card
