"""rnnlab: character-level recurrent language models you can train, inspect and trust."""

from __future__ import annotations

import os

# Same command, same numbers: without this, Intel MKL may split a multi-threaded matrix product
# differently from run to run, and a sweep setting reran 1e-7 apart (measured: 1 run in 3 of a
# 2-thread num_steps-64 setting; 4 in 4 identical with it, at no measurable cost in speed). MKL
# reads it when it first runs, so it is set here, before rnnlab imports torch; a value the user
# set is kept.
os.environ.setdefault("MKL_CBWR", "AUTO")

from typing import TYPE_CHECKING, Any  # noqa: E402

from rnnlab.version import __version__  # noqa: E402  (after MKL_CBWR, before torch)

if TYPE_CHECKING:
    from rnnlab.api import (
        PATTERNS,
        CheckpointError,
        GenerateConfig,
        LanguageModel,
        Metrics,
        Prediction,
        RnnlabError,
        TrainedRun,
        UnitScore,
        UsageError,
        load,
        pattern_signal,
        rank_units,
        train,
    )

# The Python API (rnnlab.api), imported on first use: `import rnnlab.numpy_rnn` runs this file
# and must not pull in torch, so the names are looked up lazily (PEP 562) rather than imported.
__all__ = [
    "__version__",
    "PATTERNS",
    "CheckpointError",
    "GenerateConfig",
    "LanguageModel",
    "Metrics",
    "Prediction",
    "RnnlabError",
    "TrainedRun",
    "UnitScore",
    "UsageError",
    "load",
    "pattern_signal",
    "rank_units",
    "train",
]
_API = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from rnnlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'rnnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
