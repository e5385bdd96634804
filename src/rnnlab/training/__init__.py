"""Training, shared by every family: the config, the loop, checkpointing, signals, run dirs.

`loop.train_step` is the algorithm and `loop.Trainer` the one loop around it; `start.open_run`
is the one way a run starts. The rest of the package is what makes a run safe to stop, resume
and reproduce.

The names below are imported on first use (PEP 562), so that reading a run back
(`rnnlab.training.runs.load_run`, which `rnnlab.load` calls) does not import the loop, tqdm or
the multi-process code.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "OPTIMIZERS": "config",
    "LoopConfig": "config",
    "TrainConfig": "config",
    "make_optimizer": "config",
    "METRICS_HEADER": "logs",
    "STEPS_HEADER": "logs",
    "RunLogs": "logs",
    "read_step_rows": "logs",
    "EpochProgress": "loop",
    "NonFiniteStep": "loop",
    "Step": "loop",
    "Trainer": "loop",
    "optimize": "loop",
    "train_step": "loop",
    "EpochResult": "lm",
    "LanguageModelFamily": "lm",
    "LanguageModelRecipe": "lm",
    "lm_trainer": "lm",
    "RUN_FILES": "runs",
    "LoadedRun": "runs",
    "claim_run_dir": "runs",
    "configs_from_json": "runs",
    "default_run_dir": "runs",
    "load_run": "runs",
    "run_config": "runs",
    "SignalGuard": "signals",
    "StopRequested": "signals",
    "RunResult": "start",
    "finish_run": "start",
    "open_run": "start",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'rnnlab.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rnnlab.training.{_HOMES[name]}"), name)
