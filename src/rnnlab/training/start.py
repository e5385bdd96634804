"""Starting a run, the one way every family does it: directory, seeds, model, trainer, resume.

`open_run` takes a family's `Recipe` (the language model's in `rnnlab.training.lm`, seq2seq's in
`rnnlab.seq2seq.runs`) and does, in this order, what a run needs before its first step: read and
check the data (refused before any directory is touched), claim the run directory (never
overwriting a run without `force`) or reopen it (`resume`), seed every generator
(`rnnlab.seeding`), build the model on the CPU, the optimizer and the `Trainer`, then restore
the newest checkpoint when resuming. `finish_run` trains it to its budget. The command line, the
Python API and every sweep setting call these two; none of them seeds or builds a trainer itself.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rnnlab import checkpoint as ckpt
from rnnlab.errors import UsageError, flag
from rnnlab.seeding import seed_everything, seed_rank
from rnnlab.training import distributed
from rnnlab.training.config import LoopConfig
from rnnlab.training.loop import Family, Trainer
from rnnlab.training.runs import claim_run_dir
from rnnlab.training.runtime import CPU, Runtime


class Recipe(Protocol):
    """What a family brings to start a run: its data, model, run record and messages."""

    train_config: LoopConfig
    files: tuple[str, ...]  # the names a run of this family writes at its root (for --force)

    def prepare(self) -> None:
        """Read and check the data; a user mistake raises before any directory is touched."""

    def default_run_dir(self) -> Path: ...

    def build(self, runtime: Runtime) -> Family:
        """The model (made on the CPU, from the seeded generators) and the family around it."""

    def run_config(self, runtime: Runtime) -> dict[str, Any]: ...

    def check_resume(self, run_dir: Path, stored: dict[str, Any]) -> None:
        """Refuse to resume a run whose data changed since it started."""

    def started(self, trainer: Trainer) -> str:
        """The line that announces a new run."""


def open_run(
    recipe: Recipe,
    run_dir: Path | None = None,
    force: bool = False,
    resume: bool = False,
    runtime: Runtime = CPU,
    progress: bool = False,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
) -> Trainer:
    """The Trainer of a new run in `run_dir` (refused if not empty, unless `force`), or of the
    run there, restored from its newest checkpoint (`resume`).

    A group that torchrun restarted after a rank died (`--max-restarts`) runs the same command
    line, without --resume: it resumes from the newest complete checkpoint if there is one, and
    starts the run afresh otherwise.
    """
    world = runtime.world
    recipe.prepare()
    if run_dir is None:  # one name for every rank: the time stamp is rank 0's
        run_dir = distributed.broadcast_object(recipe.default_run_dir(), world)
    run_dir = Path(run_dir)
    if world.restart and not resume:
        resume = bool(ckpt.list_checkpoints(run_dir))
        force = force or not resume
    distributed.on_main(
        world, lambda: claim_run_dir(run_dir, force=force, resume=resume, files=recipe.files)
    )
    distributed.barrier(world)
    seed = recipe.train_config.seed
    seed_everything(seed)  # the initial weights depend on the seed alone
    family = recipe.build(runtime)
    seed_rank(seed, world.rank, runtime.device)
    trainer = Trainer(
        family, recipe.train_config, run_dir, recipe.run_config(runtime), progress=progress,
        log=log, warn=warn, runtime=runtime,
    )  # fmt: skip
    if resume:
        recipe.check_resume(run_dir, ckpt.read_json(run_dir, ckpt.CONFIG))
        trainer.resume()
        trainer.log(
            f"resuming {run_dir} after epoch {trainer.epoch} (step {trainer.step}) "
            f"[{runtime.describe()}]"
        )
    else:
        trainer.log(f"{recipe.started(trainer)} -> {run_dir} [{runtime.describe()}]")
    return trainer


def resume_configs(
    stored: tuple[Any, Any, LoopConfig],
    data_values: dict[str, Any],
    model_values: dict[str, Any],
    train_values: dict[str, Any],
    what: str = "data",
) -> tuple[Any, Any, Any]:
    """A run's stored (data, model, training) configs, with `train_values` on top.

    Rerunning the very command that started a run, with --resume appended, must continue it: a
    data or model value equal to the stored one is no change. One that differs is refused,
    naming both values, since the weights and the vocabulary could not follow it.
    """
    data_cfg, model_cfg, stored_train = stored
    changed = [
        f"{flag(name)} (the run has {getattr(cfg, name)!r}, given {value!r})"
        for cfg, values in ((data_cfg, data_values), (model_cfg, model_values))
        for name, value in values.items()
        if getattr(cfg, name) != value
    ]
    if changed:
        raise UsageError(
            f"cannot change {', '.join(changed)} when resuming: the run keeps its {what} and "
            "model; drop the flag, or start a new run with another --out"
        )
    return data_cfg, model_cfg, dataclasses.replace(stored_train, **train_values)


@dataclass
class RunResult:
    """A finished (or budget-stopped) run: its trainer, last epoch's record and wall time."""

    trainer: Trainer
    last: Any  # the family's record of the last epoch (or of the part of one, max_steps)
    seconds: float


def finish_run(trainer: Trainer) -> RunResult:
    """Train to the budget; `StopRequested` (a signal) propagates after the checkpoint."""
    start = time.perf_counter()
    last = trainer.fit()
    return RunResult(trainer, last, time.perf_counter() - start)
