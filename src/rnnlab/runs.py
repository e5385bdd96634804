"""A run from start to finish: data -> vocabulary -> ids, the run directory, loading it back.

This is the glue the CLI calls; each piece it glues lives in its own module.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import rnnlab
from rnnlab import checkpoint as ckpt
from rnnlab.corpus import (
    CHUNK_BYTES,
    STREAM_BYTES,
    DataConfig,
    corpus_label,
    is_large,
    load_text,
    split,
    split_point,
    stream_codepoints,
)
from rnnlab.errors import CheckpointError, UsageError
from rnnlab.model import RNNLM, ModelConfig
from rnnlab.train import TrainConfig, Trainer
from rnnlab.vocab import Vocab, count_codepoints, dense_counts

# rnnlab's own files in a run directory (--force deletes these and nothing else); the last three
# are the flat layout of rnnlab before checkpoint directories.
RUN_FILES = (
    ckpt.CONFIG,
    ckpt.MANIFEST,
    ckpt.METRICS,
    ckpt.STEPS,
    ckpt.WEIGHTS,
    "last.safetensors",
    ckpt.TRAINER,
)


@dataclass
class Data:
    vocab: Vocab
    train_ids: torch.Tensor  # (N_train,) compact integer ids
    valid_ids: torch.Tensor  # (N_valid,)


def prepare_data(
    config: DataConfig,
    vocab: Vocab | None = None,
    stream_over: int = STREAM_BYTES,
    chunk_bytes: int = CHUNK_BYTES,
) -> Data:
    """Clean, split, build the vocabulary from the training part (unless given), encode both.

    `config.train_chars` keeps only the start of the training part, after the split, so the
    held-out text is the same with or without it; the vocabulary comes from the characters
    kept (as d2l builds it from its 10,000), and held-out characters never seen become <unk>.
    Files over `stream_over` bytes are streamed (`prepare_streamed`): same result, bounded memory.
    """
    if is_large(config, stream_over):
        return prepare_streamed(config, vocab, chunk_bytes)
    text = load_text(config)
    train_text, valid_text = split(text, config.valid_fraction)
    train_text = train_text[: train_end(len(train_text), config)]
    if vocab is None:
        vocab = Vocab.build(train_text, config.min_freq)
    return Data(vocab, vocab.encode(train_text), vocab.encode(valid_text))


def prepare_streamed(
    config: DataConfig, vocab: Vocab | None = None, chunk_bytes: int = CHUNK_BYTES
) -> Data:
    """`prepare_data` for a file too large to hold as one string: two streamed passes.

    Pass 1 counts the cleaned characters, chunk by chunk, to find the train/valid split and the
    training text's character counts; the one chunk the split cuts is decoded again to count
    only its training part. Pass 2 writes each chunk's ids straight into one preallocated array
    of the narrowest exact integer type. Peak memory: that array plus a few chunks.
    """
    starts, lengths, counts = [], [], []
    for start, codes in stream_codepoints(config, chunk_bytes):
        starts.append(start)
        lengths.append(len(codes))
        if vocab is None:
            counts.append(count_codepoints(codes))  # sparse: a few KB per chunk
    n = sum(lengths)
    n_train = split_point(n, config.valid_fraction)
    n_kept = train_end(n_train, config)  # the training characters learnt from
    if vocab is None:
        train_counts = []
        for start, length, c in zip(starts, lengths, counts, strict=True):
            if start.char_offset + length <= n_kept:
                train_counts.append(c)
            elif start.char_offset < n_kept:  # the chunk the end of training cuts in two
                _, codes = next(stream_codepoints(config, chunk_bytes, start))
                train_counts.append(count_codepoints(codes[: n_kept - start.char_offset]))
        vocab = Vocab.from_counts(dense_counts(train_counts), config.min_freq)
    ids = np.empty(n, dtype=vocab.id_dtype)
    done = 0
    for start, codes in stream_codepoints(config, chunk_bytes):
        end = start.char_offset + len(codes)
        if end > n:
            break
        vocab.encode_codepoints(codes, ids[start.char_offset : end])
        done = end
    if done != n:
        raise UsageError(f"corpus {config.corpus!r} changed while it was being read: try again")
    return Data(vocab, torch.from_numpy(ids[:n_kept]), torch.from_numpy(ids[n_train:]))


def train_end(n_train: int, config: DataConfig) -> int:
    """How many characters of a training part of `n_train` are learnt from (`--train-chars`)."""
    if config.train_chars is None:
        return n_train
    return min(n_train, config.train_chars)


def encode_corpus(
    config: DataConfig, vocab: Vocab, stream_over: int = STREAM_BYTES
) -> torch.Tensor:
    """The ids of a whole corpus with a given vocabulary (large files streamed)."""
    if not is_large(config, stream_over):
        return vocab.encode(load_text(config))
    pieces = []
    for _, codes in stream_codepoints(config):
        ids = np.empty(len(codes), dtype=vocab.id_dtype)
        vocab.encode_codepoints(codes, ids)
        pieces.append(ids)
    return torch.from_numpy(np.concatenate(pieces))


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


def new_trainer(
    data: Data,
    data_config: DataConfig,
    model_config: ModelConfig,
    train_config: TrainConfig,
    run_dir: Path,
    **trainer_options: Any,
) -> Trainer:
    """A freshly initialised model and the Trainer of a new run in `run_dir`.

    Every RNG is seeded from the run's seed first, so the initial weights depend on the seed
    alone (not on what ran before in the process: a sweep's settings, a test).
    """
    torch.manual_seed(train_config.seed)
    random.seed(train_config.seed)
    np.random.seed(train_config.seed)
    model = RNNLM(len(data.vocab), model_config)
    config = run_config(data_config, model_config, train_config, data.vocab)
    return Trainer(
        model, train_config, data.train_ids, data.valid_ids, Path(run_dir), config,
        **trainer_options,
    )  # fmt: skip


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


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def load_run(
    path: str | Path, warn: Callable[[str], None] = _stderr, impl: str | None = None
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
    weights = ckpt.read_tensors(chosen, ckpt.WEIGHTS)
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise CheckpointError(
            f"weights in {str(chosen / ckpt.WEIGHTS)!r} do not fit the model in config.json"
        ) from None
    model.eval()
    return LoadedRun(run_dir, model, vocab, data, model_config, train_config, chosen)
