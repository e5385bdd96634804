"""One `rnnlab train` from configs to a finished run: the path the CLI and `rnnlab.train` share.

`start_run` prepares the data, claims (or reopens) the run directory and builds the Trainer;
`finish_run` trains it and sums it up. Between the two a caller may print what it likes; a
SIGINT/SIGTERM surfaces as `StopRequested` after the checkpoint is saved.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnlab import checkpoint as ckpt
from rnnlab.batches import check_length
from rnnlab.corpus import DataConfig
from rnnlab.data import prepare_data
from rnnlab.errors import UsageError
from rnnlab.metrics import perplexity
from rnnlab.model import ModelConfig, count_parameters
from rnnlab.presets import Preset
from rnnlab.training import distributed
from rnnlab.training.config import TrainConfig
from rnnlab.training.loop import EpochResult, Trainer
from rnnlab.training.runs import claim_run_dir, configs_from_json, default_run_dir, new_trainer
from rnnlab.training.runtime import CPU, Runtime, RuntimeConfig, model_for_device, setup_runtime


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resume_configs(
    run_dir: Path,
    data_values: dict[str, Any],
    model_values: dict[str, Any],
    train_values: dict[str, Any],
) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    """The stored configs of the run in `run_dir`, with `train_values` on top.

    Rerunning the very command that started a run, with --resume appended, must continue it: a
    data or model value equal to the stored one is no change. One that differs is refused,
    naming both values, since the weights and the vocabulary could not follow it.
    """
    claim_run_dir(run_dir, force=False, resume=True)
    stored = ckpt.read_json(run_dir, ckpt.CONFIG)
    data_cfg, model_cfg, stored_train = configs_from_json(stored)
    changed = [
        f"{_flag(name)} (the run has {getattr(cfg, name)!r}, given {value!r})"
        for cfg, values in ((data_cfg, data_values), (model_cfg, model_values))
        for name, value in values.items()
        if getattr(cfg, name) != value
    ]
    if changed:
        raise UsageError(
            f"cannot change {', '.join(changed)} when resuming: the run keeps its data and "
            "model; drop the flag, or start a new run with another --out"
        )
    return data_cfg, model_cfg, dataclasses.replace(stored_train, **train_values)


def run_configs(
    preset: Preset | None,
    data_values: dict[str, Any],
    model_values: dict[str, Any],
    train_values: dict[str, Any],
    resume_dir: Path | None = None,
) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    """The configs a `rnnlab train` (or `rnnlab.train`) asks for: the dataclass defaults, then
    the preset, then the values given; with `resume_dir`, that run's stored configs, checked
    against the data and model values given (`resume_configs`)."""
    pre = preset or Preset("", "", {}, {}, {}, "")
    if resume_dir is not None:
        return resume_configs(
            resume_dir,
            {**pre.data, **data_values},
            {**pre.model, **model_values},
            train_values,
        )
    return (
        DataConfig(**{**pre.data, **data_values}),
        ModelConfig(**{**pre.model, **model_values}),
        TrainConfig(**{**pre.train, **train_values}),
    )


def open_run(
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    runtime_cfg: RuntimeConfig,
    run_dir: Path | None = None,
    force: bool = False,
    resume: bool = False,
    threads: int = 0,
    progress: bool = False,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = _stderr,
) -> Trainer:
    """The device and precision first (refused before any data is read), then `start_run` on
    them: what `rnnlab train` and `rnnlab.train` both do before training."""
    runtime = setup_runtime(runtime_cfg, train_cfg.batch_size, threads=threads)
    model_cfg = model_for_device(model_cfg, runtime.device, warn)
    return start_run(
        data_cfg, model_cfg, train_cfg, run_dir, force=force, resume=resume, progress=progress,
        log=log, warn=warn, runtime=runtime,
    )  # fmt: skip


def start_run(
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    run_dir: Path | None = None,
    force: bool = False,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = _stderr,
    runtime: Runtime = CPU,
) -> Trainer:
    """The Trainer of a new run in `run_dir` (refused if not empty, unless `force`), or of the
    run there, restored from its newest checkpoint (`resume`).

    A group that torchrun restarted after a rank died (`--max-restarts`) runs the same command
    line, without --resume: it resumes from the newest complete checkpoint if there is one, and
    starts the run afresh otherwise.
    """
    world = runtime.world
    data = prepare_data(data_cfg)
    what = "training text"
    if data_cfg.train_chars is not None:
        what = f"training text cut to --train-chars {data_cfg.train_chars}"
    check_length(len(data.train_ids), train_cfg.batch_size, train_cfg.num_steps, what)
    if len(data.valid_ids) < 2:
        raise UsageError("held-out text is too short: raise --valid-fraction")
    if run_dir is None:  # one name for every rank: the time stamp is rank 0's
        run_dir = distributed.broadcast_object(default_run_dir(data_cfg, model_cfg), world)
    run_dir = Path(run_dir)
    if world.restart and not resume:
        resume = bool(ckpt.list_checkpoints(run_dir))
        force = force or not resume
    if not resume:
        distributed.on_main(world, lambda: claim_run_dir(run_dir, force=force, resume=False))
    distributed.barrier(world)
    trainer = new_trainer(
        data, data_cfg, model_cfg, train_cfg, run_dir, runtime=runtime, progress=progress,
        log=log, warn=warn,
    )  # fmt: skip
    if resume:
        stored = ckpt.read_json(run_dir, ckpt.CONFIG)
        if stored["vocab"] != data.vocab.to_json():
            raise UsageError("the corpus changed since this run started: its vocabulary differs")
        trainer.resume()
        trainer.log(
            f"resuming {run_dir} after epoch {trainer.epoch} (step {trainer.step}) "
            f"[{runtime.describe()}]"
        )
    else:
        trainer.log(
            f"training a {model_cfg.cell.upper()} ({count_parameters(trainer.model):,} "
            f"parameters, vocabulary {len(data.vocab)}) on {data_cfg.corpus}: "
            f"{len(data.train_ids):,} train / {len(data.valid_ids):,} held-out characters "
            f"-> {run_dir} [{runtime.describe()}]"
        )
    if trainer.epoch >= train_cfg.epochs:
        raise UsageError(
            f"run already trained {trainer.epoch} epochs: pass a larger --epochs to continue"
        )
    return trainer


@dataclass
class RunResult:
    """A finished (or budget-stopped) run: its trainer, last epoch and wall time."""

    trainer: Trainer
    last: EpochResult
    seconds: float

    def summary(self) -> dict[str, Any]:
        """The figures `rnnlab train --json` prints (the `valid_*` ones are the last epoch's)."""
        t, last = self.trainer, self.last
        chars = sum(r.train.chars for r in t.history)
        return {
            "train_loss": last.train.loss,
            "train_ppl": last.train.ppl,
            "valid_loss": last.valid.loss,
            "valid_ppl": last.valid.ppl,
            "valid_bpc": last.valid.bpc,
            "best_valid_ppl": perplexity(t.best_valid),
            "best_epoch": t.best_epoch,
            "epochs": t.epoch,
            "steps": t.step,
            "seconds": round(self.seconds, 3),
            "chars_per_sec": round(chars / max(sum(r.seconds for r in t.history), 1e-9), 1),
            "run_dir": str(t.run_dir),
        }


def finish_run(trainer: Trainer) -> RunResult:
    """Train to the budget; `StopRequested` (a signal) propagates after the checkpoint."""
    start = time.perf_counter()
    last = trainer.fit()
    return RunResult(trainer, last, time.perf_counter() - start)
