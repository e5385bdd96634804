"""Numeric precision of training: fp32, or mixed precision (autocast) in bf16 or fp16.

fp32 is the default on every device: a character RNN of a few hundred units is bound by the
sequential recurrence, not by arithmetic, and fp32 keeps a GPU run comparable with a CPU one.
`--precision bf16|fp16` runs the forward pass under `torch.autocast` (the weights, the optimizer
and the carried state stay fp32 masters). fp16's narrow range needs a `GradScaler`: the loss is
scaled up before backward, the gradient unscaled before clipping (so `--clip` bounds the true
gradient), and a step whose scaled gradient overflowed is skipped while the scale shrinks. The
scaler's state is part of the checkpoint, so a resumed fp16 run continues exactly.

Whether a device can train a cell in a precision is not a property of the device type: oneDNN
builds a bf16 LSTM only on CPUs with native bf16 instructions (on others "could not create a
primitive descriptor for the LSTM forward propagation primitive"), and a kernel may lack a dtype.
So `resolve_precision` asks the device itself: `probe` runs one tiny forward and backward of the
cell under the precision, once per process (cached). A precision that fails is refused, exit 2,
with one line naming the precisions and cells this device does run. Refused rather than run in
fp32 with a warning: the precision is part of what a run reports (config.json, its losses); a
warning scrolls by, a run silently twice as slow or numerically different from the one asked
for does not; and the ranks of a group on different machines could fall back differently.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from rnnlab.devices import describe
from rnnlab.errors import UsageError
from rnnlab.model import CELLS, RNNLM, ModelConfig

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


def resolve_precision(
    name: str, device: torch.device, cell: str | None = None, impl: str = "torch"
) -> Precision:
    """The precision `--precision` asks for on `device`, refused where it cannot run.

    `cell`, `impl`: the recurrent core the run trains (`impl` as it runs on `device`, after
    `runtime.model_for_device`). A caller that does not know them yet passes no cell: every
    cell is then probed with PyTorch's cores, and any that fails refuses the precision.
    """
    if name not in PRECISIONS:
        raise UsageError(f"unknown --precision {name!r}: use one of {', '.join(PRECISIONS)}")
    if name == "fp32":
        return Precision("fp32", device.type)
    refused = unsupported(name, device)
    if refused:
        raise UsageError(refused)
    cells, impl = ((cell,), impl) if cell else (CELLS, "torch")
    for c in cells:
        why = probe(name, device, c, impl)
        if why is not None:
            raise UsageError(refusal(name, device, c, impl, why))
    scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None
    return Precision(name, device.type, scaler)


def unsupported(name: str, device: torch.device) -> str | None:
    """Why a device of this type cannot run `name` at all, known without running anything."""
    if name == "fp16" and device.type == "cpu":  # oneDNN has no fp16 LSTM; bf16 is the CPU's
        return "--precision fp16 needs a GPU (cuda or mps): on the CPU use bf16 or fp32"
    if device.type == "mps" and name == "bf16" and not torch.backends.mps.is_macos_or_newer(14, 0):
        return "--precision bf16 needs macOS 14 or newer on mps: use fp16 or fp32"
    if device.type == "cuda" and name == "bf16" and not torch.cuda.is_bf16_supported():
        return "--precision bf16 is not supported by this GPU: use fp16 or fp32"
    return None


def runnable(device: torch.device, cell: str, impl: str = "torch") -> list[str]:
    """The precisions `device` trains `cell` in (fp32 always), by the checks and the probe
    `resolve_precision` uses: what `bench/gpu.py` and the tests ask instead of assuming."""
    return [
        p
        for p in PRECISIONS
        if p == "fp32" or (unsupported(p, device) is None and probe(p, device, cell, impl) is None)
    ]


def refusal(name: str, device: torch.device, cell: str, impl: str, why: str) -> str:
    """One line: what failed, why, and what this device does train instead."""
    what = f"--cell {cell}" + (f" --impl {impl}" if impl != "torch" else "")
    others = [c for c in CELLS if c != cell and probe(name, device, c, impl) is None]
    instead = f"use --precision {' or '.join(runnable(device, cell, impl))}"
    if others:
        instead += f", or {name} with --cell {' or '.join(others)}"
    return f"--precision {name} cannot train {what} on this {describe(device)} ({why}): {instead}"


@functools.cache
def probe(name: str, device: torch.device, cell: str, impl: str = "torch") -> str | None:
    """None if `device` trains `cell` (`impl`) under `name`, else why not, in a few words.

    One forward and backward of a one-layer, 8-unit model on 2 x 3 ids: milliseconds, once per
    process. The global random streams are put back, so a probed run starts from the weights an
    unprobed one would (seeded figures do not move).
    """
    if name == "fp32":
        return None
    devices = [device] if device.type in ("cuda", "mps") else []
    with torch.random.fork_rng(devices=devices, device_type=device.type), torch.enable_grad():
        try:
            config = ModelConfig(cell=cell, hidden=8, layers=1, dropout=0.0, embed=0, impl=impl)
            model = RNNLM(4, config).to(device)
            X = torch.zeros(2, 3, dtype=torch.long, device=device)  # (B, T)
            with torch.autocast(device.type, dtype=DTYPES[name]):
                logits, _ = model(X)  # (B, T, V)
            logits.float().sum().backward()
            _synchronize(device)  # a GPU reports a failed kernel only when waited for
        except Exception as e:  # noqa: BLE001 - any failure means: not on this device
            return cause(e)
    return None


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def cause(e: BaseException, limit: int = 120) -> str:
    """The cause a kernel's error ends with (a TorchScript error's first lines say only where
    it failed), its first sentence, at most `limit` characters."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("frame #", "Exception raised"))]
    if not lines:
        return type(e).__name__
    gist = re.sub(r"^\w+(Error|Exception): ", "", lines[-1]).split(". ")[0].rstrip(".")
    return gist[:limit]


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores for fp32 matrix products on NVIDIA GPUs (Ampere and newer): about 10
    bits of mantissa instead of 23, so it is off unless asked for, and recorded with the run."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
