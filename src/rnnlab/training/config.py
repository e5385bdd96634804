"""`LoopConfig`: how the one training loop runs; `TrainConfig`: the language model's on top;
`RuntimeConfig`: where and how it computes.

The CLI's flags are generated from these fields, so each default lives here once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rnnlab.batches import SAMPLINGS, check_variable_window
from rnnlab.devices import DEVICE_HELP
from rnnlab.errors import UsageError, flag
from rnnlab.training.precision import PRECISIONS

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("plateau", "exponential", "cosine", "linear", "wsd", "constant")
UNLIMITED_EPOCHS = 1_000_000  # --max-time or --max-steps alone: the budget is theirs
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


@dataclass
class LoopConfig:
    """How the one training loop runs, for every family: optimizer, budget, checkpoints.

    Each field is declared once here; a family's config adds its own fields and may give a
    field another default (seq2seq: batch 64, 30 epochs, no decay, two checkpoints kept).
    """

    batch_size: int = field(default=32, metadata={"help": "rows per minibatch (B)"})
    optimizer: str = field(default="adam", metadata={"help": "optimizer", "choices": OPTIMIZERS})
    lr: float = field(default=0.003, metadata={"help": "learning rate"})
    clip: float = field(default=1.0, metadata={"help": "max global norm of the gradient"})
    lr_decay: float = field(
        default=0.5,
        metadata={
            "help": "multiply the learning rate by this at an epoch's end: after an epoch that "
            "did not improve the held-out loss (--schedule plateau), or after every epoch "
            "(--schedule exponential); 1: never"
        },
    )
    epochs: int | None = field(
        default=None,
        metadata={
            "help": "passes over the training data (default: 20 for a language model, 30 for "
            "seq2seq; as many as --max-time or --max-steps allow when either is given)"
        },
    )
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
        metadata={"help": "checkpoints kept (besides a language model's best); older ones deleted"},
    )
    divergence_factor: float = field(
        default=3.0,
        metadata={
            "help": "warn once when the training loss exceeds this many times the first "
            "step's loss (0: never)"
        },
    )
    schedule: str = field(
        default="plateau",
        metadata={
            "help": "learning rate: plateau (times --lr-decay after an epoch that did not "
            "improve), exponential (times --lr-decay after every epoch), cosine/linear (a "
            "warm-up, then down to --lr-floor exactly when the budget (--max-time seconds, "
            "--max-steps, --epochs) ends), wsd (warm-up, --lr held, then a linear fall to "
            "--lr-floor over the last --cooldown of the budget), or constant",
            "choices": SCHEDULES,
        },
    )
    warmup: float = field(
        default=0.02,
        metadata={"help": "cosine/linear/wsd: fraction of the budget spent warming up from ~0"},
    )
    lr_floor: float = field(
        default=0.0,
        metadata={"help": "cosine/linear/wsd: the final learning rate, as a fraction of --lr"},
    )
    cooldown: float = field(
        default=0.2,
        metadata={"help": "wsd: the last fraction of the budget, over which the rate falls"},
    )
    weight_decay: float = field(
        default=0.0,
        metadata={"help": "weight decay (decoupled with --optimizer adamw; L2 otherwise)"},
    )
    ema: float = field(
        default=0.0,
        metadata={
            "help": "keep an exponential moving average of the weights with this decay "
            "(e.g. 0.999), evaluated and saved as the model (0: off)"
        },
    )

    DEFAULT_EPOCHS = 20  # without --max-time or --max-steps (a class constant, not a field)

    def __post_init__(self) -> None:
        if self.epochs is None:
            budget = self.max_time is not None or self.max_steps is not None
            self.epochs = UNLIMITED_EPOCHS if budget else self.DEFAULT_EPOCHS
        for name in ("batch_size", "epochs", "keep"):
            if getattr(self, name) < 1:
                raise UsageError(f"{flag(name)} must be at least 1, got {getattr(self, name)}")
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
        if self.schedule not in SCHEDULES:
            raise UsageError(
                f"unknown schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}"
            )
        if not 0 <= self.warmup < 1:
            raise UsageError(f"--warmup must be in [0, 1), got {self.warmup}")
        if not 0 <= self.lr_floor <= 1:
            raise UsageError(f"--lr-floor must be in [0, 1], got {self.lr_floor}")
        if not 0 < self.cooldown <= 1:
            raise UsageError(f"--cooldown must be in (0, 1], got {self.cooldown}")
        if self.schedule == "wsd" and self.warmup + self.cooldown > 1:
            raise UsageError(
                f"--warmup {self.warmup} and --cooldown {self.cooldown} add up to more than "
                "the budget: lower one of them"
            )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UsageError(f"--weight-decay must be 0 or more, got {self.weight_decay}")
        if not 0 <= self.ema < 1:
            raise UsageError(f"--ema must be in [0, 1) (0: off), got {self.ema}")


def redefault(name: str, default: Any) -> Any:
    """The `LoopConfig` field `name` with another default and the same help text: a family's
    config changes a default without declaring the option a second time."""
    base = next(f for f in dataclasses.fields(LoopConfig) if f.name == name)
    return field(default=default, metadata=base.metadata)


@dataclass
class TrainConfig(LoopConfig):
    """How a language model is trained: the loop's options plus its windows of text."""

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
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "fine-tune: start from this run's best weights (RUN directory) on the new "
            "--corpus; shared characters keep their trained rows, new ones get fresh rows",
            "metavar": "RUN",
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_steps < 1:
            raise UsageError(f"--num-steps must be at least 1, got {self.num_steps}")
        if self.sampling not in SAMPLINGS:
            raise UsageError(
                f"unknown sampling {self.sampling!r}: use one of {', '.join(SAMPLINGS)}"
            )
        check_variable_window(self.sampling, self.variable_window)


def make_optimizer(model: nn.Module, config: LoopConfig) -> torch.optim.Optimizer:
    params, lr, wd = model.parameters(), config.lr, config.weight_decay
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, weight_decay=wd)


@dataclass
class RuntimeConfig:
    """How to compute (not part of what a run is: it may change on --resume)."""

    device: str = field(default="auto", metadata={"help": DEVICE_HELP})
    precision: str = field(
        default="fp32",
        metadata={
            "help": "fp32, or mixed precision on an accelerator: bf16, fp16 (with a gradient "
            "scaler)",
            "choices": PRECISIONS,
        },
    )
    tf32: bool = field(
        default=False,
        metadata={"help": "allow TF32 tensor cores for fp32 products on NVIDIA GPUs"},
    )
    deterministic: bool = field(
        default=False,
        metadata={"help": "deterministic CUDA kernels (slower; see docs/scaling-out.md)"},
    )

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(
                f"unknown --precision {self.precision!r}: use one of {', '.join(PRECISIONS)}"
            )
