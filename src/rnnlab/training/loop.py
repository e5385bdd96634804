"""The training loop: mean cross-entropy, truncated BPTT, gradient clipping, per-epoch evaluation.

`train_step` below is the whole algorithm (d2l 9.5): a fresh or detached state, the forward pass,
the mean cross-entropy over every time step, backward, clipping, a finite check, the update.
`Trainer` is the bookkeeping around it, the same for every family (language model, seq2seq):
epochs, budgets, the learning-rate decay, the progress bar, held-out evaluation, checkpoints and
exact resume (`rnnlab.training.checkpointing`), signals (`rnnlab.training.signals`). A family
(`rnnlab.training.lm.LanguageModelFamily`, `rnnlab.seq2seq.train.Seq2SeqFamily`) brings only
its batches, its step and its evaluation.

What a run promises (docs/reliability.md, "What rnnlab guarantees", lists the tests): a checkpoint
restores every RNG stream and the epoch in progress, so `--resume` in a new process continues bit
for bit (same threads); SIGINT/SIGTERM finish the current step and save before exiting; a NaN/inf
loss or gradient stops before the update, and no checkpoint ever holds a non-finite weight.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from rnnlab.errors import NumericalError, UsageError
from rnnlab.model import RNNLM, Masks, State, detach_state
from rnnlab.training import distributed
from rnnlab.training.checkpointing import resume_trainer, save_trainer
from rnnlab.training.config import UNLIMITED_EPOCHS, LoopConfig, make_optimizer
from rnnlab.training.logs import RunLogs
from rnnlab.training.precision import FP32, Precision
from rnnlab.training.runtime import CPU, Runtime
from rnnlab.training.schedule import make_scheduler
from rnnlab.training.signals import SignalGuard, StopRequested


@dataclass
class Step:
    loss: float  # the minibatch's mean cross-entropy, in nats
    grad_norm: float  # the global gradient norm before clipping
    state: State | None  # the final state, carried into the next minibatch (sequential sampling)
    count: int = 0  # predicted symbols in the global minibatch: the loss's weight in the sums


def train_step(
    model: RNNLM,
    optimizer: torch.optim.Optimizer,
    X: torch.Tensor,
    Y: torch.Tensor,
    state: State | None,
    clip: float,
    precision: Precision = FP32,
    reduce: Callable[[float], float] | None = None,
    masks: Masks | None = None,
) -> Step:
    """One optimizer step on the minibatch X -> Y, `state` None for a fresh zero state.

    `masks` are the step's DropConnect and locked-dropout masks (`RNNLM.sample_masks`), if any.
    Shapes: X, Y (B, T) ids; state (L, B, H), or a pair of them for an LSTM.
    """
    if state is None:
        state = model.begin_state(X.shape[0])  # random sampling, or the epoch's first minibatch
    else:  # keep the values, cut the graph, so gradients stop here: truncated BPTT
        state = detach_state(state)
    with precision.autocast():  # fp32: nothing; bf16/fp16: mixed precision
        extra = {} if masks is None else {"masks": masks}  # no masks: the plain forward call
        logits, state = model(X, state, **extra)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, model.vocab_size), Y.reshape(-1))  # mean of B*T
    value, norm = optimize(loss, model, optimizer, clip, precision.scaler, reduce)
    return Step(value, norm, state, Y.numel())


def optimize(
    loss: torch.Tensor,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    clip: float,
    scaler: torch.amp.GradScaler | None = None,
    reduce: Callable[[float], float] | None = None,
) -> tuple[float, float]:
    """Backward, clip, check, update: the optimisation step every rnnlab model shares.

    Returns the loss (`reduce`d over processes: the global batch's) and the gradient norm before
    clipping; raises `NonFiniteStep` before the update when either is NaN/inf, so the weights
    are never touched by a bad gradient. With an fp16 `scaler`, an overflowed gradient is the
    scaler's business: it skips the update and lowers the scale.
    """
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradient, not the scaled one
    # Clipping bounds the step when the gradient explodes through many time steps.
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
    value = loss.item() if reduce is None else reduce(loss.item())
    if not (math.isfinite(value) and (math.isfinite(norm) or scaler is not None)):
        raise NonFiniteStep(value, norm)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return value, norm


class NonFiniteStep(Exception):
    """The loss or the gradient norm of a step was NaN/inf; the caller words the error."""

    def __init__(self, loss: float, norm: float) -> None:
        bad_loss = not math.isfinite(loss)
        self.what, self.value = ("loss", loss) if bad_loss else ("gradient norm", norm)
        super().__init__(f"{self.what} became {self.value}")


@dataclass
class EpochProgress:
    """Where the current epoch stands: enough to stop after any step and continue exactly.

    `start` replays the epoch's order: the batch generator's state when it began (language
    model) or the order it drew (seq2seq). The sums weigh each step's mean loss by its count of
    predicted symbols, so the epoch's figure is a per-symbol mean, never a mean of means.
    """

    start: torch.Tensor
    batches_done: int = 0
    total_loss: float = 0.0  # sum over steps of the step's mean loss times its symbols
    count: int = 0  # predicted symbols so far
    grad_norms: float = 0.0
    clipped: int = 0
    seconds: float = 0.0  # training time, evaluation excluded
    state: State | None = None  # the carried hidden state (sequential sampling)
    finished: bool = False  # every minibatch of the epoch has been trained on

    def sums(self) -> dict[str, Any]:
        """What a checkpoint records of the epoch besides `start` and the carried state."""
        return {
            "batches_done": self.batches_done,
            "total_loss": self.total_loss,
            "count": self.count,
            "grad_norms": self.grad_norms,
            "clipped": self.clipped,
            "seconds": self.seconds,
        }


class Record(Protocol):
    """One epoch's figures, as a family words them; the loop needs only the held-out loss."""

    @property
    def heldout_loss(self) -> float: ...


class Family(Protocol):
    """What a family of models brings to the one loop: its batches, its step, its evaluation.

    `model` is the module whose weights are saved; `save_interval` is the seconds between
    epoch-end checkpoints (None: every epoch); `keeps_best` marks the checkpoint with the best
    held-out loss as the run's model (the language model) instead of the newest (seq2seq).
    """

    model: nn.Module
    metrics_header: str
    save_interval: float | None
    keeps_best: bool

    def new_epoch(self, gen: torch.Generator) -> EpochProgress: ...

    def restore_epoch(
        self, start: torch.Tensor, state: State | None, sums: dict[str, Any]
    ) -> EpochProgress: ...

    def num_batches(self) -> int: ...

    def batches(self, ep: EpochProgress, gen: torch.Generator) -> Iterator[Any]: ...

    def train_mode(self) -> None: ...

    def step(
        self,
        batch: Any,
        ep: EpochProgress,
        optimizer: torch.optim.Optimizer,
        gen: torch.Generator,
        taken: int,
    ) -> Step:
        """One update on `batch`; `taken` counts the updates before it (seeds its masks)."""

    def epoch_record(self, ep: EpochProgress, epoch: int, lr: float) -> Record: ...

    def metrics_row(self, record: Any, step: int) -> str: ...

    def epoch_line(self, record: Any, improved: bool) -> str: ...

    def files_once(self) -> dict[str, bytes]: ...


class Trainer:
    """The one training loop: every family's epochs, budgets, decay, checkpoints and signals.

    `log` receives progress lines, `warn` one-line warnings (default: `log`); on a process of
    rank > 0 (torchrun) both are silent and nothing is written: rank 0 speaks for the run.
    """

    def __init__(
        self,
        family: Family,
        config: LoopConfig,
        run_dir: Path,
        run_config: dict,
        progress: bool = True,
        log: Callable[[str], None] = print,
        warn: Callable[[str], None] | None = None,
        runtime: Runtime = CPU,
    ) -> None:
        world = runtime.world
        self.family = family
        self.model = family.model  # the raw model: its weights are what a checkpoint holds
        self.config = config
        self.runtime = runtime
        self.run_dir = Path(run_dir)
        self.run_config = run_config
        self.progress = progress and world.is_main
        self.log = log if world.is_main else _silent
        self.warn = (log if warn is None else warn) if world.is_main else _silent
        self.optimizer = make_optimizer(self.model, config)
        self.batch_gen = torch.Generator().manual_seed(config.seed)  # order, windows, draws
        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer steps taken
        self.current: EpochProgress | None = None  # the epoch under way, if any
        self.saved_step: int | None = None  # the step of the newest checkpoint on disk
        self.files_saved = False  # the family's once-only files (seq2seq's held-out pairs)
        self.best_valid = math.inf
        self.best_epoch = 0
        self.best_step: int | None = None  # the checkpoint holding the best weights
        self.initial_loss: float | None = None  # the first step's loss (divergence guard)
        self.divergence_warned = False
        self.history: list[Any] = []  # the family's per-epoch records
        self.logs = RunLogs(self.run_dir, header=family.metrics_header)  # flushed with each save
        self.done_seconds = 0.0  # training seconds of the completed epochs (the budget's clock)
        self._segment_start: float | None = None  # perf_counter of the steps now under way
        self.scheduler = make_scheduler(self.optimizer, config, self.budget_progress)
        self.ema: AveragedModel | None = None  # the average saved as the model (--ema)
        if config.ema:
            self.ema = AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True
            )

    # -- the loop ----------------------------------------------------------------------------

    def fit(self) -> Any:
        """Train to `epochs`, `max_time` or `max_steps`, evaluating after each epoch.

        SIGINT/SIGTERM end the current step, save a checkpoint of the epoch in progress (resume
        continues exactly there) and raise `StopRequested`. Reaching `max_steps` mid-epoch also
        saves the epoch in progress; the result is then the partial epoch's, with the held-out
        figures of the current weights. Returns the last epoch's record.
        """
        cfg = self.config
        if self.epoch >= cfg.epochs:
            raise UsageError(
                f"run already trained {self.epoch} epochs: pass a larger --epochs to continue"
            )
        if self._max_steps_done():
            raise UsageError(
                f"run already took {self.step} steps: pass a larger --max-steps to continue"
            )
        last_save = time.perf_counter()
        with SignalGuard() as guard:
            while self.epoch < cfg.epochs:
                ep = self.run_epoch(guard)
                signum, out_of_time = self._agree_to_stop(guard)
                if ep.finished or (out_of_time and not signum):
                    improved = self.finish_epoch(ep)
                    signum = signum or self._agree_to_stop(guard, timed=False)[0]  # meanwhile
                    interval = self.family.save_interval
                    ending = bool(signum) or out_of_time or self.epoch >= cfg.epochs
                    ending = ending or self._max_steps_done()
                    if interval is None or ending or time.perf_counter() - last_save >= interval:
                        self.save(best=improved and self.family.keeps_best)
                        last_save = time.perf_counter()
                else:
                    self.save(best=False)  # resume continues inside this epoch
                signum = signum or self._agree_to_stop(guard, timed=False)[0]  # during the save
                if signum:
                    raise StopRequested(signum)
                if out_of_time or self._max_steps_done():
                    break
        if self.current is not None:  # stopped inside an epoch (max_steps)
            with self.averaged():
                return self.family.epoch_record(self.current, self.epoch + 1, self.lr)
        return self.history[-1]

    def run_epoch(self, guard: SignalGuard) -> EpochProgress:
        """One pass over the training data (or the rest of it, after a resume).

        Stops early, before the next step, on a signal, at the deadline or at `max_steps`;
        `finished` says whether every minibatch was trained on.
        """
        cfg, family = self.config, self.family
        if self.current is None:
            self.current = family.new_epoch(self.batch_gen)
        ep = self.current
        bar = progress_bar(
            family.batches(ep, self.batch_gen),
            total=family.num_batches(),
            initial=ep.batches_done,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            disable=not self.progress,
            leave=False,
            unit="batch",
        )
        family.train_mode()
        self._segment_start = time.perf_counter()
        save_due = False
        for batch in bar:
            if any(self._agree_to_stop(guard)) or self._max_steps_done():
                break
            if save_due:  # deferred to here so that an epoch's last step saves only once
                self._close_segment(ep)
                self.save(best=False)
                self._segment_start = time.perf_counter()
            lr = self.lr
            try:
                step = family.step(batch, ep, self.optimizer, self.batch_gen, self.step)
            except NonFiniteStep as e:
                raise NumericalError(
                    f"{e} at step {self.step + 1} (epoch {self.epoch + 1}) "
                    f"before the update; {self.kept()}: lower --lr or --clip"
                ) from None
            self._account(ep, step, lr)
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            if self.scheduler is not None:  # the next step's rate, from the budget spent
                self.scheduler.step()
            save_due = cfg.save_every > 0 and self.step % cfg.save_every == 0
            if self.progress:
                elapsed = ep.seconds + time.perf_counter() - self._segment_start
                bar.set_postfix(
                    loss=f"{step.loss:.3f}",
                    ppl=f"{math.exp(min(step.loss, 700)):.2f}",
                    per_s=f"{ep.count / max(elapsed, 1e-9):,.0f}",
                )
        else:
            ep.finished = True
        bar.close()
        self._close_segment(ep)
        return ep

    def _close_segment(self, ep: EpochProgress) -> None:
        """Add the steps since `_segment_start` to the epoch's training seconds."""
        if self._segment_start is not None:
            ep.seconds += time.perf_counter() - self._segment_start
        self._segment_start = None

    def elapsed(self) -> float:
        """Training seconds so far (evaluation and saving excluded), across resumes."""
        now = self.done_seconds + (self.current.seconds if self.current else 0.0)
        if self._segment_start is not None:
            now += time.perf_counter() - self._segment_start
        return now

    def budget_progress(self) -> float:
        """How much of the budget is spent, 0..1: the largest of the seconds (--max-time),
        the steps (--max-steps) and the epochs' steps (--epochs) fractions."""
        cfg = self.config
        fractions = [0.0]
        if cfg.max_time is not None:
            fractions.append(self.elapsed() / cfg.max_time)
        if cfg.max_steps is not None:
            fractions.append(self.step / cfg.max_steps)
        if cfg.epochs < UNLIMITED_EPOCHS:
            fractions.append(self.step / max(cfg.epochs * self.family.num_batches(), 1))
        return min(max(fractions), 1.0)

    @contextlib.contextmanager
    def averaged(self) -> Iterator[dict[str, torch.Tensor] | None]:
        """The model holds the averaged weights inside the block (--ema), its own after; the
        block gets the raw weights (None without an average)."""
        if self.ema is None:
            yield None
            return
        raw = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.ema.module.state_dict())
        try:
            yield raw
        finally:
            self.model.load_state_dict(raw)

    def finish_epoch(self, ep: EpochProgress) -> bool:
        """Evaluate, record the epoch, keep track of the best, decay the learning rate after an
        epoch that did not improve the held-out loss. Returns whether it improved."""
        with self.averaged():
            record = self.family.epoch_record(ep, self.epoch + 1, self.lr)
        self.epoch += 1
        self.done_seconds += ep.seconds
        self.current = None
        self.history.append(record)
        self.logs.epoch(self.family.metrics_row(record, self.step))
        improved = record.heldout_loss < self.best_valid
        if improved:
            self.best_valid, self.best_epoch = record.heldout_loss, self.epoch
        schedule = self.config.schedule
        # plateau: a plateau or overfitting calls for smaller steps (word_language_model)
        if schedule == "exponential" or (schedule == "plateau" and not improved):
            for group in self.optimizer.param_groups:
                group["lr"] *= self.config.lr_decay
        self.log(self.family.epoch_line(record, improved and self.family.keeps_best))
        return improved

    @property
    def lr(self) -> float:
        """The learning rate of the next update."""
        return self.optimizer.param_groups[0]["lr"]

    def _agree_to_stop(self, guard: SignalGuard, timed: bool = True) -> tuple[int, bool]:
        """(signal number or 0, out of time), the same on every rank: all stop at one step."""
        signum, late = guard.signum or 0, timed and self._out_of_time()
        if self.runtime.world.distributed:
            signum, late = distributed.all_reduce([signum, late], self.runtime.world, "max")
        return int(signum), bool(late)

    def _account(self, ep: EpochProgress, step: Step, lr: float) -> None:
        """Count a step taken: the epoch's sums, steps.csv, the divergence guard."""
        self.step += 1
        ep.batches_done += 1
        ep.state = step.state
        ep.total_loss += step.loss * step.count
        ep.count += step.count
        ep.grad_norms += step.grad_norm
        ep.clipped += step.grad_norm > self.config.clip
        self.logs.step(f"{self.step},{self.epoch + 1},{step.loss!r},{step.grad_norm!r},{lr!r}")
        self._watch_divergence(step.loss)

    def _out_of_time(self) -> bool:
        return self.config.max_time is not None and self.elapsed() >= self.config.max_time

    def _max_steps_done(self) -> bool:
        return self.config.max_steps is not None and self.step >= self.config.max_steps

    def kept(self) -> str:
        """What a failure leaves behind, for its message."""
        if self.saved_step is None:
            return "no checkpoint had been written yet"
        where = str(self.run_dir)
        return f"the last good checkpoint (step {self.saved_step}) in {where!r} is intact"

    def _watch_divergence(self, loss: float) -> None:
        """Warn once when the loss climbs far above where it started: a run about to blow up."""
        if self.initial_loss is None:
            self.initial_loss = loss
            return
        factor = self.config.divergence_factor
        if factor and not self.divergence_warned and loss > factor * self.initial_loss:
            self.divergence_warned = True
            self.warn(
                f"warning: training loss {loss:.4g} at step {self.step} is over {factor:g} times "
                f"the first step's {self.initial_loss:.4g}: the run may be diverging; "
                "consider a lower --lr or --clip"
            )

    # -- checkpoints: the code lives with the run state, in rnnlab.training.checkpointing ----

    def save(self, best: bool) -> None:
        """Write a checkpoint of everything an exact resume needs; `best` marks it the best.
        With --ema the checkpoint's weights are the average and the raw ones ride along."""
        with self.averaged() as raw:
            save_trainer(self, best, raw)

    def resume(self) -> None:
        """Continue from the newest complete checkpoint, mid-epoch if it was saved there."""
        resume_trainer(self)


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """tqdm's notebook widget where it can draw (a notebook with ipywidgets), else its text bar:
    without ipywidgets the widget would only print a warning naming tqdm's install path."""
    if kwargs.get("disable") or importlib.util.find_spec("ipywidgets") is None:
        return tqdm(*args, **kwargs)
    from tqdm.auto import tqdm as auto_tqdm  # imported here: it warns where it cannot draw

    return auto_tqdm(*args, **kwargs)


def _silent(message: str) -> None:
    """The log of a rank > 0: rank 0 speaks for the run."""
