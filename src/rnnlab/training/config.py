"""`TrainConfig`: how a language model is trained (minibatches, optimizer, budget, checkpoints).

The CLI's `rnnlab train` flags are generated from these fields, so each default lives here once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from rnnlab.batches import SAMPLINGS, check_variable_window
from rnnlab.errors import UsageError

OPTIMIZERS = ("adam", "sgd")
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


@dataclass
class TrainConfig:
    """How to train: minibatches, optimizer, budget."""

    batch_size: int = field(default=32, metadata={"help": "rows per minibatch (B)"})
    num_steps: int = field(default=35, metadata={"help": "time steps per minibatch (T)"})
    sampling: str = field(
        default="sequential",
        metadata={
            "help": "random: shuffled windows, zero state each minibatch; sequential: state "
            "carried across minibatches (truncated BPTT)",
            "choices": SAMPLINGS,
        },
    )
    variable_window: bool = field(
        default=False,
        metadata={
            "help": "vary each minibatch's length as AWD-LSTM does: --num-steps with p 0.95 else "
            "half, plus N(0, 5) steps, at least 5 (sequential sampling only)"
        },
    )
    optimizer: str = field(default="adam", metadata={"help": "optimizer", "choices": OPTIMIZERS})
    lr: float = field(default=0.003, metadata={"help": "learning rate"})
    clip: float = field(default=1.0, metadata={"help": "max global norm of the gradient"})
    lr_decay: float = field(
        default=0.5,
        metadata={
            "help": "multiply the learning rate by this after an epoch that did not "
            "improve the held-out loss (1: never)"
        },
    )
    epochs: int = field(default=20, metadata={"help": "passes over the training text"})
    max_time: float | None = field(
        default=None, metadata={"help": "stop after this many seconds of training"}
    )
    max_steps: int | None = field(
        default=None,
        metadata={"help": "stop after this many optimizer steps in all, saving a checkpoint"},
    )
    seed: int = field(default=0, metadata={"help": "seed for initialisation, batches, dropout"})
    save_every: int = field(
        default=0,
        metadata={"help": "also save a checkpoint every N optimizer steps (0: at epoch ends only)"},
    )
    keep: int = field(
        default=3,
        metadata={"help": "checkpoints kept besides the best one; older ones are deleted"},
    )
    divergence_factor: float = field(
        default=3.0,
        metadata={
            "help": "warn once when the training loss exceeds this many times the first "
            "step's loss (0: never)"
        },
    )

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_steps", "epochs", "keep"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be at least 1, got {getattr(self, name)}")
        if self.sampling not in SAMPLINGS:
            raise UsageError(
                f"unknown sampling {self.sampling!r}: use one of {', '.join(SAMPLINGS)}"
            )
        check_variable_window(self.sampling, self.variable_window)
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(
                f"unknown optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}"
            )
        if not (0 < self.lr <= FLOAT32_MAX):  # the weights are float32: a larger step overflows
            raise UsageError(f"--lr must be a positive number, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise UsageError(f"--lr-decay must be in (0, 1], got {self.lr_decay}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise UsageError(f"--clip must be a positive number, got {self.clip}")
        if self.max_time is not None and not (math.isfinite(self.max_time) and self.max_time > 0):
            raise UsageError(
                f"--max-time must be a positive number of seconds, got {self.max_time}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.save_every < 0:
            raise UsageError(f"--save-every must be 0 (epoch ends) or more, got {self.save_every}")
        f = self.divergence_factor
        if not (math.isfinite(f) and (f == 0 or f > 1)):
            raise UsageError(f"--divergence-factor must be 0 (off) or above 1, got {f}")


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    return torch.optim.SGD(model.parameters(), lr=config.lr)
