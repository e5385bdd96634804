"""Checkpointing: what an exact resume needs, saved and restored, for every family's trainer.

A training checkpoint (`rnnlab.checkpoint`: a directory with a sha256 manifest, written
atomically) holds the weights, the optimizer, every RNG stream (torch, Python, numpy, and the
caller's own generators) and the caller's progress. Restoring all of it makes `--resume` in a new
process continue bit for bit (same threads). Both families (language model, seq2seq) save through
here, so they share the guarantees: no checkpoint ever holds a non-finite tensor, a damaged newest
checkpoint falls back to the one before it with a warning.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rnnlab import checkpoint as ckpt
from rnnlab.errors import CheckpointError, NumericalError
from rnnlab.training import distributed
from rnnlab.training.logs import RunLogs

# The trainer (rnnlab.training.loop.Trainer) that `save_trainer`/`resume_trainer` read and set:
# typed loosely because the loop imports this module, not the reverse.
TrainerLike = Any


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


# -- a trainer's progress: what `Trainer.save` writes and `Trainer.resume` reads back --------------


def save_trainer(
    trainer: TrainerLike, best: bool, raw: dict[str, torch.Tensor] | None = None
) -> None:
    """Write a checkpoint of everything an exact resume of `trainer` needs; `best` marks it.

    With several processes every rank takes part (the carried state's rows and the RNG
    streams are gathered) and rank 0 writes; all ranks learn whether the write succeeded.
    """
    world = trainer.runtime.world
    tensors = {"rng.batches": trainer.batch_gen.get_state()}
    in_epoch = None
    ep = trainer.current
    if ep is not None:
        tensors["epoch.start"] = ep.start
        if ep.state is not None:
            parts = ep.state if isinstance(ep.state, tuple) else (ep.state,)
            for i, part in enumerate(parts):  # (L, B, H): the global batch's rows
                tensors[f"epoch.state.{i}"] = distributed.gather_rows(part.float(), world)
        in_epoch = ep.sums()
    tensors.update(_rank_streams(trainer.runtime))
    if raw is not None:  # the model holds the average (--ema): the weights resume continues
        tensors.update({f"raw.{k}": v for k, v in raw.items()})
        tensors["ema.n_averaged"] = trainer.ema.n_averaged
    best_step = trainer.step if best else trainer.best_step
    progress = {
        "epoch": trainer.epoch,
        "step": trainer.step,
        "in_epoch": in_epoch,
        "best_valid_loss": ckpt.finite(trainer.best_valid),
        "best_epoch": trainer.best_epoch,
        "best_step": best_step,
        "initial_loss": trainer.initial_loss,
        "divergence_warned": trainer.divergence_warned,
        "done_seconds": trainer.done_seconds,
        "train_config": dataclasses.asdict(trainer.config),
        "world_size": world.size,
    }
    scaler = trainer.runtime.precision.scaler
    if scaler is not None:
        progress["grad_scaler"] = scaler.state_dict()
    failure = None
    try:
        if world.is_main and not trainer.files_saved:  # data, not progress: written once
            files = trainer.family.files_once()
            if files:
                ckpt.save_files(trainer.run_dir, files)
        save_checkpoint(
            trainer.run_dir,
            trainer.step,
            trainer.model,
            trainer.optimizer,
            tensors,
            progress,
            trainer.run_config,
            trainer.logs,
            keep=trainer.config.keep,
            protect=[] if best_step is None else [best_step],
            where=f"at step {trainer.step} (epoch {trainer.epoch + 1}); not saved: "
            f"{trainer.kept()}: lower --lr or --clip",
            write=world.is_main,
        )
    except NumericalError:
        raise  # every rank sees the same non-finite tensor and stops alike
    except OSError as e:
        failure = f"cannot write a checkpoint in {str(trainer.run_dir)!r}: {e.strerror or e}"
    failure = distributed.broadcast_object(failure, world)
    if failure:
        raise CheckpointError(failure)
    trainer.files_saved = True
    trainer.saved_step, trainer.best_step = trainer.step, best_step


def _rank_streams(runtime: Any) -> dict[str, torch.Tensor]:
    """Dropout streams: torch's CPU (and CUDA) RNG state, one per rank."""
    world, device = runtime.world, runtime.device
    out = {}
    if world.distributed:
        out["rng.torch.ranks"] = distributed.gather_stack(torch.get_rng_state(), world)
    if device.type == "cuda":
        out["rng.cuda.ranks"] = distributed.gather_stack(torch.cuda.get_rng_state(device), world)
    return out


def resume_trainer(trainer: TrainerLike) -> None:
    """Continue `trainer` from the newest complete checkpoint, mid-epoch if it was saved there.

    The same number of processes continues bit for bit (CPU, same threads); another number
    re-slices the global state and continues correctly, but not bit for bit (warned).
    """
    world, device = trainer.runtime.world, trainer.runtime.device
    restored = restore_checkpoint(trainer.run_dir, trainer.model, trainer.optimizer, trainer.warn)
    tensors, progress = restored.tensors, restored.trainer
    trainer.batch_gen.set_state(tensors["rng.batches"])
    trainer.epoch = progress["epoch"]
    trainer.step = trainer.saved_step = progress["step"]
    best = progress["best_valid_loss"]
    trainer.best_valid = math.inf if best is None else best
    trainer.best_epoch = progress["best_epoch"]
    trainer.best_step = progress["best_step"]
    trainer.initial_loss = progress["initial_loss"]
    trainer.divergence_warned = progress["divergence_warned"]
    trainer.done_seconds = progress.get("done_seconds", 0.0)
    trainer.files_saved = True
    raw = {k.removeprefix("raw."): v for k, v in tensors.items() if k.startswith("raw.")}
    if trainer.ema is not None and raw:  # the weights read are the average; train the raw
        trainer.ema.module.load_state_dict(trainer.model.state_dict())
        trainer.ema.n_averaged.copy_(tensors["ema.n_averaged"])
        trainer.model.load_state_dict(raw)
    then = progress.get("world_size", 1)
    if then != world.size:
        trainer.warn(
            f"warning: resuming a run of {then} process(es) with {world.size}: the global "
            "batch and state are re-sliced, so it continues correctly but not bit for bit"
        )
    elif "rng.torch.ranks" in tensors:
        torch.set_rng_state(tensors["rng.torch.ranks"][world.rank].clone())  # its own buffer
    if device.type == "cuda" and "rng.cuda.ranks" in tensors:
        streams = tensors["rng.cuda.ranks"]
        torch.cuda.set_rng_state(streams[world.rank % len(streams)].clone(), device)
    scaler = trainer.runtime.precision.scaler
    if scaler is not None and "grad_scaler" in progress:
        scaler.load_state_dict(progress["grad_scaler"])
    trainer.current = None
    if progress.get("in_epoch"):
        rows = world.rows(trainer.config.batch_size)
        parts = [
            tensors[k][:, rows].contiguous().to(device)  # (L, B/N, H): this rank's rows
            for k in sorted(k for k in tensors if k.startswith("epoch.state."))
        ]
        state = None
        if parts:
            state = tuple(parts) if len(parts) == 2 else parts[0]
        trainer.current = trainer.family.restore_epoch(
            tensors["epoch.start"], state, progress["in_epoch"]
        )
    trainer.logs.cut_back(trainer.epoch, trainer.step)
