"""A run from start to finish: data -> vocabulary -> ids, the run directory, loading it back.

This is the glue the CLI calls; each piece it glues lives in its own module.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import rnnlab
from rnnlab import checkpoint as ckpt
from rnnlab.corpus import BUILTINS, DataConfig, load_text, split
from rnnlab.errors import CheckpointError, UsageError
from rnnlab.model import RNNLM, ModelConfig
from rnnlab.train import TrainConfig
from rnnlab.vocab import Vocab

RUN_FILES = (ckpt.CONFIG, ckpt.WEIGHTS, ckpt.LAST, ckpt.TRAINER, ckpt.METRICS, ckpt.MANIFEST)


@dataclass
class Data:
    vocab: Vocab
    train_ids: torch.Tensor  # (N_train,) compact integer ids
    valid_ids: torch.Tensor  # (N_valid,)


def prepare_data(config: DataConfig, vocab: Vocab | None = None) -> Data:
    """Clean, split, build the vocabulary from the training part (unless given), encode both."""
    text = load_text(config)
    train_text, valid_text = split(text, config.valid_fraction)
    if vocab is None:
        vocab = Vocab.build(train_text, config.min_freq)
    return Data(vocab, vocab.encode(train_text), vocab.encode(valid_text))


def default_run_dir(data: DataConfig, model: ModelConfig) -> Path:
    name = data.corpus if data.corpus in BUILTINS else Path(data.corpus).stem or "corpus"
    return Path("runs") / f"{name}-{model.cell}-{time.strftime('%Y%m%d-%H%M%S')}"


def claim_run_dir(run_dir: Path, force: bool, resume: bool) -> None:
    """Refuse to overwrite someone's run unless asked; --force clears only rnnlab's own files."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {str(run_dir)!r} is a file: give a directory")
    if resume:
        if not (run_dir / ckpt.MANIFEST).exists():
            raise CheckpointError(f"cannot resume: no checkpoint in {str(run_dir)!r}")
        return
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not force:
            raise UsageError(
                f"run directory {str(run_dir)!r} is not empty: pass --resume to continue it, "
                "--force to overwrite it, or choose another --out"
            )
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)


def run_config(
    data: DataConfig, model: ModelConfig, train: TrainConfig, vocab: Vocab
) -> dict[str, Any]:
    """Everything needed to rebuild the model and understand the run, as JSON-ready data."""
    return {
        "rnnlab_version": rnnlab.__version__,
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


def configs_from_json(config: dict[str, Any]) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    try:
        return (
            DataConfig(**config["data"]),
            ModelConfig(**config["model"]),
            TrainConfig(**config["train"]),
        )
    except (KeyError, TypeError, UsageError) as e:
        raise CheckpointError(f"checkpoint config is not one rnnlab can read: {e}") from None


def load_run(run_dir: str | Path) -> LoadedRun:
    """The best model of a run directory with its vocabulary and configs, verified first."""
    run_dir = Path(run_dir)
    config = ckpt.read_json(run_dir, ckpt.CONFIG)
    data, model_config, train_config = configs_from_json(config)
    try:
        vocab = Vocab.from_json(config["vocab"])
    except (KeyError, ValueError, TypeError):
        raise CheckpointError(f"checkpoint vocabulary in {str(run_dir)!r} is corrupt") from None
    model = RNNLM(len(vocab), model_config)
    weights = ckpt.read_tensors(run_dir, ckpt.WEIGHTS)
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise CheckpointError(
            f"weights in {str(run_dir / ckpt.WEIGHTS)!r} do not fit the model in config.json"
        ) from None
    model.eval()
    return LoadedRun(run_dir, model, vocab, data, model_config, train_config)
