"""Seq2seq run directories: what a run records, checking a resume's pairs, loading a run back.

A run directory holds:

    config.json      kind "seq2seq", the three configs, the vocabulary, rnnlab/torch versions
    heldout.tsv      the held-out pairs, written once, so `evaluate` scores exactly those
    manifest.json    sha256 of config.json and heldout.tsv
    metrics.csv      one row per epoch: train loss, held-out loss, exact match, CER, seconds, lr
    steps.csv        one row per optimizer step: step, epoch, loss, grad_norm
    checkpoints/step-NNNNNNNN/   weights, Adam, RNG streams, progress (`rnnlab.training.state`)

The model loaded is the newest checkpoint's, that is the last epoch's weights: no checkpoint is
chosen by held-out score, so the held-out figures are not tuned on. Nothing in a run names a
device: the weights are read onto the CPU and then moved to the device asked for.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnlab import checkpoint as ckpt
from rnnlab.devices import resolve_device
from rnnlab.errors import CheckpointError, UsageError, stderr
from rnnlab.model import count_parameters
from rnnlab.seq2seq.model import Seq2Seq, Seq2SeqConfig
from rnnlab.seq2seq.pairs import (
    BUILTINS,
    Pair,
    PairData,
    PairsConfig,
    PairVocab,
    pairs_tsv,
    prepare_pairs,
)
from rnnlab.seq2seq.train import HELDOUT, Seq2SeqFamily, Seq2SeqTrainConfig
from rnnlab.training.loop import Trainer
from rnnlab.training.precision import set_tf32
from rnnlab.training.runs import claim_run_dir
from rnnlab.training.runtime import Runtime
from rnnlab.training.start import open_run, resume_configs
from rnnlab.version import __version__

# rnnlab's own files at the root of a seq2seq run: --force deletes these (and the checkpoint
# directories) and nothing else. WEIGHTS at the root is the layout before checkpoint directories.
RUN_FILES = (
    ckpt.CONFIG,
    ckpt.MANIFEST,
    ckpt.METRICS,
    ckpt.STEPS,
    HELDOUT,
    ckpt.WEIGHTS,
)


def use_device(name: str | torch.device = "auto") -> torch.device:
    """The device `--device` names, set up as `rnnlab train` sets up its own: refused when it is
    not there (UsageError, before any file is read), CUDA's current device, TF32 off (cuDNN
    allows it by default; fp32 keeps a GPU run comparable with a CPU one)."""
    device = resolve_device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        set_tf32(False)
    return device


def default_run_dir(pairs: PairsConfig, model: Seq2SeqConfig) -> Path:
    name = pairs.pairs if pairs.pairs in BUILTINS else Path(pairs.pairs).stem or "pairs"
    return Path("runs") / f"seq2seq-{name}-{model.cell}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_config(
    pairs: PairsConfig,
    model: Seq2SeqConfig,
    train: Seq2SeqTrainConfig,
    data: PairData,
) -> dict[str, Any]:
    """Everything needed to rebuild the model and understand the run, as JSON-ready data."""
    return {
        "kind": "seq2seq",
        "rnnlab_version": __version__,
        "torch_version": torch.__version__,
        "pairs": dataclasses.asdict(pairs),
        "model": dataclasses.asdict(model),
        "train": dataclasses.asdict(train),
        "vocab": data.vocab.to_json(),
        "resolved": resolved(pairs, data),
    }


def resolved(pairs: PairsConfig, data: PairData) -> dict[str, Any]:
    """What the pairs came to: split sizes, vocabulary size, longest target."""
    return {
        "valid_fraction": pairs.resolved_valid_fraction,
        "train_pairs": len(data.train),
        "heldout_pairs": len(data.heldout),
        "vocab_size": len(data.vocab),
        "max_target_len": max(len(t) for _, t in data.train),
    }


def configs_from_json(
    config: Any, run_dir: Path
) -> tuple[PairsConfig, Seq2SeqConfig, Seq2SeqTrainConfig]:
    """The three configs a run's config.json records, refusing a run of another kind."""
    if not isinstance(config, dict) or config.get("kind") != "seq2seq":
        raise CheckpointError(
            f"{str(run_dir)!r} is not a seq2seq run (a language model? use `rnnlab predict`)"
        )
    try:
        return (
            PairsConfig(**config["pairs"]),
            Seq2SeqConfig(**config["model"]),
            Seq2SeqTrainConfig(**config["train"]),
        )
    except (KeyError, TypeError, ValueError, UsageError) as e:
        raise CheckpointError(f"checkpoint config is not one rnnlab can read: {e}") from None


def check_same_pairs(
    run_dir: Path, stored: dict[str, Any], pairs: PairsConfig, data: PairData
) -> None:
    """Before a resume: the pairs prepared now must be the run's (same split, same vocabulary);
    a pair file edited since the run began would otherwise be trained on silently."""
    heldout = ckpt.read_verified(run_dir, HELDOUT)
    if (
        stored.get("vocab") != data.vocab.to_json()
        or stored.get("resolved") != resolved(pairs, data)
        or heldout != pairs_tsv(data.heldout).encode("utf-8")
    ):
        raise UsageError(
            f"the pairs changed since the run in {str(run_dir)!r} started (its split or "
            "vocabulary differs): restore them, or start a new run with another --out"
        )


