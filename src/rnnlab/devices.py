"""Which device a model runs on: `auto`, `cpu`, `cuda`, `cuda:N` or `mps`, checked up front.

`auto` takes the accelerator PyTorch reports (`torch.accelerator`, CUDA or Apple MPS), else the
CPU. Asking for a device that is not there is a usage error naming what is available, before any
data is read or any weights are loaded.
"""

from __future__ import annotations

import re

import torch

from rnnlab.errors import UsageError

DEVICE_HELP = "auto (the accelerator if there is one, else cpu), cpu, cuda, cuda:N or mps"


def available() -> list[str]:
    """The devices this machine offers, in the words `--device` takes."""
    out = ["cpu"]
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        out += ["cuda"] + [f"cuda:{i}" for i in range(n)]
    if torch.backends.mps.is_available():
        out.append("mps")
    return out


def _auto() -> torch.device:
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerator is not None and accelerator.is_available():
        found = accelerator.current_accelerator()
        if found is not None and found.type in ("cuda", "mps"):
            return torch.device(found.type)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch.device for a `--device` value; UsageError if it is malformed or absent."""
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        return _auto()
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
        raise UsageError(f"unknown --device {name!r}: use {DEVICE_HELP}")
    if name != "cpu" and name not in available():
        raise UsageError(
            f"--device {name} is not available on this machine: available: {', '.join(available())}"
        )
    return torch.device(name)


def describe(device: torch.device) -> str:
    """`cpu`, or `cuda:0 (NVIDIA H200)`: what the first line of a command says it runs on."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return device.type
