"""Run directories: claiming one safely, what a run records, and loading a run back.

A run directory holds `config.json` (everything needed to rebuild the model), the logs and the
checkpoint directories (`rnnlab.checkpoint`). Every command that writes one goes through
`claim_run_dir`, so no run is overwritten without `--force`.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnlab import checkpoint as ckpt
from rnnlab.corpus import DataConfig, corpus_label
from rnnlab.devices import resolve_device
from rnnlab.errors import CheckpointError, UsageError, stderr
from rnnlab.model import RNNLM, ModelConfig
from rnnlab.training.config import TrainConfig
from rnnlab.version import __version__
from rnnlab.vocab import Vocab

# rnnlab's own files at the root of a run directory: --force deletes these (and the checkpoint
# directories) and nothing else. WEIGHTS and TRAINER at the root are rnnlab's layout before
# checkpoint directories.
RUN_FILES = (ckpt.CONFIG, ckpt.MANIFEST, ckpt.METRICS, ckpt.STEPS, ckpt.WEIGHTS, ckpt.TRAINER)


def default_run_dir(data: DataConfig, model: ModelConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{corpus_label(data.corpus)}-{model.cell}-{stamp}"


def claim_run_dir(
    run_dir: Path, force: bool, resume: bool, files: tuple[str, ...] = RUN_FILES
) -> None:
    """Refuse to overwrite someone's run unless asked; --force clears only rnnlab's own files.

    `files` are the names a run of this kind writes at its root (seq2seq runs pass theirs).
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {str(run_dir)!r} is a file: give a directory")
    if resume:
        if not (run_dir / ckpt.MANIFEST).exists() or not ckpt.list_checkpoints(run_dir):
            raise CheckpointError(f"cannot resume: no checkpoint in {str(run_dir)!r}")
        return
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not force:
            how = "--resume to continue it, " if files == RUN_FILES else ""
            raise UsageError(
                f"run directory {str(run_dir)!r} is not empty: pass {how}--force to overwrite "
                "it, or choose another --out"
            )
        for name in files:
            (run_dir / name).unlink(missing_ok=True)
        checkpoints = run_dir / ckpt.CHECKPOINTS
        if checkpoints.is_dir():
            for _, path in ckpt.list_checkpoints(run_dir):
                shutil.rmtree(path)
            for path in checkpoints.glob(".step-*.tmp"):
                shutil.rmtree(path)
            if not any(checkpoints.iterdir()):
                checkpoints.rmdir()
    run_dir.mkdir(parents=True, exist_ok=True)


def run_config(
    data: DataConfig, model: ModelConfig, train: TrainConfig, vocab: Vocab
) -> dict[str, Any]:
    """Everything needed to rebuild the model and understand the run, as JSON-ready data."""
    return {
        "rnnlab_version": __version__,
        "torch_version": torch.__version__,
        "data": dataclasses.asdict(data),
        "model": dataclasses.asdict(model),
        "train": dataclasses.asdict(train),
        "vocab": vocab.to_json(),
        "resolved": {
            "cleaning": data.resolved_cleaning,
            "vocab_size": len(vocab),
            "embed": model.resolved_embed(len(vocab)),
        },
    }


@dataclass
class LoadedRun:
    run_dir: Path
    model: RNNLM
    vocab: Vocab
    data: DataConfig
    model_config: ModelConfig
    train_config: TrainConfig
    checkpoint: Path | None = None  # the checkpoint directory the weights came from


def configs_from_json(config: dict[str, Any]) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    try:
        return (
            DataConfig(**config["data"]),
            ModelConfig(**config["model"]),
            TrainConfig(**config["train"]),
        )
    except (KeyError, TypeError, UsageError) as e:
        raise CheckpointError(f"checkpoint config is not one rnnlab can read: {e}") from None


def load_run(
    path: str | Path,
    warn: Callable[[str], None] = stderr,
    impl: str | None = None,
    device: torch.device | str = "cpu",
) -> LoadedRun:
    """The best model of a run directory with its vocabulary and configs, verified first.

    `path` is a run directory (its best checkpoint is loaded) or one checkpoint directory in it,
    `RUN/checkpoints/step-NNNNNNNN`; a damaged file is refused with its name, never replaced by
    another checkpoint's. `impl` loads the weights into the other recurrent implementation
    (torch or scratch): both share parameter names and layout, so the copy is one-to-one.
    """
    path = Path(path)
    chosen: Path | None = None
    if ckpt.checkpoint_step(path) is not None:
        chosen, run_dir = path, path.parent.parent
        if not chosen.is_dir():
            raise CheckpointError(f"checkpoint directory {str(chosen)!r} does not exist")
    else:
        run_dir = path
    config = ckpt.read_json(run_dir, ckpt.CONFIG)
    data, model_config, train_config = configs_from_json(config)
    if impl is not None:
        model_config = dataclasses.replace(model_config, impl=impl)
    try:
        vocab = Vocab.from_json(config["vocab"])
    except (KeyError, ValueError, TypeError):
        raise CheckpointError(f"checkpoint vocabulary in {str(run_dir)!r} is corrupt") from None
    if chosen is None:
        chosen = ckpt.best_checkpoint(run_dir, warn)
    model = RNNLM(len(vocab), model_config)
    weights = ckpt.read_tensors(chosen, ckpt.WEIGHTS)  # device-free: read onto the CPU
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise CheckpointError(
            f"weights in {str(chosen / ckpt.WEIGHTS)!r} do not fit the model in config.json"
        ) from None
    model.to(resolve_device(device)).eval()
    return LoadedRun(run_dir, model, vocab, data, model_config, train_config, chosen)