@dataclass
class Seq2SeqRecipe:
    """How a seq2seq run starts (`rnnlab.training.start.open_run`): pairs, model, record."""

    pairs_config: PairsConfig
    model_config: Seq2SeqConfig
    train_config: Seq2SeqTrainConfig
    data: PairData | None = None
    files: tuple[str, ...] = RUN_FILES

    def prepare(self) -> None:
        if self.data is None:
            self.data = prepare_pairs(self.pairs_config)

    def default_run_dir(self) -> Path:
        return default_run_dir(self.pairs_config, self.model_config)

    def build(self, runtime: Runtime) -> Seq2SeqFamily:
        assert self.data is not None
        model = Seq2Seq(len(self.data.vocab), self.model_config)
        return Seq2SeqFamily(model, self.data, self.train_config, runtime)

    def run_config(self, runtime: Runtime) -> dict[str, Any]:
        assert self.data is not None
        return run_config(self.pairs_config, self.model_config, self.train_config, self.data)

    def check_resume(self, run_dir: Path, stored: dict[str, Any]) -> None:
        assert self.data is not None
        check_same_pairs(run_dir, stored, self.pairs_config, self.data)

    def started(self, trainer: Trainer) -> str:
        assert self.data is not None
        data = self.data
        return (
            f"training a {self.model_config.cell.upper()} encoder-decoder "
            f"({count_parameters(trainer.model):,} parameters, vocabulary {len(data.vocab)}) on "
            f"{self.pairs_config.pairs}: {len(data.train):,} train / {len(data.heldout):,} "
            "held-out pairs"
        )


def start_seq2seq_run(
    pairs_values: dict[str, Any],
    model_values: dict[str, Any],
    train_values: dict[str, Any],
    run_dir: Path | None = None,
    force: bool = False,
    resume: bool = False,
    device: str | torch.device = "auto",
    progress: bool = False,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = stderr,
) -> Trainer:
    """Everything `rnnlab seq2seq train` does before the first step, in one call: the configs
    (the stored ones on resume, checked against the values given), the device (refused before
    any file is read), then `open_run`, the start every rnnlab run shares."""
    device = use_device(device)
    if resume:
        if run_dir is None:
            raise UsageError("--resume needs --out DIR naming the run to continue")
        claim_run_dir(run_dir, force=False, resume=True, files=RUN_FILES)
        stored = configs_from_json(ckpt.read_json(run_dir, ckpt.CONFIG), run_dir)
        configs = resume_configs(stored, pairs_values, model_values, train_values, "pairs")
    else:
        configs = (
            PairsConfig(**pairs_values),
            Seq2SeqConfig(**model_values),
            Seq2SeqTrainConfig(**train_values),
        )
    return open_run(
        Seq2SeqRecipe(*configs), run_dir, force=force, resume=resume,
        runtime=Runtime(device=device), progress=progress, log=log, warn=warn,
    )  # fmt: skip


@dataclass
class LoadedSeq2Seq:
    run_dir: Path
    model: Seq2Seq
    vocab: PairVocab
    pairs: PairsConfig
    model_config: Seq2SeqConfig
    train_config: Seq2SeqTrainConfig
    heldout: list[Pair]
    max_target_len: int
    checkpoint: Path | None = None  # the checkpoint directory the weights came from


def newest_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint directory; a run written before checkpoint directories existed
    keeps its weights at the root."""
    found = ckpt.list_checkpoints(run_dir)
    return found[-1][1] if found else Path(run_dir)


def read_heldout(run_dir: Path) -> list[Pair]:
    """The held-out pairs of a run, verified against the manifest."""
    heldout = []
    for line in ckpt.read_verified(run_dir, HELDOUT).decode("utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) != 2:
            raise CheckpointError(f"{str(run_dir / HELDOUT)!r} is corrupt: a line is not a pair")
        heldout.append((fields[0], fields[1]))
    return heldout


def load_seq2seq(path: str | Path, device: str | torch.device = "cpu") -> LoadedSeq2Seq:
    """The model of a seq2seq run with its vocabulary, configs and held-out pairs.

    `path` is a run directory (its newest checkpoint is loaded) or one checkpoint directory in
    it, `RUN/checkpoints/step-NNNNNNNN`. Every file is checked against its manifest; a damaged
    one is refused with its name, never replaced by another checkpoint's. The weights are read
    on the CPU and moved to `device` (auto, cpu, cuda, cuda:N, mps).
    """
    device = resolve_device(device)  # a device that is not there: refused before any file
    path = Path(path)
    chosen = path if ckpt.checkpoint_step(path) is not None else None
    run_dir = path.parent.parent if chosen is not None else path
    config = ckpt.read_json(run_dir, ckpt.CONFIG)
    pairs, model_config, train_config = configs_from_json(config, run_dir)
    try:
        vocab = PairVocab.from_json(config["vocab"])
        max_target_len = int(config["resolved"]["max_target_len"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint config is not one rnnlab can read: {e}") from None
    chosen = chosen or newest_checkpoint(run_dir)
    model = Seq2Seq(len(vocab), model_config)
    try:
        model.load_state_dict(ckpt.read_tensors(chosen, ckpt.WEIGHTS))
    except RuntimeError:
        raise CheckpointError(
            f"weights in {str(chosen / ckpt.WEIGHTS)!r} do not fit the model in config.json"
        ) from None
    model.to(device).eval()
    heldout = read_heldout(run_dir)
    return LoadedSeq2Seq(
        run_dir, model, vocab, pairs, model_config, train_config, heldout, max_target_len, chosen
    )
