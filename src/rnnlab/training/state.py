"""Checkpoint state: what an exact resume needs besides the weights, saved and restored.

A training checkpoint (`rnnlab.checkpoint`: a directory with a sha256 manifest, written
atomically) holds the weights, the optimizer, every RNG stream (torch, Python, numpy, and the
caller's own generators) and the caller's progress. Restoring all of it makes `--resume` in a new
process continue bit for bit (same threads). Both families (language model, seq2seq) save through
here, so they share the guarantees: no checkpoint ever holds a non-finite tensor, a damaged newest
checkpoint falls back to the one before it with a warning.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rnnlab import checkpoint as ckpt
from rnnlab.errors import NumericalError
from rnnlab.training.logs import RunLogs


def _python_numpy_rng() -> dict[str, Any]:
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "rng_python": [py_version, list(py_state), py_gauss],
        "rng_numpy": [np_name, np_keys.tolist(), np_pos, np_has_gauss, np_gauss],
    }


def _restore_python_numpy_rng(trainer: dict[str, Any]) -> None:
    py_version, py_state, py_gauss = trainer["rng_python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = trainer["rng_numpy"]
    keys = np.array(np_keys, dtype=np.uint32)
    np.random.set_state((np_name, keys, np_pos, np_has_gauss, np_gauss))


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    trainer: dict[str, Any],
    run_config: dict[str, Any],
    logs: RunLogs,
    keep: int,
    protect: Iterable[int] = (),
    where: str = "",
    write: bool = True,
) -> None:
    """Write checkpoint `step` of a run: weights, optimizer, RNGs, `tensors` and `trainer`.

    Order matters for a crash at any moment: the logs first (they may run ahead of the
    checkpoints, and a resume cuts them back), then config.json if it changed, then the
    checkpoint directory, which exists only once complete, then pruning of old ones. `where`
    ("at step N ...; not saved: ...") completes the refusal of a non-finite tensor. Every
    tensor is copied to the CPU first: a checkpoint names no device, so a run trained on a GPU
    loads on a CPU and the reverse. `write` False checks without writing (a rank > 0).
    """
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    optim_tensors, optim_plain = ckpt.optimizer_to_checkpoint(optimizer)
    tensors = {**optim_tensors, **tensors, "rng.torch": torch.get_rng_state()}
    tensors = {k: v.detach().cpu() for k, v in tensors.items()}
    bad = ckpt.non_finite({**weights, **tensors})
    if bad:  # a checkpoint must never hold what cannot be resumed from
        raise NumericalError(f"{bad[0]} became non-finite {where}")
    if not write:
        return
    trainer = {
        **trainer,
        "optimizer": optim_plain,
        **_python_numpy_rng(),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    logs.write()
    config = ckpt.json_bytes(run_config)
    path = run_dir / ckpt.CONFIG
    if not path.exists() or path.read_bytes() != config:
        ckpt.save_files(run_dir, {ckpt.CONFIG: config})
    ckpt.write_checkpoint(
        run_dir,
        step,
        {
            ckpt.WEIGHTS: ckpt.tensors_bytes(weights),
            ckpt.STATE: ckpt.tensors_bytes(tensors),
            ckpt.TRAINER: ckpt.json_bytes(trainer),
        },
    )
    ckpt.prune(run_dir, step, keep, protect)


@dataclass
class Restored:
    """A checkpoint read back: the caller's own tensors and progress (weights, optimizer and the
    global RNGs are already restored)."""

    path: Path
    tensors: dict[str, torch.Tensor]
    trainer: dict[str, Any]


def restore_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    warn: Callable[[str], None],
) -> Restored:
    """Load the newest complete checkpoint of `run_dir` into `model`, `optimizer` and the RNGs.

    A damaged newest checkpoint (truncated, a flipped bit, a missing file) is skipped for the
    one before it, with a one-line warning; so is a change of torch version or thread count,
    which breaks bit-exactness but not correctness.
    """
    path, files, skipped = ckpt.newest_complete(run_dir)
    if skipped:
        more = f" (and {len(skipped) - 1} newer)" if len(skipped) > 1 else ""
        warn(f"warning: {skipped[0]}{more}; resuming from {path.name} instead")
    weights = ckpt.parse_tensors(files[ckpt.WEIGHTS], path / ckpt.WEIGHTS)
    tensors = ckpt.parse_tensors(files[ckpt.STATE], path / ckpt.STATE)
    trainer = ckpt.parse_json(files[ckpt.TRAINER], path / ckpt.TRAINER)
    model.load_state_dict(weights)
    optimizer.load_state_dict(
        ckpt.optimizer_from_checkpoint(
            {k: v for k, v in tensors.items() if k.startswith("optim.")}, trainer["optimizer"]
        )
    )
    torch.set_rng_state(tensors["rng.torch"])
    _restore_python_numpy_rng(trainer)
    for name, key, now in (
        ("torch", "torch_version", torch.__version__),
        ("threads", "threads", torch.get_num_threads()),
    ):
        then = trainer.get(key)
        if then is not None and then != now:
            warn(
                f"warning: checkpoint was written with {name} {then}, resuming with {now}: "
                "results will not match an uninterrupted run bit for bit"
            )
    return Restored(path, tensors, trainer)
