"""Training an encoder-decoder: `train_step` is the algorithm, `Seq2SeqTrainer` the bookkeeping.

A step is the one every rnnlab model takes (`rnnlab.training.optimize`): the forward pass with
teacher forcing, the masked mean cross-entropy per real target symbol, backward, clipping, a
finite check, the update. Around it: epochs over the pairs in a fresh random order, held-out
evaluation after each, the logs, checkpoints and signals, all through `rnnlab.training`.

Checkpoints (`rnnlab.training.state`) are written at an epoch's end when `SAVE_EVERY` seconds have
passed since the last one, at the end of the run, and when SIGINT/SIGTERM stops it (then inside
the epoch, after the step under way). Besides the weights, Adam and the global RNGs, a checkpoint
holds the generator that draws the pair order and the teacher-forcing coin flips
(`rng.order`) and, for an epoch in progress, its pair order, the pairs done and the loss sums.
So `--resume` continues mid-epoch at the next minibatch with the same draws, and the weights equal
an uninterrupted run's bit for bit (same torch threads). An epoch cut short by `--max-time`
counts as finished: it is evaluated and logged like any other.

On an accelerator (`--device`) the model lives there and each minibatch is built on the CPU and
copied there once; the pair order and the coin flips stay on the CPU generator, so they are the
same on every device, and a checkpoint (copied to the CPU) resumes on any device.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rnnlab import checkpoint as ckpt
from rnnlab.devices import resolve_device
from rnnlab.errors import NumericalError, UsageError
from rnnlab.seq2seq.evaluate import EvalResult, evaluate_pairs
from rnnlab.seq2seq.model import Seq2Seq, masked_loss
from rnnlab.seq2seq.pairs import Batch, PairData, make_batch, pairs_tsv
from rnnlab.training import NonFiniteStep, RunLogs, SignalGuard, optimize
from rnnlab.training import state as saved

METRICS_HEADER = "epoch,step,train_loss,eval_loss,eval_exact,eval_cer,seconds,lr"
HELDOUT = "heldout.tsv"  # the held-out pairs, at the run's root, written once
SAVE_EVERY = 30.0  # seconds between checkpoints at epoch ends; the last epoch is always saved
KEEP = 2  # checkpoints kept: the newest, and the one before it should the newest be damaged


@dataclass
class Seq2SeqTrainConfig:
    """How to train: minibatches, optimizer, teacher forcing, budget."""

    batch_size: int = field(default=64, metadata={"help": "pairs per minibatch (B)"})
    lr: float = field(default=0.003, metadata={"help": "Adam learning rate"})
    clip: float = field(default=1.0, metadata={"help": "max global norm of the gradient"})
    epochs: int = field(default=30, metadata={"help": "passes over the training pairs"})
    max_time: float | None = field(
        default=None, metadata={"help": "stop after this many seconds of training"}
    )
    teacher_forcing: float = field(
        default=1.0,
        metadata={
            "help": "probability that the decoder reads the true previous symbol rather "
            "than its own greedy guess (1: always; < 1 decodes step by step, slower)"
        },
    )
    lr_decay: float = field(
        default=1.0,
        metadata={"help": "multiply the learning rate by this after every epoch (1: constant)"},
    )
    seed: int = field(default=0, metadata={"help": "seed for initialisation, order, forcing"})

    def __post_init__(self) -> None:
        for name in ("batch_size", "epochs"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise UsageError(f"--clip must be a positive number, got {self.clip}")
        if not 0.0 <= self.teacher_forcing <= 1.0:
            raise UsageError(f"--teacher-forcing must be in [0, 1], got {self.teacher_forcing}")
        if not 0 < self.lr_decay <= 1:
            raise UsageError(f"--lr-decay must be in (0, 1], got {self.lr_decay}")
        if self.max_time is not None and not (math.isfinite(self.max_time) and self.max_time > 0):
            raise UsageError(
                f"--max-time must be a positive number of seconds, got {self.max_time}"
            )


def train_step(
    model: Seq2Seq,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    config: Seq2SeqTrainConfig,
    generator: torch.Generator,
) -> tuple[float, float]:
    """One optimizer step on a batch of pairs: the loss and the gradient norm before clipping.

    Raises `NonFiniteStep` before the update when either is NaN/inf.
    """
    loss = masked_loss(model, batch, config.teacher_forcing, generator)  # mean per target symbol
    return optimize(loss, model, optimizer, config.clip)


@dataclass
class EpochProgress:
    """Where the current epoch stands: enough to stop after any step and continue exactly."""

    order: list[int]  # indices of the training pairs, drawn when the epoch began
    pairs_done: int = 0
    total_loss: float = 0.0  # sum over steps of the step's mean loss times its target symbols
    symbols: int = 0
    seconds: float = 0.0  # training time, evaluation excluded

    @property
    def finished(self) -> bool:
        return self.pairs_done >= len(self.order)


@dataclass
class EpochRecord:
    epoch: int
    step: int
    train_loss: float  # mean per target symbol over the epoch, as trained (teacher forcing)
    eval: EvalResult  # on the held-out pairs, or the training pairs when none are held out
    seconds: float
    lr: float


class Seq2SeqTrainer:
    """The training loop of one run: Adam, masked mean cross-entropy, clipping, per-epoch eval.

    `log` receives progress lines, `warn` one-line warnings (default: `log`).
    """

    def __init__(
        self,
        model: Seq2Seq,
        data: PairData,
        config: Seq2SeqTrainConfig,
        run_dir: Path,
        run_config: dict[str, Any],
        progress: bool = False,
        log: Callable[[str], None] = print,
        warn: Callable[[str], None] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device)  # made on the CPU: the same weights on every device
        self.data = data
        self.config = config
        self.run_dir = Path(run_dir)
        self.run_config = run_config
        self.progress = progress
        self.log = log
        self.warn = log if warn is None else warn
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        self.gen = torch.Generator().manual_seed(config.seed)  # pair order and forcing draws
        self.eval_pairs = data.heldout or data.train
        self.max_target_len = max(len(t) for _, t in data.train)
        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer steps taken
        self.current: EpochProgress | None = None  # the epoch under way, if any
        self.saved_step: int | None = None  # the step of the newest checkpoint on disk
        self.heldout_saved = False
        self.history: list[EpochRecord] = []
        self.logs = RunLogs(self.run_dir, header=METRICS_HEADER)  # written with each checkpoint

    def run_epoch(self, deadline: float | None, guard: SignalGuard) -> EpochProgress:
        """One pass over the training pairs in a fresh random order (or the rest of it, after a
        resume); stops early, before the next step, on a signal or at the deadline."""
        cfg, model = self.config, self.model
        if self.current is None:
            order = torch.randperm(len(self.data.train), generator=self.gen).tolist()
            self.current = EpochProgress(order)
        ep = self.current
        bar = tqdm(
            range(ep.pairs_done, len(ep.order), cfg.batch_size),
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            disable=not self.progress,
            leave=False,
            unit="batch",
        )
        model.train()
        start = time.perf_counter()
        for i in bar:
            if guard.signum is not None or self._out_of_time(deadline):
                break
            chosen = [self.data.train[j] for j in ep.order[i : i + cfg.batch_size]]
            batch = make_batch(self.data.vocab, chosen)  # (B, S), (B, T) padded
            n = int(batch.mask.sum())  # target symbols, counted before the batch moves
            batch = batch.to(self.device)
            try:
                loss, norm = train_step(model, self.optimizer, batch, cfg, self.gen)
            except NonFiniteStep as e:
                raise NumericalError(
                    f"{e} at step {self.step + 1} (epoch {self.epoch + 1}) before the update; "
                    f"{self._kept()}: lower --lr or --clip"
                ) from None
            self.step += 1
            ep.pairs_done += len(chosen)
            ep.total_loss += loss * n
            ep.symbols += n
            self.logs.step(f"{self.step},{self.epoch + 1},{loss!r},{norm!r}")
            if self.progress:
                bar.set_postfix(loss=f"{loss:.3f}")
        bar.close()
        ep.seconds += time.perf_counter() - start
        return ep

    def _out_of_time(self, deadline: float | None) -> bool:
        return deadline is not None and time.perf_counter() >= deadline

    def _kept(self) -> str:
        if self.saved_step is None:
            return "no checkpoint had been written yet"
        where = str(self.run_dir)
        return f"the last good checkpoint (step {self.saved_step}) in {where!r} is intact"

    def fit(self) -> EpochRecord:
        """Train to `epochs` or `max_time`, evaluating every epoch; checkpoints as the module
        docstring says. SIGINT/SIGTERM end the current step, save and raise `StopRequested`.

        The saved weights are the last epoch's: no checkpoint is chosen by its held-out score, so
        the held-out figures are not tuned on.
        """
        cfg = self.config
        if self.epoch >= cfg.epochs:
            raise UsageError(
                f"run already trained {self.epoch} epochs: pass a larger --epochs to continue"
            )
        deadline = None if cfg.max_time is None else time.perf_counter() + cfg.max_time
        last_save = time.perf_counter()
        with SignalGuard() as guard:
            while self.epoch < cfg.epochs:
                ep = self.run_epoch(deadline, guard)
                out_of_time = self._out_of_time(deadline)
                if ep.finished or (out_of_time and guard.signum is None):
                    self.finish_epoch(ep)
                    ending = out_of_time or self.epoch >= cfg.epochs or guard.signum is not None
                    if ending or time.perf_counter() - last_save >= SAVE_EVERY:
                        self.save()
                        last_save = time.perf_counter()
                else:
                    self.save()  # stopped by a signal: resume continues inside this epoch
                guard.check()
                if out_of_time:
                    break
        return self.history[-1]

    def finish_epoch(self, ep: EpochProgress) -> None:
        """Evaluate, record the epoch in the history and metrics.csv, decay the learning rate."""
        lr = self.optimizer.param_groups[0]["lr"]
        train_loss = ep.total_loss / max(ep.symbols, 1)
        result = evaluate_pairs(
            self.model, self.data.vocab, self.eval_pairs, max_target_len=self.max_target_len
        )
        self.epoch += 1
        self.current = None
        self.history.append(EpochRecord(self.epoch, self.step, train_loss, result, ep.seconds, lr))
        self.logs.epoch(
            f"{self.epoch},{self.step},{train_loss:.6f},{result.loss:.6f},"
            f"{result.exact:.6f},{result.cer:.6f},{ep.seconds:.3f},{lr:.6g}"
        )
        for group in self.optimizer.param_groups:
            group["lr"] *= self.config.lr_decay
        what = "held-out" if self.data.heldout else "train"
        self.log(
            f"epoch {self.epoch:3d}  train loss {train_loss:.4f}  {what} loss "
            f"{result.loss:.4f}  exact {result.exact:6.1%}  CER {result.cer:.4f}  "
            f"{ep.seconds:.1f} s"
        )

    # -- checkpoints -------------------------------------------------------------------------

    def save(self) -> None:
        """Write a checkpoint of everything an exact resume needs (and, once, heldout.tsv)."""
        tensors = {"rng.order": self.gen.get_state()}
        if self.device.type == "cuda":  # dropout on the GPU draws from its own generator
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        in_epoch = None
        ep = self.current
        if ep is not None:
            tensors["epoch.order"] = torch.tensor(ep.order, dtype=torch.int64)
            in_epoch = {
                "pairs_done": ep.pairs_done,
                "total_loss": ep.total_loss,
                "symbols": ep.symbols,
                "seconds": ep.seconds,
            }
        trainer = {
            "epoch": self.epoch,
            "step": self.step,
            "in_epoch": in_epoch,
            "train_config": dataclasses.asdict(self.config),
        }
        if not self.heldout_saved:  # data, not progress: under the root manifest, written once
            ckpt.save_files(self.run_dir, {HELDOUT: pairs_tsv(self.data.heldout).encode("utf-8")})
            self.heldout_saved = True
        saved.save_checkpoint(
            self.run_dir,
            self.step,
            self.model,
            self.optimizer,
            tensors,
            trainer,
            self.run_config,
            self.logs,
            keep=KEEP,
            where=f"at step {self.step} (epoch {self.epoch + 1}); not saved: {self._kept()}: "
            "lower --lr or --clip",
        )
        self.saved_step = self.step

    def resume(self) -> None:
        """Continue from the newest complete checkpoint, mid-epoch if it was saved there."""
        restored = saved.restore_checkpoint(self.run_dir, self.model, self.optimizer, self.warn)
        tensors, trainer = restored.tensors, restored.trainer
        self.gen.set_state(tensors["rng.order"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"].clone(), self.device)
        self.epoch = trainer["epoch"]
        self.step = self.saved_step = trainer["step"]
        self.current = None
        if trainer.get("in_epoch"):
            order = tensors["epoch.order"].tolist()
            self.current = EpochProgress(order, **trainer["in_epoch"])
        self.heldout_saved = True
        self.logs.cut_back(self.epoch, self.step)
