"""The training loop: mean cross-entropy, truncated BPTT, gradient clipping, per-epoch evaluation.

Read `Trainer.run_epoch` top to bottom: it is the whole algorithm. Everything else is
bookkeeping (metrics, checkpoints, resuming, stopping on a signal or a time budget).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from rnnlab import checkpoint as ckpt
from rnnlab.batches import SAMPLINGS, batches_per_epoch, check_length, make_batches
from rnnlab.errors import NumericalError, UsageError
from rnnlab.metrics import Metrics, evaluate, metrics_from_nll
from rnnlab.model import RNNLM, State, detach_state

OPTIMIZERS = ("adam", "sgd")
METRICS_HEADER = (
    "epoch,step,train_loss,train_ppl,train_bpc,valid_loss,valid_ppl,valid_bpc,"
    "seconds,chars_per_sec,grad_norm,clip_fraction"
)


@dataclass
class TrainConfig:
    """How to train: minibatches, optimizer, budget."""

    batch_size: int = field(default=32, metadata={"help": "rows per minibatch (B)"})
    num_steps: int = field(default=64, metadata={"help": "time steps per minibatch (T)"})
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
        metadata={"help": "multiply the learning rate by this after an epoch that did not "
                  "improve the held-out loss (1: never)"},
    )
    epochs: int = field(default=20, metadata={"help": "passes over the training text"})
    max_time: float | None = field(
        default=None, metadata={"help": "stop after this many seconds of training"}
    )
    seed: int = field(default=0, metadata={"help": "seed for initialisation, batches, dropout"})

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_steps", "epochs"):
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
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr must be a positive number, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise UsageError(f"--lr-decay must be in (0, 1], got {self.lr_decay}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise UsageError(f"--clip must be a positive number, got {self.clip}")
        if self.max_time is not None and not (math.isfinite(self.max_time) and self.max_time > 0):
            raise UsageError(
                f"--max-time must be a positive number of seconds, got {self.max_time}"
            )


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
    """Turn SIGINT/SIGTERM into a flag checked between optimizer steps, so a step never half-runs."""

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


class Trainer:
    """Owns the model, optimizer and RNG streams of one run, and saves them to its directory."""

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
    ) -> None:
        check_length(len(train_ids), config.batch_size, config.num_steps)
        self.model = model
        self.config = config
        self.train_ids = train_ids
        self.valid_ids = valid_ids
        self.run_dir = run_dir
        self.run_config = run_config
        self.progress = progress
        self.log = log
        self.optimizer = make_optimizer(model, config)
        self.batch_gen = torch.Generator().manual_seed(config.seed)  # offsets and window order
        self.epoch = 0
        self.step = 0
        self.best_valid = math.inf
        self.best_epoch = 0
        self.history: list[EpochResult] = []
        self.metrics_rows: list[str] = [METRICS_HEADER]
        self.train_seconds = 0.0

    def run_epoch(self, deadline: float | None, guard: SignalGuard) -> tuple[Metrics, float, int]:
        """One pass over the training text: its metrics, summed gradient norms, clipped steps."""
        cfg, model = self.config, self.model
        model.train()
        V = model.vocab_size
        state: State | None = None  # a fresh zero state at every epoch start
        total_nll, chars, norms, clipped = 0.0, 0, 0.0, 0
        batches = make_batches(
            self.train_ids, cfg.batch_size, cfg.num_steps, cfg.sampling, self.batch_gen
        )
        n_batches = batches_per_epoch(
            len(self.train_ids), cfg.batch_size, cfg.num_steps, cfg.sampling
        )
        bar = tqdm(
            batches,
            total=n_batches,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            disable=not self.progress,
            leave=False,
            unit="batch",
        )
        start = time.perf_counter()
        for X, Y in bar:  # (B, T), (B, T)
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
            if not (math.isfinite(loss.item()) and math.isfinite(norm)):
                what = "loss" if not math.isfinite(loss.item()) else "gradient norm"
                raise NumericalError(
                    f"{what} became {loss.item() if what == 'loss' else norm} at step "
                    f"{self.step + 1} (epoch {self.epoch + 1}); the last good checkpoint in "
                    f"{str(self.run_dir)!r} is intact: lower --lr or --clip"
                )
            self.optimizer.step()
            self.step += 1
            n = Y.numel()
            total_nll += loss.item() * n
            chars += n
            norms += norm
            clipped += norm > cfg.clip
            if self.progress:
                elapsed = time.perf_counter() - start
                bar.set_postfix(
                    loss=f"{loss.item():.3f}",
                    ppl=f"{math.exp(min(loss.item(), 700)):.2f}",
                    cps=f"{chars / max(elapsed, 1e-9):,.0f}",
                )
            guard.check()
            if deadline is not None and time.perf_counter() >= deadline:
                break
        bar.close()
        self.train_seconds += time.perf_counter() - start
        return metrics_from_nll(total_nll, chars), norms, clipped

    def fit(self) -> EpochResult:
        """Train to `epochs` or `max_time`, evaluating and checkpointing after each epoch."""
        cfg = self.config
        deadline = None if cfg.max_time is None else time.perf_counter() + cfg.max_time
        with SignalGuard() as guard:
            while self.epoch < cfg.epochs:
                steps_before = self.step
                t0 = time.perf_counter()
                try:
                    train_m, norms, clipped = self.run_epoch(deadline, guard)
                except StopRequested as stop:
                    self.log(f"interrupted by {stop}: finishing the last step")
                    raise
                seconds = time.perf_counter() - t0
                valid_m = evaluate(self.model, self.valid_ids)
                self.epoch += 1
                steps = self.step - steps_before
                result = EpochResult(
                    epoch=self.epoch,
                    train=train_m,
                    valid=valid_m,
                    seconds=seconds,
                    steps=steps,
                    grad_norm=norms / max(steps, 1),
                    clipped=clipped / max(steps, 1),
                )
                self.record(result)
                improved = valid_m.loss < self.best_valid
                if improved:
                    self.best_valid, self.best_epoch = valid_m.loss, self.epoch
                else:  # a plateau or overfitting: smaller steps (pytorch word_language_model)
                    for group in self.optimizer.param_groups:
                        group["lr"] *= cfg.lr_decay
                self.save(best=improved)
                self.log(
                    f"epoch {self.epoch:3d}  train ppl {train_m.ppl:7.3f}  "
                    f"valid ppl {valid_m.ppl:7.3f} ({valid_m.bpc:.3f} bits/char)  "
                    f"{train_m.chars / max(seconds, 1e-9):,.0f} chars/s"
                    + ("  *" if improved else "")
                )
                if deadline is not None and time.perf_counter() >= deadline:
                    break
        return self.history[-1]

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, best: bool) -> None:
        weights = dict(self.model.state_dict())
        optim_tensors, optim_plain = ckpt.optimizer_to_checkpoint(self.optimizer)
        last = {f"model.{k}": v for k, v in weights.items()}
        last.update(optim_tensors)
        last["rng.batches"] = self.batch_gen.get_state()
        last["rng.torch"] = torch.get_rng_state()
        trainer = {
            "epoch": self.epoch,
            "step": self.step,
            "best_valid_loss": ckpt.finite(self.best_valid),
            "best_epoch": self.best_epoch,
            "train_seconds": self.train_seconds,
            "optimizer": optim_plain,
        }
        files = {
            ckpt.LAST: ckpt.tensors_bytes(last),
            ckpt.TRAINER: ckpt.json_bytes(trainer),
        }
        if best:
            files[ckpt.WEIGHTS] = ckpt.tensors_bytes(weights)
        files[ckpt.CONFIG] = ckpt.json_bytes(self.run_config)
        ckpt.save_files(self.run_dir, files)
        csv = "\n".join(self.metrics_rows) + "\n"
        ckpt.write_atomic(self.run_dir / ckpt.METRICS, csv.encode("utf-8"))

    def record(self, r: EpochResult) -> None:
        self.history.append(r)
        self.metrics_rows.append(
            f"{r.epoch},{self.step},{r.train.loss:.6f},{r.train.ppl:.6f},"
            f"{r.train.bpc:.6f},{r.valid.loss:.6f},{r.valid.ppl:.6f},{r.valid.bpc:.6f},"
            f"{r.seconds:.3f},{r.train.chars / max(r.seconds, 1e-9):.1f},"
            f"{r.grad_norm:.6f},{r.clipped:.4f}"
        )

    def resume(self) -> None:
        """Continue from the run directory's last complete epoch."""
        last = ckpt.read_tensors(self.run_dir, ckpt.LAST)
        trainer = ckpt.read_json(self.run_dir, ckpt.TRAINER)
        weights = {k.removeprefix("model."): v for k, v in last.items() if k.startswith("model.")}
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(
            ckpt.optimizer_from_checkpoint(
                {k: v for k, v in last.items() if k.startswith("optim.")}, trainer["optimizer"]
            )
        )
        self.batch_gen.set_state(last["rng.batches"])
        torch.set_rng_state(last["rng.torch"])
        self.epoch = trainer["epoch"]
        self.step = trainer["step"]
        best = trainer["best_valid_loss"]
        self.best_valid = math.inf if best is None else best
        self.best_epoch = trainer["best_epoch"]
        self.train_seconds = trainer["train_seconds"]
        metrics = self.run_dir / ckpt.METRICS
        if metrics.exists():
            rows = metrics.read_text(encoding="utf-8").splitlines()
            self.metrics_rows = [METRICS_HEADER] + rows[1 : self.epoch + 1]
