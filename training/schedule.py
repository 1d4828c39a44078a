"""OneCycle over a time budget: on a shared machine the epochs a run can afford are not known
in advance, so the learning rate follows the fraction of the budget spent (or of the steps,
whichever is further along) and the run ends annealed whenever the budget runs out.

The same shape as ``torch.optim.lr_scheduler.OneCycleLR``'s defaults: cosine warm-up from
max_lr/25 over the first 25 %, cosine annealing to max_lr/25e4, beta1 cycled 0.95 -> 0.85 -> 0.95.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch


def _cos(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2


class TimedOneCycle:
    """A drop-in for OneCycleLR in the loop: step(), state_dict(), load_state_dict()."""

    def __init__(
        self,
        opt: torch.optim.Optimizer,
        max_lr: float,
        total_steps: int,
        budget_s: float,
        pct_start: float = 0.25,
    ):
        self.opt, self.max_lr, self.total_steps = opt, max_lr, total_steps
        self.budget_s, self.pct_start = budget_s, pct_start
        self.steps, self._spent_before, self._t0 = 0, 0.0, time.monotonic()
        self._apply()

    def elapsed(self) -> float:
        """Seconds of budget spent, across resumes."""
        return self._spent_before + time.monotonic() - self._t0

    def progress(self) -> float:
        return min(1.0, max(self.steps / self.total_steps, self.elapsed() / self.budget_s))

    def lr_and_beta1(self, p: float) -> tuple[float, float]:
        low, final = self.max_lr / 25, self.max_lr / 25 / 1e4
        if p < self.pct_start:
            f = p / self.pct_start
            return _cos(low, self.max_lr, f), _cos(0.95, 0.85, f)
        f = (p - self.pct_start) / (1 - self.pct_start)
        return _cos(self.max_lr, final, f), _cos(0.85, 0.95, f)

    def _apply(self) -> None:
        lr, beta1 = self.lr_and_beta1(self.progress())
        for group in self.opt.param_groups:
            group["lr"] = lr
            if "betas" in group:
                group["betas"] = (beta1, group["betas"][1])

    def step(self) -> None:
        self.steps += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "elapsed": self.elapsed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps, self._spent_before = int(state["steps"]), float(state["elapsed"])
        self._t0 = time.monotonic()
        self._apply()
