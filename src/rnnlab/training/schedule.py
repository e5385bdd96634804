"""Learning-rate schedules that know the budget: warm up, then decay to a floor as it ends.

A run's budget is steps (`--max-steps`, or `--epochs` times the batches of an epoch) or
training seconds (`--max-time`); whichever ends first sets `progress`, from 0 at the first
step to 1 at the last. A fixed budget gains most from a rate that reaches its floor exactly
when the budget runs out (Li, Yumer and Ramanan 2020, "Budgeted Training"), which plateau
decay (halve after an epoch that did not improve) never plans for. `wsd` (warm-up, stable,
decay) holds the full rate for most of the budget and spends only its last `--cooldown` on
the fall: a short run that is still learning at the end loses less of its time to low rates
than under cosine, and still ends annealed (Hägele et al. 2024, "Scaling Laws and
Compute-Optimal Training Beyond Fixed Training Durations"). The factor is applied by
PyTorch's own `LambdaLR`, reading the trainer's progress rather than counting calls, so a
resumed run, whose progress is restored from its checkpoint, continues the same curve.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from rnnlab.training.config import LoopConfig

WARMUP_START = 0.01  # the first step's rate, as a fraction of --lr: never a wasted step at 0


def lr_factor(config: LoopConfig, progress: float) -> float:
    """The multiple of --lr at `progress` (0..1) of the budget for a cosine/linear/wsd schedule."""
    p = min(max(progress, 0.0), 1.0)
    w, floor = config.warmup, config.lr_floor
    if config.schedule == "constant":
        return 1.0
    if p < w:
        return WARMUP_START + (1 - WARMUP_START) * p / w
    if config.schedule == "wsd":
        start = 1 - config.cooldown  # the fall begins here
        if p <= start:
            return 1.0
        return floor + (1 - floor) * (1 - (p - start) / config.cooldown)
    x = (p - w) / (1 - w)  # 0..1 through the decay
    if config.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * x))
    return floor + (1 - floor) * (1 - x)  # linear


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: LoopConfig, progress: Callable[[], float]
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """A `LambdaLR` whose factor follows the budget (None for plateau and exponential decay,
    which the loop applies at epoch ends). `scheduler.step()` after each update sets the next
    step's rate."""
    if config.schedule in ("plateau", "exponential"):  # applied at epoch ends by the loop
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: lr_factor(config, progress()))
