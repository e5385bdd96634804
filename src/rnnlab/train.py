"""The training loop: mean cross-entropy, truncated BPTT, gradient clipping, per-epoch evaluation.

Read `Trainer.run_epoch` top to bottom: it is the whole algorithm. Everything else is
bookkeeping (metrics, checkpoints, resuming, stopping on a signal, a time or a step budget).

What a run promises (README.md, "What rnnlab guarantees", lists the tests): a checkpoint restores
every RNG stream and the epoch in progress, so `--resume` in a new process continues bit for bit
(same threads);
SIGINT/SIGTERM finish the current step and save before exiting; a NaN/inf loss or gradient stops
before the update, and no checkpoint ever holds a non-finite weight.
"""

from __future__ import annotations

import dataclasses
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from rnnlab import checkpoint as ckpt
from rnnlab.batches import SAMPLINGS, batches_per_epoch, check_length, make_batches
from rnnlab.errors import NumericalError, UsageError
from rnnlab.metrics import PARALLEL_ROWS, Metrics, evaluate, metrics_from_nll
from rnnlab.model import RNNLM, State, detach_state

OPTIMIZERS = ("adam", "sgd")
METRICS_HEADER = (
    "epoch,step,train_loss,train_ppl,train_bpc,valid_loss,valid_ppl,valid_bpc,"
    "seconds,chars_per_sec,grad_norm,clip_fraction"
)
STEPS_HEADER = "step,epoch,loss,grad_norm"
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


