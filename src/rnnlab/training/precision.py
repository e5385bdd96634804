"""Numeric precision of training: fp32, or mixed precision (autocast) in bf16 or fp16.

fp32 is the default on every device: a character RNN of a few hundred units is bound by the
sequential recurrence, not by arithmetic, and fp32 keeps a GPU run comparable with a CPU one.
`--precision bf16|fp16` runs the forward pass under `torch.autocast` (the weights, the optimizer
and the carried state stay fp32 masters). fp16's narrow range needs a `GradScaler`: the loss is
scaled up before backward, the gradient unscaled before clipping (so `--clip` bounds the true
gradient), and a step whose scaled gradient overflowed is skipped while the scale shrinks. The
scaler's state is part of the checkpoint, so a resumed fp16 run continues exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from rnnlab.errors import UsageError

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Precision:
    """How one run computes: the autocast dtype (None: fp32) and the fp16 gradient scaler."""

    name: str = "fp32"
    device_type: str = "cpu"
    scaler: torch.amp.GradScaler | None = None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.name == "fp32":
            yield
            return
        with torch.autocast(self.device_type, dtype=DTYPES[self.name]):
            yield


FP32 = Precision()


def resolve_precision(name: str, device: torch.device) -> Precision:
    """The precision `--precision` asks for on `device`, refused where it cannot run."""
    if name not in PRECISIONS:
        raise UsageError(f"unknown --precision {name!r}: use one of {', '.join(PRECISIONS)}")
    if name == "fp32":
        return Precision("fp32", device.type)
    if name == "fp16" and device.type == "cpu":  # oneDNN has no fp16 LSTM; bf16 is the CPU's
        raise UsageError("--precision fp16 needs a GPU (cuda or mps): on the CPU use bf16 or fp32")
    if device.type == "mps" and name == "bf16" and not torch.backends.mps.is_macos_or_newer(14, 0):
        raise UsageError("--precision bf16 needs macOS 14 or newer on mps: use fp16 or fp32")
    if device.type == "cuda" and name == "bf16" and not torch.cuda.is_bf16_supported():
        raise UsageError("--precision bf16 is not supported by this GPU: use fp16 or fp32")
    scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None
    return Precision(name, device.type, scaler)


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores for fp32 matrix products on NVIDIA GPUs (Ampere and newer): about 10
    bits of mantissa instead of 23, so it is off unless asked for, and recorded with the run."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
