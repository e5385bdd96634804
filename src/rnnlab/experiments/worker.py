"""One setting of a sweep: train it (or continue its checkpoint), measure it, save result.json.

Each setting trains in a fresh worker process (`multiprocessing` spawn, `worker_main`), so its
peak RSS is its own, in its own run directory `OUT/runs/KEY/` (the usual checkpoints: an
interrupted sweep continues where it stopped when the same command is rerun). `--in-process`
calls `run_setting` directly instead.

The device (`--device`) is how a setting computes, not what it is: the parent resolves it once,
every worker trains and measures on it, and a sweep stopped on one device continues on another
(its checkpoints hold no device).
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnlab import checkpoint as ckpt
from rnnlab.data import Data
from rnnlab.errors import NumericalError, RnnlabError
from rnnlab.experiments.measure import (
    gradient_flow,
    heldout_columns,
    heldout_figures,
    peak_rss_mib,
    step_figures,
    training_seconds,
)
from rnnlab.experiments.spec import Setting, SweepSpec
from rnnlab.experiments.store import LOCK_FILE, RESULT_JSON
from rnnlab.metrics import Metrics
from rnnlab.model import count_parameters
from rnnlab.training.config import TrainConfig
from rnnlab.training.lm import LanguageModelRecipe
from rnnlab.training.loop import Trainer
from rnnlab.training.precision import set_tf32
from rnnlab.training.runtime import Runtime, model_for_device
from rnnlab.training.signals import SignalGuard, StopRequested
from rnnlab.training.start import open_run


@dataclass
class Job:
    """What a worker needs to train and measure one setting."""

    spec: SweepSpec
    setting: Setting
    key: str
    run_dir: Path
    isolated: bool  # in a fresh process of its own: its peak RSS is the setting's
    device: str = "cpu"  # resolved by the parent (`cuda:1`, not `auto`); not part of the spec


def training_done(trainer: Trainer, cfg: TrainConfig) -> bool:
    """Whether a resumed run already spent its budget (steps or epochs)."""
    if cfg.max_steps is not None:
        return trainer.step >= cfg.max_steps
    return trainer.epoch >= cfg.epochs


def setting_runtime(device: torch.device) -> Runtime:
    """The runtime a setting trains on: `rnnlab train`'s defaults (fp32, no TF32) on `device`."""
    if device.type == "cuda":
        torch.cuda.set_device(device)  # rnnlab.seeding seeds this one
        set_tf32(False)  # cuDNN allows TF32 by default: a sweep computes as `rnnlab train` does
    return Runtime(device=device)


def run_setting(job: Job, stop: Callable[[], int | None] = lambda: None) -> dict[str, Any]:
    """Train one setting (continuing its checkpoint if it has one), measure it, save result.json.

    `stop` is polled before training starts (a signal that came while setting up); a signal
    during training makes `Trainer.fit` save a checkpoint and raise `StopRequested`.
    """
    started = time.perf_counter()
    spec, s = job.spec, job.setting
    data_cfg, model_cfg, train_cfg = spec.configs(s)
    run_dir = job.run_dir
    # A seconds budget restarts an unfinished setting: its clock cannot be resumed fairly.
    resume = spec.budget.kind != "seconds" and bool(ckpt.list_checkpoints(run_dir))
    warnings: list[str] = []
    runtime = setting_runtime(torch.device(job.device))
    model_cfg = model_for_device(model_cfg, runtime.device, warnings.append)  # --impls fast
    recipe = LanguageModelRecipe(data_cfg, model_cfg, train_cfg)
    # The initial weights come from the seed index, not the run order (open_run seeds).
    trainer = open_run(
        recipe, run_dir, force=True, resume=resume, runtime=runtime, progress=False,
        log=lambda line: None, warn=warnings.append,
    )  # fmt: skip
    data = recipe.data
    assert data is not None
    signum = stop()
    if signum is not None:
        raise StopRequested(signum)
    status = "ok"
    try:
        if not training_done(trainer, train_cfg):
            trainer.fit()
    except NumericalError as e:  # recorded, not fatal: a diverging setting is a result too
        status = "diverged"
        warnings.append(str(e))
    result = {**measure_setting(job, trainer, data, status, started), "warnings": warnings}
    ckpt.write_atomic(run_dir / RESULT_JSON, json.dumps(result).encode("utf-8"))
    return result


def measure_setting(
    job: Job, trainer: Trainer, data: Data, status: str, started: float
) -> dict[str, Any]:
    """The setting's results.csv row, its loss by window position and its gradient flow.

    A diverged setting gets no held-out figures (nan), only its counts and training figures.
    `started` is the worker's `time.perf_counter()` when the setting began.
    """
    model, train_cfg = trainer.model, trainer.config
    B, T = train_cfg.batch_size, train_cfg.num_steps
    row: dict[str, Any] = {
        "key": job.key,
        **job.setting.axes(),
        "seed": train_cfg.seed,
        "status": status,
        "params": count_parameters(model),
        "vocab_size": len(data.vocab),
        "threads": torch.get_num_threads(),
        "chars_trained": trainer.step * B * T,  # every minibatch is a full B x T
        "steps": trainer.step,
        "epochs": trainer.step * B * T / len(data.train_ids),
        "heldout_chars": len(data.valid_ids) - 1,
    }
    positions: list[float] | None = None
    gradflow: list[float] | None = None
    nan = float("nan")
    if status == "ok":  # trainer.family.valid_ids: already on the model's device
        heldout, positions = heldout_figures(model, trainer.family.valid_ids, T)
        if T == job.spec.gradflow_steps():
            gradflow = gradient_flow(model, trainer.family.valid_ids, T)
    else:
        heldout = heldout_columns(Metrics(nan, nan, nan, 0), Metrics(nan, nan, nan, 0))
    row.update(heldout)
    row.update(step_figures(job.run_dir, trainer, train_cfg, len(data.train_ids)))
    train_s = training_seconds(job.run_dir, trainer)
    row.update(
        {
            "time_train_s": train_s,
            "time_chars_per_s": row["chars_trained"] / train_s if train_s > 0 else nan,
            "time_setting_s": time.perf_counter() - started,
            "mem_peak_rss_mib": peak_rss_mib() if job.isolated else nan,
        }
    )
    return {"row": row, "positions": positions, "gradflow": gradflow}


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent dies: a killed sweep leaves no orphans training."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: orphans finish their setting and exit
        pass


def worker_main(job: Job, threads: int, conn: Any) -> None:
    """Entry point of a spawned worker: one setting, then exit (0, 128+signal, or the error's).

    Sends ("error", exit code, message) through `conn` for a user-facing error. SIGINT/SIGTERM
    outside training set the guard's flag (`Trainer.fit` has its own guard inside).
    """
    with SignalGuard() as guard:
        _die_with_parent()
        torch.set_num_threads(threads)
        job.run_dir.mkdir(parents=True, exist_ok=True)
        with open(job.run_dir / LOCK_FILE, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # wait for an orphan of a killed sweep to save and go
            try:
                run_setting(job, stop=lambda: guard.signum)
            except StopRequested as e:
                sys.exit(e.exit_code)
            except RnnlabError as e:
                conn.send(("error", e.exit_code, str(e)))
                sys.exit(e.exit_code)
    sys.exit(0)  # result.json is written: a signal after that loses nothing
