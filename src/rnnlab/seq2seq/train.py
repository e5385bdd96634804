"""Training an encoder-decoder: `train_step` is its step, `Seq2SeqFamily` its part of the loop.

A step is the one every rnnlab model takes (`rnnlab.training.optimize`): the forward pass with
teacher forcing, the masked mean cross-entropy per real target symbol, backward, clipping, a
finite check, the update. Around it runs the one loop of `rnnlab.training.Trainer`, as for the
language model: epochs over the pairs in a fresh random order, held-out evaluation after each,
the learning-rate decay, the logs, checkpoints and signals.

Checkpoints (`rnnlab.training.checkpointing`) are written at an epoch's end when `SAVE_EVERY`
seconds have passed since the last one, at the end of the run, and when SIGINT/SIGTERM stops it
(then inside the epoch, after the step under way). Besides the weights, the optimizer and the
global RNGs, a checkpoint holds the generator that draws the pair order and the
teacher-forcing coin flips and, for an epoch in progress, its pair order, the batches done and
the loss sums. So `--resume` continues mid-epoch at the next minibatch with the same draws, and
the weights equal an uninterrupted run's bit for bit (same torch threads). An epoch cut short
by `--max-time` counts as finished: it is evaluated and logged like any other.

On an accelerator (`--device`) the model lives there and each minibatch is built on the CPU and
copied there once; the pair order and the coin flips stay on the CPU generator, so they are the
same on every device, and a checkpoint (copied to the CPU) resumes on any device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from rnnlab.errors import UsageError
from rnnlab.seq2seq.evaluate import EvalResult, evaluate_pairs
from rnnlab.seq2seq.model import Seq2Seq, masked_loss
from rnnlab.seq2seq.pairs import Batch, PairData, make_batch, pairs_tsv
from rnnlab.training.config import LoopConfig, redefault
from rnnlab.training.loop import EpochProgress, Step, optimize
from rnnlab.training.runtime import CPU, Runtime

METRICS_HEADER = "epoch,step,train_loss,eval_loss,eval_exact,eval_cer,seconds,lr"
HELDOUT = "heldout.tsv"  # the held-out pairs, at the run's root, written once
SAVE_EVERY = 30.0  # seconds between checkpoints at epoch ends; the last epoch is always saved


@dataclass
class Seq2SeqTrainConfig(LoopConfig):
    """How to train an encoder-decoder: the loop's options (with seq2seq's defaults) plus
    teacher forcing."""

    batch_size: int = field(default=64, metadata={"help": "pairs per minibatch (B)"})
    lr_decay: float = redefault("lr_decay", 1.0)
    seed: int = field(default=0, metadata={"help": "seed for initialisation, order, forcing"})
    keep: int = redefault("keep", 2)
    teacher_forcing: float = field(
        default=1.0,
        metadata={
            "help": "probability that the decoder reads the true previous symbol rather "
            "than its own greedy guess (1: always; < 1 decodes step by step, slower)"
        },
    )

    DEFAULT_EPOCHS = 30

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.teacher_forcing <= 1.0:
            raise UsageError(f"--teacher-forcing must be in [0, 1], got {self.teacher_forcing}")


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
class PairEpoch(EpochProgress):
    """An epoch over the pairs: `start` holds the order drawn when it began."""

    batch_size: int = 1

    @property
    def order(self) -> list[int]:
        return self.start.tolist()

    @property
    def pairs_done(self) -> int:
        return min(self.batches_done * self.batch_size, len(self.start))


@dataclass
class EpochRecord:
    epoch: int
    step: int
    train_loss: float  # mean per target symbol over the epoch, as trained (teacher forcing)
    eval: EvalResult  # on the held-out pairs, or the training pairs when none are held out
    seconds: float
    lr: float

    @property
    def heldout_loss(self) -> float:
        return self.eval.loss


class Seq2SeqFamily:
    """An encoder-decoder trained on word pairs, as a family of the one loop."""

    metrics_header = METRICS_HEADER
    save_interval = SAVE_EVERY
    keeps_best = False  # the run's model is its newest: no checkpoint chosen by held-out score

    def __init__(
        self, model: Seq2Seq, data: PairData, config: Seq2SeqTrainConfig, runtime: Runtime = CPU
    ) -> None:
        self.device = runtime.device
        self.model = model.to(self.device)  # made on the CPU: the same weights on every device
        self.data = data
        self.config = config
        self.eval_pairs = data.heldout or data.train
        self.max_target_len = max(len(t) for _, t in data.train)

    def new_epoch(self, gen: torch.Generator) -> PairEpoch:
        order = torch.randperm(len(self.data.train), generator=gen)  # a fresh random order
        return PairEpoch(start=order, batch_size=self.config.batch_size)

    def restore_epoch(self, start: torch.Tensor, state: Any, sums: dict[str, Any]) -> PairEpoch:
        return PairEpoch(start=start, batch_size=self.config.batch_size, **sums)

    def num_batches(self) -> int:
        return math.ceil(len(self.data.train) / self.config.batch_size)

    def batches(self, ep: EpochProgress, gen: torch.Generator) -> Iterator[list]:
        """The epoch's minibatches of pairs, from the one `ep.batches_done` on."""
        order, B = ep.start.tolist(), self.config.batch_size
        for i in range(ep.batches_done * B, len(order), B):
            yield [self.data.train[j] for j in order[i : i + B]]

    def train_mode(self) -> None:
        self.model.train()

    def step(
        self,
        chosen: list,
        ep: EpochProgress,
        optimizer: torch.optim.Optimizer,
        gen: torch.Generator,
        taken: int,
    ) -> Step:
        batch = make_batch(self.data.vocab, chosen)  # (B, S), (B, T) padded
        n = int(batch.mask.sum())  # target symbols, counted before the batch moves
        loss, norm = train_step(self.model, optimizer, batch.to(self.device), self.config, gen)
        return Step(loss, norm, None, n)

    def epoch_record(self, ep: EpochProgress, epoch: int, lr: float) -> EpochRecord:
        """Evaluate the weights now; the epoch's training loss is per target symbol."""
        train_loss = ep.total_loss / max(ep.count, 1)
        result = evaluate_pairs(
            self.model, self.data.vocab, self.eval_pairs, max_target_len=self.max_target_len
        )
        return EpochRecord(epoch, 0, train_loss, result, ep.seconds, lr)

    def metrics_row(self, r: EpochRecord, step: int) -> str:
        r.step = step
        return (
            f"{r.epoch},{step},{r.train_loss:.6f},{r.eval.loss:.6f},"
            f"{r.eval.exact:.6f},{r.eval.cer:.6f},{r.seconds:.3f},{r.lr:.6g}"
        )

    def epoch_line(self, r: EpochRecord, improved: bool) -> str:
        what = "held-out" if self.data.heldout else "train"
        return (
            f"epoch {r.epoch:3d}  train loss {r.train_loss:.4f}  {what} loss "
            f"{r.eval.loss:.4f}  exact {r.eval.exact:6.1%}  CER {r.eval.cer:.4f}  "
            f"{r.seconds:.1f} s"
        )

    def files_once(self) -> dict[str, bytes]:
        """The held-out pairs, under the root manifest, so `evaluate` scores exactly those."""
        return {HELDOUT: pairs_tsv(self.data.heldout).encode("utf-8")}
