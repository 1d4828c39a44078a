from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training import schedule
from training.schedule import TimedOneCycle
from training.train import train

from .test_train import tiny_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(schedule.time, "monotonic", c)
    return c


def _opt() -> torch.optim.AdamW:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)


def test_follows_onecycles_shape_over_the_budget(clock: Clock) -> None:
    opt = _opt()
    s = TimedOneCycle(opt, max_lr=0.01, total_steps=10**6, budget_s=100)
    lr = lambda: opt.param_groups[0]["lr"]  # noqa: E731
    assert lr() == pytest.approx(0.01 / 25) and opt.param_groups[0]["betas"][0] == 0.95
    clock.now += 25  # the end of the warm-up: the peak, lowest momentum
    s.step()
    assert lr() == pytest.approx(0.01) and opt.param_groups[0]["betas"][0] == pytest.approx(0.85)
    clock.now += 75  # the budget spent: annealed to the floor whatever the step count
    s.step()
    assert lr() == pytest.approx(0.01 / 25e4) and opt.param_groups[0]["betas"][0] == 0.95


def test_matches_torchs_onecycle_when_steps_lead() -> None:
    a, b = _opt(), _opt()
    ours = TimedOneCycle(a, max_lr=0.01, total_steps=200, budget_s=10**9)
    theirs = torch.optim.lr_scheduler.OneCycleLR(b, max_lr=0.01, total_steps=201, pct_start=0.25)
    for _ in range(200):
        # torch counts its phases from step 0 to total_steps - 1: within 2 % of the peak
        assert a.param_groups[0]["lr"] == pytest.approx(b.param_groups[0]["lr"], abs=2e-4)
        a.step()
        b.step()
        ours.step()
        theirs.step()


def test_state_carries_the_spent_budget_across_a_resume(clock: Clock) -> None:
    s = TimedOneCycle(_opt(), max_lr=0.01, total_steps=10**6, budget_s=100)
    clock.now += 40
    state = s.state_dict()
    clock.now += 1000  # the pause between the runs does not count
    t = TimedOneCycle(_opt(), max_lr=0.01, total_steps=10**6, budget_s=100)
    t.load_state_dict(state)
    assert t.progress() == pytest.approx(0.4)


def test_a_timed_bf16_run_trains_and_needs_a_budget(tiny_idx_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="time-budget"):
        train(tiny_config(tiny_idx_dir, tmp_path / "a", schedule="time"))
    cfg = tiny_config(tiny_idx_dir, tmp_path / "b", epochs=2, schedule="time", time_budget=600,
                      bf16=True, erase=0.5, limit_train=1200)  # fmt: skip
    train(cfg)
    last = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert last["epoch"] == 2 and last["history"][-1]["val_acc"] > 0.5
    assert last["scheduler"]["steps"] > 0
