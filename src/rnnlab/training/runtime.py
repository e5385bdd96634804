"""Where and how a run computes: device, precision, determinism, and the processes it spans.

`RuntimeConfig` holds what the user asks for (`--device`, `--precision`, `--tf32`,
`--deterministic`); `setup_runtime` turns it into a `Runtime` once per process, before any data
or weights exist, refusing what this machine cannot do. None of it changes what a run is: a
checkpoint holds no device, and a run trained on a GPU or on N processes loads anywhere.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from rnnlab.devices import describe, resolve_device
from rnnlab.errors import UsageError
from rnnlab.model import ModelConfig
from rnnlab.training import distributed
from rnnlab.training.config import RuntimeConfig
from rnnlab.training.distributed import World
from rnnlab.training.precision import FP32, Precision, resolve_precision, set_tf32


@dataclass
class Runtime:
    """The resolved runtime of this process."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: Precision = field(default_factory=lambda: FP32)
    world: World = field(default_factory=World)
    backend: str | None = None
    tf32: bool = False
    deterministic: bool = False

    def describe(self) -> str:
        """`cpu, fp32` or `cuda:0 (NVIDIA H200), bf16, 2 processes (nccl)`."""
        out = f"{describe(self.device)}, {self.precision.name}"
        if self.tf32:
            out += " + tf32"
        if self.world.distributed:
            out += f", {self.world.size} processes ({self.backend})"
        return out

    def record(self, batch_size: int) -> dict[str, Any]:
        """What config.json says about how the run was trained."""
        return {
            "device": self.device.type,
            "precision": self.precision.name,
            "tf32": self.tf32,
            "deterministic": self.deterministic,
            "world_size": self.world.size,
            "backend": self.backend,
            "rows_per_rank": batch_size // self.world.size,
        }


CPU = Runtime()


def setup_runtime(
    config: RuntimeConfig,
    batch_size: int,
    threads: int = 0,
    cell: str | None = None,
    impl: str = "torch",
) -> Runtime:
    """Resolve the device and precision, join torchrun's process group, pin threads.

    `cell` and `impl` name the recurrent core the run trains, so that the precision is probed
    on it (`precision.probe`): a device that cannot train that cell in it is refused up front.
    """
    world = distributed.world_from_env()
    device = distributed.local_device(resolve_device(config.device), world)
    backend = distributed.setup(world, device, batch_size)
    if world.distributed and not threads:
        torch.set_num_threads(distributed.default_threads(world))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        set_tf32(config.tf32)
    elif config.tf32:
        raise UsageError("--tf32 applies to NVIDIA GPUs only: drop it, or use --device cuda")
    if config.deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; it reads this when CUDA starts.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    if impl == "fast" and device.type != "cpu":  # as model_for_device will decide
        impl = "torch"
    precision = resolve_precision(config.precision, device, cell, impl)
    return Runtime(device, precision, world, backend, config.tf32, config.deterministic)


def model_for_device(
    config: ModelConfig, device: torch.device, warn: Callable[[str], None]
) -> ModelConfig:
    """`--impl fast` is a CPU kernel: on an accelerator, say so and take torch's fused path
    (cuDNN on CUDA, MPS's own kernels), never a silently slow fallback."""
    if config.impl == "fast" and device.type != "cpu":
        warn(
            f"note: --impl fast is rnnlab's CPU kernel; on {device.type} the run uses PyTorch's "
            f"fused {'cuDNN' if device.type == 'cuda' else device.type.upper()} RNN (--impl torch)"
        )
        return dataclasses.replace(config, impl="torch")
    return config
