"""The training loop: mean cross-entropy, truncated BPTT, gradient clipping, per-epoch evaluation.

`train_step` below is the whole algorithm (d2l 9.5): a fresh or detached state, the forward pass,
the mean cross-entropy over every time step, backward, clipping, a finite check, the update.
`Trainer` is the bookkeeping around it: epochs, budgets, the progress bar, held-out evaluation,
checkpoints and exact resume (`rnnlab.training.state`), signals (`rnnlab.training.signals`).

What a run promises (README.md, "What rnnlab guarantees", lists the tests): a checkpoint restores
every RNG stream and the epoch in progress, so `--resume` in a new process continues bit for bit
(same threads); SIGINT/SIGTERM finish the current step and save before exiting; a NaN/inf loss or
gradient stops before the update, and no checkpoint ever holds a non-finite weight.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from rnnlab import checkpoint as ckpt
from rnnlab.batches import batches_per_epoch, check_length, make_batches
from rnnlab.errors import CheckpointError, NumericalError, UsageError
from rnnlab.metrics import PARALLEL_ROWS, Metrics, evaluate_nll, metrics_from_nll
from rnnlab.model import RNNLM, State
from rnnlab.training import distributed
from rnnlab.training import state as saved
from rnnlab.training.config import TrainConfig, make_optimizer
from rnnlab.training.logs import RunLogs
from rnnlab.training.precision import FP32, Precision
from rnnlab.training.runtime import CPU, Runtime
from rnnlab.training.signals import SignalGuard, StopRequested


@dataclass
class Step:
    loss: float  # the minibatch's mean cross-entropy, in nats
    grad_norm: float  # the global gradient norm before clipping
    state: State  # the final state, carried into the next minibatch (sequential sampling)


def train_step(
    model: RNNLM,
    optimizer: torch.optim.Optimizer,
    X: torch.Tensor,
    Y: torch.Tensor,
    state: State | None,
    clip: float,
    precision: Precision = FP32,
    reduce: Callable[[float], float] | None = None,
) -> Step:
    """One optimizer step on the minibatch X -> Y, `state` None for a fresh zero state.

    Shapes: X, Y (B, T) ids; state (L, B, H), or a pair of them for an LSTM.
    """
    if state is None:
        state = model.begin_state(X.shape[0])  # random sampling, or the epoch's first minibatch
    else:  # keep the values, cut the graph, so gradients stop here: truncated BPTT
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
    with precision.autocast():  # fp32: nothing; bf16/fp16: mixed precision
        logits, state = model(X, state)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, model.vocab_size), Y.reshape(-1))  # mean of B*T
    value, norm = optimize(loss, model, optimizer, clip, precision.scaler, reduce)
    return Step(value, norm, state)


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
class EpochResult:
    epoch: int
    train: Metrics
    valid: Metrics
    seconds: float  # training time of this epoch, evaluation excluded
    steps: int
    grad_norm: float  # mean global gradient norm before clipping
    clipped: float  # fraction of steps where clipping fired


@dataclass
class EpochProgress:
    """Where the current epoch stands: enough to stop after any step and continue exactly."""

    gen_state: torch.Tensor  # the batch generator's state at the epoch start: replays its order
    batches_done: int = 0
    total_nll: float = 0.0
    chars: int = 0
    grad_norms: float = 0.0
    clipped: int = 0
    seconds: float = 0.0
    state: State | None = None  # the carried hidden state (sequential sampling)
    finished: bool = False  # every minibatch of the epoch has been trained on


class Trainer:
    """Owns the model, optimizer and RNG streams of one run, and saves them to its directory.

    `log` receives progress lines, `warn` one-line warnings (default: `log`); on a process of
    rank > 0 (torchrun) both are silent and nothing is written: rank 0 speaks for the run.
    """

    def __init__(
        self,
        model: RNNLM,
        config: TrainConfig,
        train_ids: torch.Tensor,
        valid_ids: torch.Tensor,
        run_dir: Path,
        run_config: dict,
        progress: bool = True,
        log: Callable[[str], None] = print,
        warn: Callable[[str], None] | None = None,
        runtime: Runtime = CPU,
    ) -> None:
        check_length(len(train_ids), config.batch_size, config.num_steps)
        self.runtime = runtime
        world = runtime.world
        self.model = model.to(runtime.device)
        self.net = distributed.wrap(self.model, world, runtime.device)  # what the step trains
        self.config = config
        self.train_ids = train_ids.to(runtime.device)  # the data go to the device once
        self.valid_ids = valid_ids.to(runtime.device)
        self.run_dir = Path(run_dir)
        self.run_config = run_config
        self.progress = progress and world.is_main
        self.log = log if world.is_main else _silent
        self.warn = (log if warn is None else warn) if world.is_main else _silent
        self.optimizer = make_optimizer(model, config)
        self.batch_gen = torch.Generator().manual_seed(config.seed)  # offsets and window order
        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer steps taken
        self.current: EpochProgress | None = None  # the epoch under way, if any
        self.saved_step: int | None = None  # the step of the newest checkpoint on disk
        self.best_valid = math.inf
        self.best_epoch = 0
        self.best_step: int | None = None  # the checkpoint holding the best weights
        self.initial_loss: float | None = None  # the first step's loss (divergence guard)
        self.divergence_warned = False
        self.history: list[EpochResult] = []
        self.logs = RunLogs(self.run_dir)  # flushed with each checkpoint: no I/O in the loop
        self._reduce = self._global_loss if world.distributed else None

    def run_epoch(self, deadline: float | None, guard: SignalGuard) -> EpochProgress:
        """One pass over the training text (or the rest of it, after a resume).

        Stops early, before the next step, on a signal, at the deadline or at `max_steps`;
        `finished` says whether every minibatch was trained on.
        """
        cfg = self.config
        if self.current is None:
            self.current = EpochProgress(gen_state=self.batch_gen.get_state())
        ep = self.current
        self.batch_gen.set_state(ep.gen_state)  # the same offset and order as when it began
        batches = make_batches(
            self.train_ids, cfg.batch_size, cfg.num_steps, cfg.sampling, self.batch_gen
        )
        for _ in range(ep.batches_done):  # already trained on before a resume
            next(batches)
        n_batches = batches_per_epoch(
            len(self.train_ids), cfg.batch_size, cfg.num_steps, cfg.sampling
        )
        bar = tqdm(
            batches,
            total=n_batches,
            initial=ep.batches_done,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            disable=not self.progress,
            leave=False,
            unit="batch",
        )
        self.net.train()
        rows = self.runtime.world.rows(cfg.batch_size)  # every row, for one process
        start = time.perf_counter()
        save_due = False
        for X, Y in bar:  # (B, T), (B, T): the global minibatch
            if self._agree_to_stop(guard, deadline)[0] or self._max_steps_done():
                break
            if save_due:  # deferred to here so that an epoch's last step saves only once
                ep.seconds += time.perf_counter() - start
                start = time.perf_counter()
                self.save(best=False)
            X, Y = X[rows], Y[rows]  # (B/N, T): this process's rows
            # Random sampling: windows are unrelated, every minibatch starts from zero.
            carried = None if cfg.sampling == "random" else ep.state
            try:
                step = train_step(
                    self.net, self.optimizer, X, Y, carried, cfg.clip,
                    self.runtime.precision, self._reduce,
                )  # fmt: skip
            except NonFiniteStep as e:
                raise NumericalError(
                    f"{e} at step {self.step + 1} (epoch {self.epoch + 1}) "
                    f"before the update; {self._kept()}: lower --lr or --clip"
                ) from None
            self._account(ep, step, Y.numel() * self.runtime.world.size)
            save_due = cfg.save_every > 0 and self.step % cfg.save_every == 0
            if self.progress:
                elapsed = ep.seconds + time.perf_counter() - start
                bar.set_postfix(
                    loss=f"{step.loss:.3f}",
                    ppl=f"{math.exp(min(step.loss, 700)):.2f}",
                    cps=f"{ep.chars / max(elapsed, 1e-9):,.0f}",
                )
        else:
            ep.finished = True
        bar.close()
        ep.seconds += time.perf_counter() - start
        return ep

    def _global_loss(self, loss: float) -> float:
        """The global minibatch's mean loss: every rank holds B/N rows of it."""
        return distributed.all_reduce([loss], self.runtime.world)[0] / self.runtime.world.size

    def _agree_to_stop(self, guard: SignalGuard, deadline: float | None) -> tuple[int, bool]:
        """(signal number or 0, out of time), the same on every rank: all stop at one step."""
        signum, late = guard.signum or 0, self._out_of_time(deadline)
        if self.runtime.world.distributed:
            signum, late = distributed.all_reduce([signum, late], self.runtime.world, "max")
        return int(signum), bool(late)

    def _account(self, ep: EpochProgress, step: Step, chars: int) -> None:
        """Count a step taken: the epoch's sums, steps.csv, the divergence guard."""
        self.step += 1
        ep.batches_done += 1
        ep.state = step.state
        ep.total_nll += step.loss * chars
        ep.chars += chars
        ep.grad_norms += step.grad_norm
        ep.clipped += step.grad_norm > self.config.clip
        self.logs.step(f"{self.step},{self.epoch + 1},{step.loss!r},{step.grad_norm!r}")
        self._watch_divergence(step.loss)

    def _out_of_time(self, deadline: float | None) -> bool:
        return deadline is not None and time.perf_counter() >= deadline

    def _max_steps_done(self) -> bool:
        return self.config.max_steps is not None and self.step >= self.config.max_steps

    def _kept(self) -> str:
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

    def fit(self) -> EpochResult:
        """Train to `epochs`, `max_time` or `max_steps`, evaluating and checkpointing each epoch.

        SIGINT/SIGTERM end the current step, save a checkpoint of the epoch in progress (resume
        continues exactly there) and raise `StopRequested`. Reaching `max_steps` mid-epoch also
        saves the epoch in progress; the result is then the partial epoch's, with the held-out
        figures of the current weights.
        """
        cfg = self.config
        if self._max_steps_done():
            raise UsageError(
                f"run already took {self.step} steps: pass a larger --max-steps to continue"
            )
        deadline = None if cfg.max_time is None else time.perf_counter() + cfg.max_time
        with SignalGuard() as guard:
            while self.epoch < cfg.epochs:
                ep = self.run_epoch(deadline, guard)
                signum, out_of_time = self._agree_to_stop(guard, deadline)
                if ep.finished or (out_of_time and not signum):
                    self.finish_epoch(ep)  # evaluates and saves
                else:
                    self.save(best=False)  # resume continues inside this epoch
                signum = signum or self._agree_to_stop(guard, None)[0]  # one during the save
                if signum:
                    raise StopRequested(signum)
                if out_of_time or self._max_steps_done():
                    break
        if self.current is not None:
            return self.partial_result(self.current)
        return self.history[-1]

    def evaluate(self) -> Metrics:
        """Held-out figures of the weights now; the rows are shared among processes."""
        world = self.runtime.world
        with self.runtime.precision.autocast():
            nll, chars = evaluate_nll(
                self.model, self.valid_ids, rows=PARALLEL_ROWS, shard=(world.rank, world.size)
            )
        nll = distributed.all_reduce([nll], world)[0]  # NLL sums, never averages of averages
        return metrics_from_nll(nll, chars)

    def epoch_result(self, ep: EpochProgress, epoch: int) -> EpochResult:
        """The figures of an epoch (whole or stopped part-way), held-out ones of the weights now."""
        steps = max(ep.batches_done, 1)
        valid_m = self.evaluate()
        train_m = metrics_from_nll(ep.total_nll, ep.chars) if ep.chars else valid_m
        return EpochResult(
            epoch=epoch,
            train=train_m,
            valid=valid_m,
            seconds=ep.seconds,
            steps=ep.batches_done,
            grad_norm=ep.grad_norms / steps,
            clipped=ep.clipped / steps,
        )

    def partial_result(self, ep: EpochProgress) -> EpochResult:
        """An epoch stopped part-way: its training figures so far, held-out ones of the weights."""
        return self.epoch_result(ep, self.epoch + 1)

    def finish_epoch(self, ep: EpochProgress) -> None:
        """Evaluate on the held-out text, record the metrics, keep the best weights, save."""
        result = self.epoch_result(ep, self.epoch + 1)
        train_m, valid_m = result.train, result.valid
        self.epoch += 1
        self.current = None
        self.record(result)
        improved = valid_m.loss < self.best_valid
        if improved:
            self.best_valid, self.best_epoch = valid_m.loss, self.epoch
        else:  # a plateau or overfitting: smaller steps (pytorch word_language_model)
            for group in self.optimizer.param_groups:
                group["lr"] *= self.config.lr_decay
        self.save(best=improved)
        self.log(
            f"epoch {self.epoch:3d}  train ppl {train_m.ppl:7.3f}  "
            f"valid ppl {valid_m.ppl:7.3f} ({valid_m.bpc:.3f} bits/char)  "
            f"{train_m.chars / max(ep.seconds, 1e-9):,.0f} chars/s" + ("  *" if improved else "")
        )

    def record(self, r: EpochResult) -> None:
        self.history.append(r)
        self.logs.epoch(
            f"{r.epoch},{self.step},{r.train.loss:.6f},{r.train.ppl:.6f},"
            f"{r.train.bpc:.6f},{r.valid.loss:.6f},{r.valid.ppl:.6f},{r.valid.bpc:.6f},"
            f"{r.seconds:.3f},{r.train.chars / max(r.seconds, 1e-9):.1f},"
            f"{r.grad_norm:.6f},{r.clipped:.4f}"
        )

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, best: bool) -> None:
        """Write a checkpoint of everything an exact resume needs; `best` marks it the best.

        With several processes every rank takes part (the carried state's rows and the RNG
        streams are gathered) and rank 0 writes; all ranks learn whether the write succeeded.
        """
        world = self.runtime.world
        tensors = {"rng.batches": self.batch_gen.get_state()}
        in_epoch = None
        ep = self.current
        if ep is not None:
            tensors["epoch.gen_state"] = ep.gen_state
            if ep.state is not None:
                parts = ep.state if isinstance(ep.state, tuple) else (ep.state,)
                for i, part in enumerate(parts):  # (L, B, H): the global batch's rows
                    tensors[f"epoch.state.{i}"] = distributed.gather_rows(part.float(), world)
            in_epoch = {
                "batches_done": ep.batches_done,
                "total_nll": ep.total_nll,
                "chars": ep.chars,
                "grad_norms": ep.grad_norms,
                "clipped": ep.clipped,
                "seconds": ep.seconds,
            }
        tensors.update(self._rank_streams())
        best_step = self.step if best else self.best_step
        trainer = {
            "epoch": self.epoch,
            "step": self.step,
            "in_epoch": in_epoch,
            "best_valid_loss": ckpt.finite(self.best_valid),
            "best_epoch": self.best_epoch,
            "best_step": best_step,
            "initial_loss": self.initial_loss,
            "divergence_warned": self.divergence_warned,
            "train_config": dataclasses.asdict(self.config),
            "world_size": world.size,
        }
        if self.runtime.precision.scaler is not None:
            trainer["grad_scaler"] = self.runtime.precision.scaler.state_dict()
        failure = None
        try:
            saved.save_checkpoint(
                self.run_dir,
                self.step,
                self.model,
                self.optimizer,
                tensors,
                trainer,
                self.run_config,
                self.logs,
                keep=self.config.keep,
                protect=[] if best_step is None else [best_step],
                where=f"at step {self.step} (epoch {self.epoch + 1}); not saved: {self._kept()}: "
                "lower --lr or --clip",
                write=world.is_main,
            )
        except NumericalError:
            raise  # every rank sees the same non-finite tensor and stops alike
        except OSError as e:
            failure = f"cannot write a checkpoint in {str(self.run_dir)!r}: {e.strerror or e}"
        failure = distributed.broadcast_object(failure, world)
        if failure:
            raise CheckpointError(failure)
        self.saved_step, self.best_step = self.step, best_step

    def _rank_streams(self) -> dict[str, torch.Tensor]:
        """Dropout streams: torch's CPU (and CUDA) RNG state, one per rank."""
        world, device = self.runtime.world, self.runtime.device
        out = {}
        if world.distributed:
            out["rng.torch.ranks"] = distributed.gather_stack(torch.get_rng_state(), world)
        if device.type == "cuda":
            out["rng.cuda.ranks"] = distributed.gather_stack(
                torch.cuda.get_rng_state(device), world
            )
        return out

    def resume(self) -> None:
        """Continue from the newest complete checkpoint, mid-epoch if it was saved there.

        The same number of processes continues bit for bit (CPU, same threads); another number
        re-slices the global state and continues correctly, but not bit for bit (warned).
        """
        world, device = self.runtime.world, self.runtime.device
        restored = saved.restore_checkpoint(self.run_dir, self.model, self.optimizer, self.warn)
        tensors, trainer = restored.tensors, restored.trainer
        self.batch_gen.set_state(tensors["rng.batches"])
        self.epoch = trainer["epoch"]
        self.step = self.saved_step = trainer["step"]
        best = trainer["best_valid_loss"]
        self.best_valid = math.inf if best is None else best
        self.best_epoch = trainer["best_epoch"]
        self.best_step = trainer["best_step"]
        self.initial_loss = trainer["initial_loss"]
        self.divergence_warned = trainer["divergence_warned"]
        then = trainer.get("world_size", 1)
        if then != world.size:
            self.warn(
                f"warning: resuming a run of {then} process(es) with {world.size}: the global "
                "batch and state are re-sliced, so it continues correctly but not bit for bit"
            )
        elif "rng.torch.ranks" in tensors:
            torch.set_rng_state(tensors["rng.torch.ranks"][world.rank].clone())  # its own buffer
        if device.type == "cuda" and "rng.cuda.ranks" in tensors:
            streams = tensors["rng.cuda.ranks"]
            torch.cuda.set_rng_state(streams[world.rank % len(streams)].clone(), device)
        scaler = self.runtime.precision.scaler
        if scaler is not None and "grad_scaler" in trainer:
            scaler.load_state_dict(trainer["grad_scaler"])
        self.current = None
        if trainer.get("in_epoch"):
            rows = world.rows(self.config.batch_size)
            parts = [
                tensors[k][:, rows].contiguous().to(device)  # (L, B/N, H): this rank's rows
                for k in sorted(k for k in tensors if k.startswith("epoch.state."))
            ]
            state: State | None = None
            if parts:
                state = tuple(parts) if len(parts) == 2 else parts[0]  # type: ignore[assignment]
            self.current = EpochProgress(
                gen_state=tensors["epoch.gen_state"], state=state, **trainer["in_epoch"]
            )
        self.logs.cut_back(self.epoch, self.step)


def _silent(message: str) -> None:
    """The log of a rank > 0: rank 0 speaks for the run."""
