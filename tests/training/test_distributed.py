from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.config import TrainConfig
from training.export import training_command

from .conftest import REPO


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tiny_idx_dir: Path, tmp_path: Path) -> None:
    """DDP with gloo on CPU: both ranks train, only rank 0 writes files, and the card's command
    is torchrun's (a plain `python -m training train` would train with twice the local batch)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "training", "train", "--dataset", "mnist", "--data-dir", str(tiny_idx_dir),
           "--no-allow-download", "--preset", "small", "--epochs", "2", "--val-size", "500",
           "--limit-train", "2000", "--batch-size", "64", "--out-dir", str(tmp_path)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pt", "curves.png", "history.json", "last.pt"]  # fmt: skip
    ckpt = torch.load(tmp_path / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 2
    # 2000 images less a 400-image validation split: each rank sees 800 per epoch in 25 steps
    assert ckpt["scheduler"]["last_epoch"] == 2 * 25
    assert ckpt["history"][-1]["val_acc"] > 0.5
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    command = training_command(TrainConfig.from_dict(best["config"]), best["processes"])
    assert command.startswith("torchrun --standalone --nproc_per_node=2 -m training train ")
