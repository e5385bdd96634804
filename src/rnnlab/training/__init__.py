"""Training, shared by every family: the config, the loop, checkpoint state, signals, run dirs.

`loop.train_step` is the algorithm; the rest of the package is what makes a run safe to stop,
resume and reproduce.
"""

from rnnlab.training.config import OPTIMIZERS, TrainConfig, make_optimizer
from rnnlab.training.logs import METRICS_HEADER, STEPS_HEADER, RunLogs, read_step_rows
from rnnlab.training.loop import (
    EpochProgress,
    EpochResult,
    NonFiniteStep,
    Step,
    Trainer,
    optimize,
    train_step,
)
from rnnlab.training.runs import (
    RUN_FILES,
    LoadedRun,
    claim_run_dir,
    configs_from_json,
    default_run_dir,
    load_run,
    new_trainer,
    run_config,
)
from rnnlab.training.signals import SignalGuard, StopRequested

__all__ = [
    "METRICS_HEADER",
    "OPTIMIZERS",
    "RUN_FILES",
    "STEPS_HEADER",
    "EpochProgress",
    "EpochResult",
    "LoadedRun",
    "NonFiniteStep",
    "RunLogs",
    "SignalGuard",
    "Step",
    "StopRequested",
    "TrainConfig",
    "Trainer",
    "claim_run_dir",
    "configs_from_json",
    "default_run_dir",
    "load_run",
    "make_optimizer",
    "new_trainer",
    "optimize",
    "read_step_rows",
    "run_config",
    "train_step",
]
