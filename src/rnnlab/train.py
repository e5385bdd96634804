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
    """Turn SIGINT/SIGTERM into a flag checked after each optimizer step: no step half-runs."""

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
        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer steps taken
        self.current: EpochProgress | None = None  # the epoch under way, if any
        self.saved_step: int | None = None  # the step of the newest checkpoint on disk
        self.best_valid = math.inf
        self.best_epoch = 0
        self.history: list[EpochResult] = []
        self.metrics_rows: list[str] = [METRICS_HEADER]

    def run_epoch(self, deadline: float | None, guard: SignalGuard) -> EpochProgress:
        """One pass over the training text (or the rest of it, after a resume)."""
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
            value = loss.item()
            if not (math.isfinite(value) and math.isfinite(norm)):
                what, bad = ("loss", value) if not math.isfinite(value) else ("gradient norm", norm)
                kept = (
                    f"the last good checkpoint (step {self.saved_step}) in "
                    f"{str(self.run_dir)!r} is intact"
                    if self.saved_step is not None
                    else "no checkpoint had been written yet"
                )
                raise NumericalError(
                    f"{what} became {bad} at step {self.step + 1} (epoch {self.epoch + 1}) "
                    f"before the update; {kept}: lower --lr or --clip"
                )
            self.optimizer.step()
            self.step += 1
            ep.batches_done += 1
            ep.state = state
            ep.total_nll += value * Y.numel()
            ep.chars += Y.numel()
            ep.grad_norms += norm
            ep.clipped += norm > cfg.clip
            if self.progress:
                elapsed = ep.seconds + time.perf_counter() - start
                bar.set_postfix(
                    loss=f"{value:.3f}",
                    ppl=f"{math.exp(min(value, 700)):.2f}",
                    cps=f"{ep.chars / max(elapsed, 1e-9):,.0f}",
                )
            out_of_time = deadline is not None and time.perf_counter() >= deadline
            if guard.signum is not None or out_of_time:
                break
        bar.close()
        ep.seconds += time.perf_counter() - start
        return ep

    def fit(self) -> EpochResult:
        """Train to `epochs` or `max_time`, evaluating and checkpointing after each epoch.

        SIGINT/SIGTERM end the current step, save a checkpoint of the epoch in progress (resume
        continues exactly there) and raise `StopRequested`.
        """
        cfg = self.config
        deadline = None if cfg.max_time is None else time.perf_counter() + cfg.max_time
        with SignalGuard() as guard:
            while self.epoch < cfg.epochs:
                ep = self.run_epoch(deadline, guard)
                if guard.signum is not None:
                    self.save(best=False)
                    guard.check()
                self.finish_epoch(ep)
                if deadline is not None and time.perf_counter() >= deadline:
                    break
        return self.history[-1]

    def finish_epoch(self, ep: EpochProgress) -> None:
        """Evaluate on the held-out text, record the metrics, keep the best weights, save."""
        valid_m = evaluate(self.model, self.valid_ids)
        train_m = metrics_from_nll(ep.total_nll, ep.chars)
        self.epoch += 1
        self.current = None
        steps = max(ep.batches_done, 1)
        result = EpochResult(
            epoch=self.epoch,
            train=train_m,
            valid=valid_m,
            seconds=ep.seconds,
            steps=ep.batches_done,
            grad_norm=ep.grad_norms / steps,
            clipped=ep.clipped / steps,
        )
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
        """Write the run's files; `last.safetensors` + `trainer.json` allow an exact resume."""
        weights = dict(self.model.state_dict())
        optim_tensors, optim_plain = ckpt.optimizer_to_checkpoint(self.optimizer)
        last = {f"model.{k}": v for k, v in weights.items()}
        last.update(optim_tensors)
        last["rng.batches"] = self.batch_gen.get_state()
        last["rng.torch"] = torch.get_rng_state()
        in_epoch = None
        ep = self.current
        if ep is not None:
            last["epoch.gen_state"] = ep.gen_state
            if ep.state is not None:
                parts = ep.state if isinstance(ep.state, tuple) else (ep.state,)
                for i, part in enumerate(parts):
                    last[f"epoch.state.{i}"] = part
            in_epoch = {
                "batches_done": ep.batches_done,
                "total_nll": ep.total_nll,
                "chars": ep.chars,
                "grad_norms": ep.grad_norms,
                "clipped": ep.clipped,
                "seconds": ep.seconds,
            }
        trainer = {
            "epoch": self.epoch,
            "step": self.step,
            "in_epoch": in_epoch,
            "best_valid_loss": ckpt.finite(self.best_valid),
            "best_epoch": self.best_epoch,
            "optimizer": optim_plain,
            "torch_version": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        files = {ckpt.LAST: ckpt.tensors_bytes(last), ckpt.TRAINER: ckpt.json_bytes(trainer)}
        if best:
            files[ckpt.WEIGHTS] = ckpt.tensors_bytes(weights)
        files[ckpt.CONFIG] = ckpt.json_bytes(self.run_config)
        ckpt.save_files(self.run_dir, files)
        csv = "\n".join(self.metrics_rows) + "\n"
        ckpt.write_atomic(self.run_dir / ckpt.METRICS, csv.encode("utf-8"))
        self.saved_step = self.step

    def resume(self) -> None:
        """Continue from the run directory's last checkpoint, mid-epoch if it was saved there."""
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
        self.step = self.saved_step = trainer["step"]
        best = trainer["best_valid_loss"]
        self.best_valid = math.inf if best is None else best
        self.best_epoch = trainer["best_epoch"]
        if trainer.get("in_epoch"):
            parts = [last[k] for k in sorted(k for k in last if k.startswith("epoch.state."))]
            state: State | None = None
            if parts:
                state = tuple(parts) if len(parts) == 2 else parts[0]  # type: ignore[assignment]
            self.current = EpochProgress(
                gen_state=last["epoch.gen_state"], state=state, **trainer["in_epoch"]
            )
        for name, key, now in (
            ("torch", "torch_version", torch.__version__),
            ("threads", "threads", torch.get_num_threads()),
        ):
            then = trainer.get(key)
            if then is not None and then != now:
                self.log(
                    f"warning: checkpoint was written with {name} {then}, resuming with {now}: "
                    "results will not match an uninterrupted run bit for bit"
                )
        metrics = self.run_dir / ckpt.METRICS
        if metrics.exists():
            rows = metrics.read_text(encoding="utf-8").splitlines()
            self.metrics_rows = [METRICS_HEADER] + rows[1 : self.epoch + 1]