@dataclass
class TrainConfig:
    """How to train: minibatches, optimizer, budget."""

    batch_size: int = field(default=32, metadata={"help": "rows per minibatch (B)"})
    num_steps: int = field(default=35, metadata={"help": "time steps per minibatch (T)"})
    sampling: str = field(
        default="sequential",
        metadata={
            "help": "random: shuffled windows, zero state each minibatch; sequential: state "
            "carried across minibatches (truncated BPTT)",
            "choices": SAMPLINGS,
        },
    )
    optimizer: str = field(default="adam", metadata={"help": "optimizer", "choices": OPTIMIZERS})
    lr: float = field(default=0.003, metadata={"help": "learning rate"})
    clip: float = field(default=1.0, metadata={"help": "max global norm of the gradient"})
    lr_decay: float = field(
        default=0.5,
        metadata={
            "help": "multiply the learning rate by this after an epoch that did not "
            "improve the held-out loss (1: never)"
        },
    )
    epochs: int = field(default=20, metadata={"help": "passes over the training text"})
    max_time: float | None = field(
        default=None, metadata={"help": "stop after this many seconds of training"}
    )
    max_steps: int | None = field(
        default=None,
        metadata={"help": "stop after this many optimizer steps in all, saving a checkpoint"},
    )
    seed: int = field(default=0, metadata={"help": "seed for initialisation, batches, dropout"})
    save_every: int = field(
        default=0,
        metadata={"help": "also save a checkpoint every N optimizer steps (0: at epoch ends only)"},
    )
    keep: int = field(
        default=3,
        metadata={"help": "checkpoints kept besides the best one; older ones are deleted"},
    )
    divergence_factor: float = field(
        default=3.0,
        metadata={
            "help": "warn once when the training loss exceeds this many times the first "
            "step's loss (0: never)"
        },
    )

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_steps", "epochs", "keep"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be at least 1, got {getattr(self, name)}")
        if self.sampling not in SAMPLINGS:
            raise UsageError(
                f"unknown sampling {self.sampling!r}: use one of {', '.join(SAMPLINGS)}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(
                f"unknown optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}"
            )
        if not (0 < self.lr <= FLOAT32_MAX):  # the weights are float32: a larger step overflows
            raise UsageError(f"--lr must be a positive number, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise UsageError(f"--lr-decay must be in (0, 1], got {self.lr_decay}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise UsageError(f"--clip must be a positive number, got {self.clip}")
        if self.max_time is not None and not (math.isfinite(self.max_time) and self.max_time > 0):
            raise UsageError(
                f"--max-time must be a positive number of seconds, got {self.max_time}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.save_every < 0:
            raise UsageError(f"--save-every must be 0 (epoch ends) or more, got {self.save_every}")
        f = self.divergence_factor
        if not (math.isfinite(f) and (f == 0 or f > 1)):
            raise UsageError(f"--divergence-factor must be 0 (off) or above 1, got {f}")


@dataclass
class EpochResult:
    epoch: int
    train: Metrics
    valid: Metrics
    seconds: float  # training time of this epoch, evaluation excluded
    steps: int
    grad_norm: float  # mean global gradient norm before clipping
    clipped: float  # fraction of steps where clipping fired


class StopRequested(Exception):
    """Raised inside the loop when SIGINT/SIGTERM arrived; carries the exit code to use."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


class SignalGuard:
    """Turn SIGINT/SIGTERM into a flag checked between optimizer steps: no step half-runs.

    A second signal while the checkpoint is being saved only sets the flag again, so it cannot
    cut the save short; the first signal decides the exit code.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalGuard:
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is None:  # the first signal decides the exit code
            self.signum = signum

    def check(self) -> None:
        if self.signum is not None:
            raise StopRequested(self.signum)

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]


def make_optimizer(model: RNNLM, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    return torch.optim.SGD(model.parameters(), lr=config.lr)


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

    `log` receives progress lines, `warn` one-line warnings (default: `log`).
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
    ) -> None:
        check_length(len(train_ids), config.batch_size, config.num_steps)
        self.model = model
        self.config = config
        self.train_ids = train_ids
        self.valid_ids = valid_ids
        self.run_dir = Path(run_dir)
        self.run_config = run_config
        self.progress = progress
        self.log = log
        self.warn = log if warn is None else warn
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
        self.metrics_rows: list[str] = [METRICS_HEADER]
        # steps.csv: one row per step, held here and flushed with each checkpoint (no I/O in the
        # loop). `steps_base` is None once the file on disk is right, else the rows to rewrite it
        # with (none for a new run; those up to the checkpoint's step after a resume).
        self.pending_steps: list[str] = []
        self.steps_base: list[str] | None = []

    def run_epoch(self, deadline: float | None, guard: SignalGuard) -> EpochProgress:
        """One pass over the training text (or the rest of it, after a resume).

        Stops early, before the next step, on a signal, at the deadline or at `max_steps`;
        `finished` says whether every minibatch was trained on.
        """
        cfg, model = self.config, self.model
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
        model.train()
        V = model.vocab_size
        state = ep.state  # None at the epoch start: a fresh zero state
        start = time.perf_counter()
        save_due = False
        for X, Y in bar:  # (B, T), (B, T)
            if guard.signum is not None or self._out_of_time(deadline) or self._max_steps_done():
                break
            if save_due:  # deferred to here so that an epoch's last step saves only once
                ep.seconds += time.perf_counter() - start
                start = time.perf_counter()
                self.save(best=False)
            if cfg.sampling == "random" or state is None:
                state = model.begin_state(X.shape[0])  # windows are unrelated: start from zero
            else:
                state = detach_state(state)  # keep the values, cut the graph (truncated BPTT)
            logits, state = model(X, state)  # (B, T, V)
            loss = F.cross_entropy(logits.reshape(-1, V), Y.reshape(-1))  # mean over B*T
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # Clipping bounds the step when the gradient explodes through many time steps.
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip))
            value = loss.item()
            if not (math.isfinite(value) and math.isfinite(norm)):
                what, bad = ("loss", value) if not math.isfinite(value) else ("gradient norm", norm)
                raise NumericalError(
                    f"{what} became {bad} at step {self.step + 1} (epoch {self.epoch + 1}) "
                    f"before the update; {self._kept()}: lower --lr or --clip"
                )
            self.optimizer.step()
            self.step += 1
            ep.batches_done += 1
            ep.state = state
            ep.total_nll += value * Y.numel()
            ep.chars += Y.numel()
            ep.grad_norms += norm
            ep.clipped += norm > cfg.clip
            self.pending_steps.append(f"{self.step},{self.epoch + 1},{value!r},{norm!r}")
            self._watch_divergence(value)
            save_due = cfg.save_every > 0 and self.step % cfg.save_every == 0
            if self.progress:
                elapsed = ep.seconds + time.perf_counter() - start
                bar.set_postfix(
                    loss=f"{value:.3f}",
                    ppl=f"{math.exp(min(value, 700)):.2f}",
                    cps=f"{ep.chars / max(elapsed, 1e-9):,.0f}",
                )
        else:
            ep.finished = True
        bar.close()
        ep.seconds += time.perf_counter() - start
        return ep

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
                out_of_time = self._out_of_time(deadline)
                if ep.finished or (out_of_time and guard.signum is None):
                    self.finish_epoch(ep)  # evaluates and saves
                else:
                    self.save(best=False)  # resume continues inside this epoch
                guard.check()
                if out_of_time or self._max_steps_done():
                    break
        if self.current is not None:
            return self.partial_result(self.current)
        return self.history[-1]

    def epoch_result(self, ep: EpochProgress, epoch: int) -> EpochResult:
        """The figures of an epoch (whole or stopped part-way), held-out ones of the weights now."""
        steps = max(ep.batches_done, 1)
        valid_m = evaluate(self.model, self.valid_ids, rows=PARALLEL_ROWS)
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
        self.metrics_rows.append(
            f"{r.epoch},{self.step},{r.train.loss:.6f},{r.train.ppl:.6f},"
            f"{r.train.bpc:.6f},{r.valid.loss:.6f},{r.valid.ppl:.6f},{r.valid.bpc:.6f},"
            f"{r.seconds:.3f},{r.train.chars / max(r.seconds, 1e-9):.1f},"
            f"{r.grad_norm:.6f},{r.clipped:.4f}"
        )

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, best: bool) -> None:
        """Write a checkpoint of everything an exact resume needs; `best` marks it the best.

        Order matters for a crash at any moment: the logs first (they may run ahead of the
        checkpoints, and a resume truncates them), then the checkpoint directory, which exists
        only once complete, then pruning of old ones.
        """
        weights = dict(self.model.state_dict())
        optim_tensors, optim_plain = ckpt.optimizer_to_checkpoint(self.optimizer)
        tensors = dict(optim_tensors)
        tensors["rng.batches"] = self.batch_gen.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        in_epoch = None
        ep = self.current
        if ep is not None:
            tensors["epoch.gen_state"] = ep.gen_state
            if ep.state is not None:
                parts = ep.state if isinstance(ep.state, tuple) else (ep.state,)
                for i, part in enumerate(parts):
                    tensors[f"epoch.state.{i}"] = part
            in_epoch = {
                "batches_done": ep.batches_done,
                "total_nll": ep.total_nll,
                "chars": ep.chars,
                "grad_norms": ep.grad_norms,
                "clipped": ep.clipped,
                "seconds": ep.seconds,
            }
        bad = ckpt.non_finite({**weights, **tensors})
        if bad:  # a checkpoint must never hold what cannot be resumed from
            raise NumericalError(
                f"{bad[0]} became non-finite at step {self.step} (epoch {self.epoch + 1}); not "
                f"saved: {self._kept()}: lower --lr or --clip"
            )
        best_step = self.step if best else self.best_step
        py_version, py_state, py_gauss = random.getstate()
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
        trainer = {
            "epoch": self.epoch,
            "step": self.step,
            "in_epoch": in_epoch,
            "best_valid_loss": ckpt.finite(self.best_valid),
            "best_epoch": self.best_epoch,
            "best_step": best_step,
            "initial_loss": self.initial_loss,
            "divergence_warned": self.divergence_warned,
            "optimizer": optim_plain,
            "rng_python": [py_version, list(py_state), py_gauss],
            "rng_numpy": [np_name, np_keys.tolist(), np_pos, np_has_gauss, np_gauss],
            "train_config": dataclasses.asdict(self.config),
            "torch_version": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_logs()
        config = ckpt.json_bytes(self.run_config)
        path = self.run_dir / ckpt.CONFIG
        if not path.exists() or path.read_bytes() != config:
            ckpt.save_files(self.run_dir, {ckpt.CONFIG: config})
        ckpt.write_checkpoint(
            self.run_dir,
            self.step,
            {
                ckpt.WEIGHTS: ckpt.tensors_bytes(weights),
                ckpt.STATE: ckpt.tensors_bytes(tensors),
                ckpt.TRAINER: ckpt.json_bytes(trainer),
            },
        )
        self.saved_step, self.best_step = self.step, best_step
        protect = [] if best_step is None else [best_step]
        ckpt.prune(self.run_dir, self.step, self.config.keep, protect)

    def _write_logs(self) -> None:
        """metrics.csv whole (a few rows); steps.csv appended with the rows since the last save."""
        csv = "\n".join(self.metrics_rows) + "\n"
        ckpt.write_atomic(self.run_dir / ckpt.METRICS, csv.encode("utf-8"))
        path = self.run_dir / ckpt.STEPS
        if self.steps_base is not None or not path.exists():
            rows = [STEPS_HEADER, *(self.steps_base or []), *self.pending_steps]
            ckpt.write_atomic(path, ("\n".join(rows) + "\n").encode("utf-8"))
        elif self.pending_steps:
            ckpt.append_synced(path, ("\n".join(self.pending_steps) + "\n").encode("utf-8"))
        self.steps_base, self.pending_steps = None, []

    def resume(self) -> None:
        """Continue from the newest complete checkpoint, mid-epoch if it was saved there.

        A damaged newest checkpoint (truncated, a flipped bit, a missing file) is skipped for
        the one before it, with a one-line warning.
        """
        path, files, skipped = ckpt.newest_complete(self.run_dir)
        if skipped:
            more = f" (and {len(skipped) - 1} newer)" if len(skipped) > 1 else ""
            self.warn(f"warning: {skipped[0]}{more}; resuming from {path.name} instead")
        weights = ckpt.parse_tensors(files[ckpt.WEIGHTS], path / ckpt.WEIGHTS)
        tensors = ckpt.parse_tensors(files[ckpt.STATE], path / ckpt.STATE)
        trainer = ckpt.parse_json(files[ckpt.TRAINER], path / ckpt.TRAINER)
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(
            ckpt.optimizer_from_checkpoint(
                {k: v for k, v in tensors.items() if k.startswith("optim.")}, trainer["optimizer"]
            )
        )
        self.batch_gen.set_state(tensors["rng.batches"])
        torch.set_rng_state(tensors["rng.torch"])
        py_version, py_state, py_gauss = trainer["rng_python"]
        random.setstate((py_version, tuple(py_state), py_gauss))
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = trainer["rng_numpy"]
        keys = np.array(np_keys, dtype=np.uint32)
        np.random.set_state((np_name, keys, np_pos, np_has_gauss, np_gauss))
        self.epoch = trainer["epoch"]
        self.step = self.saved_step = trainer["step"]
        best = trainer["best_valid_loss"]
        self.best_valid = math.inf if best is None else best
        self.best_epoch = trainer["best_epoch"]
        self.best_step = trainer["best_step"]
        self.initial_loss = trainer["initial_loss"]
        self.divergence_warned = trainer["divergence_warned"]
        self.current = None
        if trainer.get("in_epoch"):
            parts = [tensors[k] for k in sorted(k for k in tensors if k.startswith("epoch.state."))]
            state: State | None = None
            if parts:
                state = tuple(parts) if len(parts) == 2 else parts[0]  # type: ignore[assignment]
            self.current = EpochProgress(
                gen_state=tensors["epoch.gen_state"], state=state, **trainer["in_epoch"]
            )
        for name, key, now in (
            ("torch", "torch_version", torch.__version__),
            ("threads", "threads", torch.get_num_threads()),
        ):
            then = trainer.get(key)
            if then is not None and then != now:
                self.warn(
                    f"warning: checkpoint was written with {name} {then}, resuming with {now}: "
                    "results will not match an uninterrupted run bit for bit"
                )
        # The logs may run ahead of the checkpoint (a crash after writing them): cut them back.
        metrics = self.run_dir / ckpt.METRICS
        if metrics.exists():
            rows = metrics.read_text(encoding="utf-8").splitlines()
            self.metrics_rows = [METRICS_HEADER] + rows[1 : self.epoch + 1]
        # Rewritten at the next save without rows past the checkpoint (a crash may leave some).
        self.steps_base = read_step_rows(self.run_dir / ckpt.STEPS, self.step)
        self.pending_steps = []


def read_step_rows(path: Path, last_step: int) -> list[str]:
    """Rows of steps.csv for steps 1..last_step, stopping at the first unreadable row."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
        fields = line.split(",")
        try:
            step = int(fields[0])
            float(fields[2]), float(fields[3])
        except (ValueError, IndexError):
            break
        if step > last_step or len(fields) != 4:
            break
        rows.append(line)
    return rows
