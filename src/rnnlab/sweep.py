"""`rnnlab sweep`: train a grid of settings under one budget and measure every one the same way.

The question behind it is d2l 9.7's: how long should the BPTT window (`num_steps`) be, and does
it matter whether windows are sampled at random (zero state each minibatch) or partitioned
sequentially (state carried)? A fair answer changes one thing at a time, so every setting gets
the same model, optimizer and budget (by default the same number of training characters), and
its numbers come from the same measurements:

    held-out loss, state carried through the whole text   (`metrics.evaluate`)
    held-out loss, state reset every num_steps            (`evaluate_windows`, with the mean
                                                           loss at each position of a window)
    optimizer steps, mean gradient norm before clipping, how often clipping fired,
    final training perplexity, chars/s, peak memory of the process that trained it

Each setting trains in a fresh worker process (`multiprocessing` spawn), so its peak RSS is its
own, in its own run directory `OUT/runs/KEY/` (the usual checkpoints: an interrupted sweep
continues where it stopped when the same command is rerun). The parent only plans, waits and
writes `results.csv`; `rnnlab.report` turns the table into plots and `report.md`.

Determinism: a setting's seed is the base seed plus its seed index (never its place in the run
order), so rerunning the command reproduces every column except the `time_*` and `mem_*` ones.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import importlib
import io
import json
import math
import multiprocessing
import os
import re
import resource
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import product
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rnnlab import checkpoint as ckpt
from rnnlab.batches import SAMPLINGS, check_length
from rnnlab.corpus import BUILTINS, DataConfig
from rnnlab.errors import NumericalError, RnnlabError, UsageError
from rnnlab.metrics import Metrics, evaluate, metrics_from_nll
from rnnlab.model import CELLS, IMPLS, RNNLM, ModelConfig, count_parameters
from rnnlab.report import EXACT_COLUMNS, VARYING_COLUMNS
from rnnlab.train import StopRequested, TrainConfig, Trainer, read_step_rows

BUDGETS = ("chars", "seconds", "epochs")
DEFAULT_AMOUNTS = {"chars": 2_000_000, "seconds": 60.0, "epochs": 5}
UNBOUNDED_EPOCHS = 1_000_000  # the budget, not the epoch count, ends a chars or seconds run
CHECKPOINTS_PER_SETTING = 10  # rare checkpoints: enough to resume, cheap to write
GRADFLOW_WINDOWS = 32  # held-out windows averaged in the gradient-flow measurement
GRADFLOW_SEED = 0  # the same windows for every setting, so the curves compare the models only
EVAL_CHARS_PER_BATCH = 1 << 16  # reset evaluation: windows per forward pass x num_steps
FORMAT_VERSION = 1

# The grid's axes in the order settings are enumerated (and keys written).
AXES = ("corpus", "cell", "layers", "impl", "embed", "sampling", "num_steps", "seed_index")

# results.csv: the setting, then figures a rerun reproduces exactly, then those that vary.
SETTING_COLUMNS = ("key", *AXES, "seed", "status")
RESULT_COLUMNS = (*SETTING_COLUMNS, *EXACT_COLUMNS, *VARYING_COLUMNS)

# Files of a sweep directory (`--force` removes these and the setting run directories only).
SPEC_FILE = "sweep.json"
RESULTS_FILE = "results.csv"
POSITIONS_FILE = "positions.csv"
GRADFLOW_FILE = "gradflow.csv"
RESULT_JSON = "result.json"
LOCK_FILE = ".sweep.lock"
RUNS_DIR = "runs"

# Sweep defaults below the dataclass ones: a model small enough for a grid in minutes.
SWEEP_MODEL_DEFAULTS: dict[str, Any] = {"hidden": 128, "dropout": 0.0}
DEFAULT_GRID: dict[str, list[Any]] = {
    "corpus": ["timemachine"],
    "cell": ["gru"],
    "layers": [1],
    "impl": ["torch"],
    "embed": [-1],
    "sampling": ["random", "sequential"],
    "num_steps": [1, 4, 16, 64],
}


# -- what to run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """How much training each setting gets: characters, wall-clock seconds or epochs."""

    kind: str = "chars"
    amount: float = DEFAULT_AMOUNTS["chars"]

    def __post_init__(self) -> None:
        if self.kind not in BUDGETS:
            raise UsageError(f"unknown --budget {self.kind!r}: use one of {', '.join(BUDGETS)}")
        whole = self.kind != "seconds"
        if not (math.isfinite(self.amount) and self.amount > 0) or (
            whole and self.amount != int(self.amount)
        ):
            what = "a whole number" if whole else "a number"
            raise UsageError(
                f"--budget {self.kind} needs {what} above 0, got {self.amount:g}: "
                f"e.g. --budget {self.kind}:{DEFAULT_AMOUNTS[self.kind]:g}"
            )

    @classmethod
    def parse(cls, spec: str) -> Budget:
        """`chars`, `chars:2000000`, `chars:2M`, `seconds:90`, `epochs:10`."""
        kind, _, amount = spec.partition(":")
        kind = kind.strip()
        if kind not in BUDGETS:
            raise UsageError(
                f"unknown --budget {kind!r}: use chars, seconds or epochs, optionally with an "
                "amount, e.g. chars:2M, seconds:60, epochs:5"
            )
        if not amount.strip():
            return cls(kind, DEFAULT_AMOUNTS[kind])
        text = amount.strip()
        scale = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}.get(text[-1], 1.0)
        try:
            value = float(text[:-1] if scale != 1.0 else text) * scale
        except ValueError:
            raise UsageError(
                f"--budget {spec!r}: {text!r} is not a number (e.g. --budget {kind}:"
                f"{DEFAULT_AMOUNTS[kind]:g})"
            ) from None
        return cls(kind, value)

    def describe(self) -> str:
        if self.kind == "chars":
            return f"{int(self.amount):,} training characters per setting"
        if self.kind == "seconds":
            return f"{self.amount:g} s of wall-clock training per setting"
        return f"{int(self.amount)} epochs (passes over the training text) per setting"


@dataclass(frozen=True)
class Setting:
    """One point of the grid."""

    corpus: str
    cell: str
    layers: int
    impl: str
    embed: int
    sampling: str
    num_steps: int
    seed_index: int

    def axes(self) -> dict[str, Any]:
        return {a: getattr(self, a) for a in AXES}


@dataclass
class Grid:
    """The axes of a sweep; an axis with one value is simply fixed."""

    corpus: list[str] = field(default_factory=lambda: list(DEFAULT_GRID["corpus"]))
    cell: list[str] = field(default_factory=lambda: list(DEFAULT_GRID["cell"]))
    layers: list[int] = field(default_factory=lambda: list(DEFAULT_GRID["layers"]))
    impl: list[str] = field(default_factory=lambda: list(DEFAULT_GRID["impl"]))
    embed: list[int] = field(default_factory=lambda: list(DEFAULT_GRID["embed"]))
    sampling: list[str] = field(default_factory=lambda: list(DEFAULT_GRID["sampling"]))
    num_steps: list[int] = field(default_factory=lambda: list(DEFAULT_GRID["num_steps"]))
    seeds: int = 1

    def __post_init__(self) -> None:
        checks: list[tuple[str, str, tuple[Any, ...] | None]] = [
            ("corpus", "--corpus", None),
            ("cell", "--cells", CELLS),
            ("layers", "--layers", None),
            ("impl", "--impls", IMPLS),
            ("embed", "--embeds", None),
            ("sampling", "--sampling", SAMPLINGS),
            ("num_steps", "--num-steps", None),
        ]
        for name, flag, choices in checks:
            values = getattr(self, name)
            if not values:
                raise UsageError(f"{flag} needs at least one value")
            if len(set(values)) != len(values):
                raise UsageError(f"{flag} lists a value twice: {values}")
            for v in values:
                if choices is not None and v not in choices:
                    raise UsageError(f"{flag}: unknown value {v!r}: use {', '.join(choices)}")
        for name, flag, low in (("num_steps", "--num-steps", 1), ("layers", "--layers", 1)):
            bad = [v for v in getattr(self, name) if v < low]
            if bad:
                raise UsageError(f"{flag} values must be at least {low}, got {bad[0]}")
        bad = [v for v in self.embed if v < -1]
        if bad:
            raise UsageError(f"--embeds values are -1 (auto), 0 (one-hot) or a size, got {bad[0]}")
        if self.seeds < 1:
            raise UsageError(f"--seeds must be at least 1, got {self.seeds}")

    def axis_values(self, axis: str) -> list[Any]:
        return list(range(self.seeds)) if axis == "seed_index" else list(getattr(self, axis))

    def settings(self) -> list[Setting]:
        """Every combination, in a fixed order: by corpus, cell, ... num_steps, then seed."""
        return [Setting(*combo) for combo in product(*(self.axis_values(a) for a in AXES))]

    def varying(self) -> list[str]:
        """The axes with more than one value (the seed index included)."""
        return [a for a in AXES if len(self.axis_values(a)) > 1]

    def corpus_labels(self) -> dict[str, str]:
        """A short file-name-safe label per corpus (a file's stem; `memory:8` -> memory8)."""
        labels: dict[str, str] = {}
        for c in self.corpus:
            base = c if c in BUILTINS or not Path(c).suffix else Path(c).stem
            label = re.sub(r"[^A-Za-z0-9_]+", "", base.replace("/", "_")) or "corpus"
            while label in labels.values():
                label += "_"
            labels[c] = label
        return labels

    def key(self, s: Setting) -> str:
        """The setting's run directory name; it names every axis so keys never collide."""
        embed = "auto" if s.embed == -1 else "onehot" if s.embed == 0 else f"e{s.embed}"
        return (
            f"{self.corpus_labels()[s.corpus]}-{s.cell}-L{s.layers}-{s.impl}-{embed}-"
            f"{s.sampling}-T{s.num_steps}-s{s.seed_index}"
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Fields the grid or the budget sets per setting; the base configs keep everything else.
GRID_FIELDS = {
    "data": ("corpus",),
    "model": ("cell", "layers", "impl", "embed"),
    "train": ("num_steps", "sampling", "epochs", "max_time", "max_steps", "save_every", "keep"),
}


@dataclass
class SweepSpec:
    """Everything that decides a sweep's numbers; a rerun must match it to continue a sweep."""

    grid: Grid
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    budget: Budget
    threads: int  # torch threads of each setting (resolved, never 0)
    preset: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON; grid-set fields are left out of the base configs (they vary)."""

        def base(part: str, cfg: Any) -> dict[str, Any]:
            d = dataclasses.asdict(cfg)
            return {k: v for k, v in d.items() if k not in GRID_FIELDS[part]}

        return {
            "format": FORMAT_VERSION,
            "grid": self.grid.to_json(),
            "data": base("data", self.data),
            "model": base("model", self.model),
            "train": base("train", self.train),
            "budget": dataclasses.asdict(self.budget),
            "threads": self.threads,
            "preset": self.preset,
        }

    def chars_per_setting(self) -> dict[int, int]:
        """Training characters per num_steps under a chars budget: equal whenever possible.

        A setting trains on whole (B, T) minibatches, so the budget is rounded to a multiple of
        B x lcm(num_steps) when that moves it by under 1%; then every setting trains on exactly
        the same characters. Otherwise each setting rounds up to whole minibatches on its own.
        """
        B, amount = self.train.batch_size, int(self.budget.amount)
        unit = B * math.lcm(*self.grid.num_steps)
        if unit * 100 <= amount:
            chars = max(unit, round(amount / unit) * unit)
            return {T: chars for T in self.grid.num_steps}
        return {T: math.ceil(amount / (B * T)) * B * T for T in self.grid.num_steps}

    def configs(self, s: Setting) -> tuple[DataConfig, ModelConfig, TrainConfig]:
        """The three configs one setting trains with."""
        data = dataclasses.replace(self.data, corpus=s.corpus)
        model = dataclasses.replace(
            self.model, cell=s.cell, layers=s.layers, impl=s.impl, embed=s.embed
        )
        kw: dict[str, Any] = {
            "num_steps": s.num_steps,
            "sampling": s.sampling,
            "seed": self.train.seed + s.seed_index,
            "keep": 1,
            "max_time": None,
            "max_steps": None,
            "save_every": 0,
            "epochs": UNBOUNDED_EPOCHS,
        }
        if self.budget.kind == "chars":
            steps = self.chars_per_setting()[s.num_steps] // (self.train.batch_size * s.num_steps)
            kw.update(max_steps=steps, save_every=math.ceil(steps / CHECKPOINTS_PER_SETTING))
        elif self.budget.kind == "seconds":
            kw.update(max_time=float(self.budget.amount))
        else:
            kw.update(epochs=int(self.budget.amount))
        return data, model, dataclasses.replace(self.train, **kw)

    def gradflow_steps(self) -> int | None:
        """The window at which gradient flow is measured: the longest (needs at least 2)."""
        longest = max(self.grid.num_steps)
        return longest if longest >= 2 else None


def base_configs(
    preset: Any, overrides: dict[str, dict[str, Any]]
) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    """Dataclass defaults < sweep defaults < the preset's values < flags given explicitly."""
    layers: dict[str, dict[str, Any]] = {
        "data": {},
        "model": dict(SWEEP_MODEL_DEFAULTS),
        "train": {},
    }
    for part in layers:
        if preset is not None:
            layers[part].update(getattr(preset, part))
        layers[part].update(overrides.get(part, {}))
    return (
        DataConfig(**layers["data"]),
        ModelConfig(**layers["model"]),
        TrainConfig(**layers["train"]),
    )


def grid_from_preset(preset: Any, given: dict[str, list[Any]], seeds: int) -> Grid:
    """The grid: axes given on the command line, else the preset's single value, else defaults."""
    from_preset = {
        "corpus": preset.data.get("corpus") if preset else None,
        "cell": preset.model.get("cell") if preset else None,
        "layers": preset.model.get("layers") if preset else None,
        "impl": preset.model.get("impl") if preset else None,
        "embed": preset.model.get("embed") if preset else None,
        "sampling": preset.train.get("sampling") if preset else None,
        "num_steps": preset.train.get("num_steps") if preset else None,
    }
    axes: dict[str, list[Any]] = {}
    for axis, default in DEFAULT_GRID.items():
        if axis in given:
            axes[axis] = given[axis]
        elif from_preset[axis] is not None:
            axes[axis] = [from_preset[axis]]
        else:
            axes[axis] = list(default)
    return Grid(**axes, seeds=seeds)


# -- measuring one setting ------------------------------------------------------------------------


@torch.no_grad()
def evaluate_windows(
    model: RNNLM, ids: torch.Tensor, num_steps: int
) -> tuple[Metrics, torch.Tensor]:
    """Score every character of `ids` after the first with the state reset every `num_steps`.

    This is what a model trained with random sampling meets at every window start: prediction p
    sees only the characters since the last multiple of num_steps, from a zero state. The text
    is cut into consecutive windows scored in parallel; a shorter last window scores the rest, so
    exactly the characters `metrics.evaluate` scores are scored here too.

    Returns the metrics and the mean loss (nats) at each position of a window, (T,): entry 0 is
    the prediction made after the first input, from a zero state.

    Shapes:
        ids: (N,) compact integer ids of one text.
    """
    if len(ids) < 2:
        raise ValueError("need at least two characters to score one prediction")
    T = num_steps
    n = len(ids) - 1  # predictions
    full = n // T  # complete windows
    sums = torch.zeros(T, dtype=torch.float64)
    counts = torch.zeros(T, dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        X_all, Y_all = ids[:n].long(), ids[1 : n + 1].long()
        Xw = X_all[: full * T].view(full, T)  # (W, T) one row a window
        Yw = Y_all[: full * T].view(full, T)  # (W, T)
        rows = max(1, EVAL_CHARS_PER_BATCH // T)
        for i in range(0, full, rows):
            X, Y = Xw[i : i + rows], Yw[i : i + rows]  # (R, T)
            sums += window_nll(model, X, Y).sum(0)
        counts += full
        tail = n - full * T
        if tail:
            X, Y = X_all[full * T :][None], Y_all[full * T :][None]  # (1, tail)
            sums[:tail] += window_nll(model, X, Y)[0]
            counts[:tail] += 1
    finally:
        model.train(was_training)
    metrics = metrics_from_nll(float(sums.sum()), n)
    return metrics, sums / counts  # positions no window reaches (a text shorter than T): nan


def window_nll(model: RNNLM, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Per-character NLL (float64) of windows each started from a zero state: (R, t) -> (R, t)."""
    logits, _ = model(X, model.begin_state(X.shape[0]))  # (R, t, V)
    nll = F.cross_entropy(logits.flatten(0, 1), Y.flatten(), reduction="none")  # (R*t,)
    return nll.view(X.shape).double()


def gradflow_windows(
    ids: torch.Tensor, num_steps: int, count: int = GRADFLOW_WINDOWS
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The same `count` held-out windows for every setting (fixed seed); None if text too short."""
    if len(ids) < num_steps + 2:
        return None
    gen = torch.Generator().manual_seed(GRADFLOW_SEED)
    starts = torch.randint(len(ids) - num_steps - 1, (count,), generator=gen)
    idx = starts[:, None] + torch.arange(num_steps)  # (B, T)
    return ids[idx].long(), ids[idx + 1].long()


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB.

    Linux's VmHWM belongs to this process image alone; ru_maxrss (the fallback: KiB on Linux,
    bytes on macOS) would also count the parent's pages from before the worker's exec.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


@dataclass
class Job:
    """What a worker needs to train and measure one setting."""

    spec: SweepSpec
    setting: Setting
    key: str
    run_dir: Path
    isolated: bool  # in a fresh process of its own: its peak RSS is the setting's


def training_done(trainer: Trainer, cfg: TrainConfig) -> bool:
    """Whether a resumed run already spent its budget (steps or epochs)."""
    if cfg.max_steps is not None:
        return trainer.step >= cfg.max_steps
    return trainer.epoch >= cfg.epochs


def run_setting(job: Job, stop: Callable[[], int | None] = lambda: None) -> dict[str, Any]:
    """Train one setting (continuing its checkpoint if it has one), measure it, save result.json.

    `stop` is polled before training starts (a signal that came while setting up); a signal
    during training makes `Trainer.fit` save a checkpoint and raise `StopRequested`.
    """
    from rnnlab.gradflow import hidden_grad_norms
    from rnnlab.runs import claim_run_dir, new_trainer, prepare_data

    started = time.perf_counter()
    spec, s = job.spec, job.setting
    data_cfg, model_cfg, train_cfg = spec.configs(s)
    data = prepare_data(data_cfg)
    run_dir = job.run_dir
    # A seconds budget restarts an unfinished setting: its clock cannot be resumed fairly.
    resume = spec.budget.kind != "seconds" and bool(ckpt.list_checkpoints(run_dir))
    if not resume:
        claim_run_dir(run_dir, force=True, resume=False)
    warnings: list[str] = []
    # The initial weights come from the seed index, not the run order (new_trainer seeds).
    trainer = new_trainer(
        data, data_cfg, model_cfg, train_cfg, run_dir, progress=False, log=lambda line: None,
        warn=warnings.append,
    )  # fmt: skip
    model = trainer.model
    if resume:
        trainer.resume()
    signum = stop()
    if signum is not None:
        raise StopRequested(signum)
    status = "ok"
    try:
        if not training_done(trainer, train_cfg):
            trainer.fit()
    except NumericalError as e:  # recorded, not fatal: a diverging setting is a result too
        status = "diverged"
        warnings.append(str(e))

    B, T = train_cfg.batch_size, train_cfg.num_steps
    row: dict[str, Any] = {
        "key": job.key,
        **s.axes(),
        "seed": train_cfg.seed,
        "status": status,
        "params": count_parameters(model),
        "vocab_size": len(data.vocab),
        "threads": torch.get_num_threads(),
        "chars_trained": trainer.step * B * T,  # every minibatch is a full B x T
        "steps": trainer.step,
        "epochs": trainer.step * B * T / len(data.train_ids),
        "heldout_chars": len(data.valid_ids) - 1,
    }
    positions: list[float] | None = None
    gradflow: list[float] | None = None
    nan = float("nan")
    if status == "ok":
        carried = evaluate(model, data.valid_ids)
        reset, per_position = evaluate_windows(model, data.valid_ids, T)
        positions = per_position.tolist()
        windows = gradflow_windows(data.valid_ids, T) if T == spec.gradflow_steps() else None
        if windows is not None:
            gradflow = hidden_grad_norms(model, *windows).tolist()
    else:
        carried = reset = Metrics(nan, nan, nan, 0)
    for name, m in (("carried", carried), ("reset", reset)):
        row.update(
            {
                f"heldout_{name}_loss": m.loss,
                f"heldout_{name}_ppl": m.ppl,
                f"heldout_{name}_bpc": m.bpc,
            }
        )
    row.update(step_figures(run_dir, trainer, train_cfg, len(data.train_ids)))
    train_s = training_seconds(run_dir, trainer)
    row.update(
        {
            "time_train_s": train_s,
            "time_chars_per_s": row["chars_trained"] / train_s if train_s > 0 else nan,
            "time_setting_s": time.perf_counter() - started,
            "mem_peak_rss_mib": peak_rss_mib() if job.isolated else nan,
        }
    )
    result = {"row": row, "positions": positions, "gradflow": gradflow, "warnings": warnings}
    ckpt.write_atomic(run_dir / RESULT_JSON, json.dumps(result).encode("utf-8"))
    return result


def step_figures(
    run_dir: Path, trainer: Trainer, cfg: TrainConfig, train_len: int
) -> dict[str, float]:
    """Gradient and training-loss figures from steps.csv, the one record that survives resumes.

    The mean over steps equals the per-epoch means weighted by each epoch's steps. The final
    training loss is the mean over the last epoch's worth of steps (what d2l prints per epoch);
    every step scores B x T characters, so a plain mean of step losses is the per-char NLL.
    """
    rows = read_step_rows(run_dir / ckpt.STEPS, trainer.step)
    losses = [float(r.split(",")[2]) for r in rows]
    norms = [float(r.split(",")[3]) for r in rows]
    if not rows:
        nan = float("nan")
        return {
            "train_final_loss": nan,
            "train_final_ppl": nan,
            "grad_norm": nan,
            "clip_fraction": nan,
        }
    per_epoch = max(1, (train_len - 1) // (cfg.batch_size * cfg.num_steps))
    last = losses[-per_epoch:]
    final = metrics_from_nll(sum(last), len(last))
    return {
        "train_final_loss": final.loss,
        "train_final_ppl": final.ppl,
        "grad_norm": sum(norms) / len(norms),
        "clip_fraction": sum(n > cfg.clip for n in norms) / len(norms),
    }


def training_seconds(run_dir: Path, trainer: Trainer) -> float:
    """Seconds spent in optimizer steps (evaluation and checkpoints excluded), across resumes."""
    total = 0.0
    path = run_dir / ckpt.METRICS
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines()[1 : trainer.epoch + 1]:
            total += float(line.split(",")[8])  # the `seconds` column of finished epochs
    if trainer.current is not None:
        total += trainer.current.seconds  # the epoch in progress when the budget ran out
    return total


# -- worker processes -----------------------------------------------------------------------------


class _Flag:
    """SIGINT/SIGTERM set a flag in a worker outside training (`Trainer.fit` has its own)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent dies: a killed sweep leaves no orphans training."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: orphans finish their setting and exit
        pass


def worker_main(job: Job, threads: int, conn: Any) -> None:
    """Entry point of a spawned worker: one setting, then exit (0, 128+signal, or the error's).

    Sends ("error", exit code, message) through `conn` for a user-facing error.
    """
    flag = _Flag()
    _die_with_parent()
    torch.set_num_threads(threads)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    with open(job.run_dir / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # wait for an orphan of a killed sweep to save and go
        try:
            run_setting(job, stop=lambda: flag.signum)
        except StopRequested as e:
            sys.exit(e.exit_code)
        except RnnlabError as e:
            conn.send(("error", e.exit_code, str(e)))
            sys.exit(e.exit_code)
    sys.exit(0)  # result.json is written: a signal after that loses nothing


# -- the sweep directory --------------------------------------------------------------------------


def spec_differences(old: Any, new: Any, path: str = "") -> list[str]:
    """`a.b: old -> new` for every leaf that differs between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += spec_differences(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if old == new else [f"{path}: {json.dumps(old)} -> {json.dumps(new)}"]


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold OUT/.sweep.lock: two sweeps writing one directory would corrupt each other."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file: give a directory")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"another rnnlab sweep is running in {str(out)!r}: wait for it or choose another "
                "--out"
            ) from None
        yield


def read_state(out: Path) -> dict[str, Any] | None:
    path = out / SPEC_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        state["spec"], state["finished"]  # noqa: B018  (both must be there)
    except (ValueError, KeyError, TypeError):
        raise UsageError(
            f"{str(path)!r} is damaged: pass --force to start the sweep in {str(out)!r} over"
        ) from None
    return state


def clear_sweep(out: Path) -> None:
    """Remove what a sweep wrote (files and setting run directories), nothing else."""
    from rnnlab import report

    for name in (SPEC_FILE, RESULTS_FILE, POSITIONS_FILE, GRADFLOW_FILE, *report.OUTPUT_FILES):
        (out / name).unlink(missing_ok=True)
    runs = out / RUNS_DIR
    if runs.is_dir():
        for d in runs.iterdir():
            if d.is_dir() and any((d / n).exists() for n in (RESULT_JSON, ckpt.CONFIG, LOCK_FILE)):
                shutil.rmtree(d)
        if not any(runs.iterdir()):
            runs.rmdir()


def claim_sweep_dir(out: Path, spec_json: dict[str, Any], force: bool) -> bool:
    """Decide what to do with OUT; returns True when a sweep there is being continued.

    New or empty: start. Same spec, unfinished: continue. Same spec, finished, or another
    spec: refuse unless --force, which starts over. A non-empty directory holding no sweep is
    refused unless --force (which adds the sweep's files beside what is there).
    """
    state = read_state(out) if not force else None
    if force:
        clear_sweep(out)
        return False
    if state is None:
        others = [p for p in out.iterdir() if p.name != LOCK_FILE] if out.is_dir() else []
        if others:
            raise UsageError(
                f"--out {str(out)!r} is not empty and holds no sweep: choose another --out, or "
                "pass --force to write the sweep there anyway"
            )
        return False
    diffs = spec_differences(state["spec"], spec_json)
    if diffs:
        shown = "; ".join(diffs[:3]) + (f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else "")
        raise UsageError(
            f"{str(out)!r} holds a sweep with another configuration ({shown}): rerun its own "
            "command to continue it, choose another --out, or pass --force to start over"
        )
    if state["finished"]:
        raise UsageError(
            f"{str(out)!r} holds a finished sweep: pass --force to run it again, --report-only to "
            "rewrite its report, or choose another --out"
        )
    return True


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULT_JSON
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None  # a damaged result is measured again


def write_tables(out: Path, results: list[dict[str, Any]]) -> None:
    """results.csv, positions.csv, gradflow.csv from the finished settings, in grid order."""
    ckpt.write_atomic(out / RESULTS_FILE, csv_bytes(RESULT_COLUMNS, [r["row"] for r in results]))
    positions = [
        {"key": r["row"]["key"], "position": i + 1, "loss": loss}
        for r in results
        for i, loss in enumerate(r["positions"] or [])
    ]
    ckpt.write_atomic(out / POSITIONS_FILE, csv_bytes(("key", "position", "loss"), positions))
    flows = [
        {"key": r["row"]["key"], "k": k + 1, "norm": norm}
        for r in results
        for k, norm in enumerate(r["gradflow"] or [])
    ]
    ckpt.write_atomic(out / GRADFLOW_FILE, csv_bytes(("key", "k", "norm"), flows))


def csv_bytes(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> bytes:
    """Floats written with repr, so a rerun's numbers compare exactly."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([repr(v) if isinstance(v, float) else v for v in (row[c] for c in columns)])
    return buf.getvalue().encode("utf-8")


def read_results(path: Path) -> list[dict[str, Any]]:
    """results.csv back as typed rows (ints, floats, strings)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _typed(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _typed(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


# -- running the grid -----------------------------------------------------------------------------


def estimated_cost(spec: SweepSpec, s: Setting, train_chars: int) -> float:
    """Relative time a setting will take, for the progress bar's estimate of time left.

    A step costs a fixed overhead (Python, kernel launches; measured ~120 characters' worth for
    a GRU 128 on CPU) plus time proportional to its B x T characters.
    """
    if spec.budget.kind == "seconds":
        return 1.0
    B, T = spec.train.batch_size, s.num_steps
    chars = (
        spec.chars_per_setting()[T]
        if spec.budget.kind == "chars"
        else spec.budget.amount * train_chars
    )
    return chars / (B * T) * (B * T + 120)


@dataclass
class SweepOutcome:
    exit_code: int  # 0 done, 128+signal interrupted
    results: list[dict[str, Any]]
    total: int


class Runner:
    """Runs the settings not yet finished, `jobs` at a time, writing the tables after each."""

    def __init__(
        self,
        spec: SweepSpec,
        out: Path,
        jobs: int = 1,
        isolate: bool = True,
        progress: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        self.spec, self.out, self.jobs, self.isolate = spec, out, jobs, isolate
        self.progress, self.log = progress, log
        self.settings = spec.grid.settings()
        self.keys = [spec.grid.key(s) for s in self.settings]
        self.done: dict[str, dict[str, Any]] = {}

    def run_dir(self, key: str) -> Path:
        return self.out / RUNS_DIR / key

    def results(self) -> list[dict[str, Any]]:
        return [self.done[k] for k in self.keys if k in self.done]

    def run(self, train_chars: dict[str, int]) -> SweepOutcome:
        from tqdm import tqdm

        from rnnlab.train import SignalGuard

        for key in self.keys:  # finished settings are read back, never rerun
            r = read_result(self.run_dir(key))
            if r is not None:
                self.done[key] = r
        cost = {
            k: estimated_cost(self.spec, s, train_chars[s.corpus])
            for k, s in zip(self.keys, self.settings, strict=True)
        }
        todo = [(k, s) for k, s in zip(self.keys, self.settings, strict=True) if k not in self.done]
        if self.done:
            self.log(f"continuing: {len(self.done)} of {len(self.keys)} settings already done")
        bar = tqdm(
            total=sum(cost.values()),
            initial=sum(cost[k] for k in self.done),
            disable=not self.progress,
            bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
            desc=f"sweep {len(self.done)}/{len(self.keys)}",
        )
        guard = SignalGuard()
        with guard:
            try:
                if self.isolate:
                    self._run_isolated(todo, guard, bar, cost)
                else:
                    self._run_here(todo, guard, bar, cost)
            finally:
                bar.close()
                write_tables(self.out, self.results())
        code = 0 if guard.signum is None else 128 + guard.signum
        return SweepOutcome(code, self.results(), len(self.keys))

    def _finished(self, key: str, result: dict[str, Any], bar: Any, cost: float) -> None:
        self.done[key] = result
        write_tables(self.out, self.results())
        bar.set_description_str(f"sweep {len(self.done)}/{len(self.keys)}", refresh=False)
        bar.update(cost)
        row = result["row"]
        msg = (
            f"[{len(self.done)}/{len(self.keys)}] {key}: held-out ppl "
            f"{row['heldout_carried_ppl']:.3f} carried, {row['heldout_reset_ppl']:.3f} reset; "
            f"{row['steps']:,} steps, {row['time_setting_s']:.0f} s"
        )
        if row["status"] != "ok":
            msg = f"[{len(self.done)}/{len(self.keys)}] {key}: {row['status']}"
        write = bar.write if self.progress else self.log
        write(msg)
        for w in result["warnings"]:
            write(f"  {key}: {w}")

    def _job(self, key: str, s: Setting) -> Job:
        return Job(self.spec, s, key, self.run_dir(key), self.isolate)

    def _run_here(self, todo: list[tuple[str, Setting]], guard: Any, bar: Any, cost: dict) -> None:
        """In this process (`--in-process`): no start-up cost, but no per-setting peak memory."""
        for key, s in todo:
            if guard.signum is not None:
                return
            try:
                result = run_setting(self._job(key, s), stop=lambda: guard.signum)
            except StopRequested as e:
                guard.signum = guard.signum or e.exit_code - 128
                return
            self._finished(key, result, bar, cost[key])

    def _run_isolated(
        self, todo: list[tuple[str, Setting]], guard: Any, bar: Any, cost: dict
    ) -> None:
        """A fresh spawned process per setting, up to `jobs` at once."""
        ctx = multiprocessing.get_context("spawn")
        pending = list(todo)
        running: dict[Any, tuple[str, Any, Any]] = {}  # sentinel -> (key, process, pipe)
        forwarded = False
        error: tuple[str, int, str] | None = None
        while pending or running:
            while pending and len(running) < self.jobs and guard.signum is None and not error:
                key, s = pending.pop(0)
                receive, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(
                    target=worker_main,
                    args=(self._job(key, s), self.spec.threads, send),
                    name=f"rnnlab-sweep-{key}",
                )
                proc.start()
                send.close()
                running[proc.sentinel] = (key, proc, receive)
            if not running:
                break
            # A signal (Ctrl-C reached the workers too; kill -TERM did not) or another setting's
            # failure: the running workers save a checkpoint and stop, to continue on a rerun.
            stop = guard.signum or (signal.SIGTERM if error else None)
            if stop is not None and not forwarded:
                for _, proc, _ in running.values():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, stop)
                forwarded = True
            for sentinel in wait(list(running), timeout=0.5):
                key, proc, receive = running.pop(sentinel)
                proc.join()
                message = _receive(receive)
                result = read_result(self.run_dir(key))  # written last, atomically
                if result is not None:
                    self._finished(key, result, bar, cost[key])
                elif message is not None and error is None:
                    error = (key, message[1], message[2])
                elif guard.signum is None and error is None:
                    error = (key, 1, f"worker exited with code {proc.exitcode}; see above")
        if error is not None and guard.signum is None:
            key, code, message = error
            raise SettingFailed(key, code, message)


def _receive(conn: Any) -> Any:
    """The worker's error message, if it sent one (a closed pipe reads as end of file)."""
    try:
        return conn.recv() if conn.poll() else None
    except EOFError:
        return None
    finally:
        conn.close()


class SettingFailed(RnnlabError):
    """A setting's worker failed: the sweep stops with that setting's exit code."""

    def __init__(self, key: str, code: int, message: str) -> None:
        super().__init__(f"setting {key} failed: {message}")
        self.exit_code = code


def resolve_threads(threads: int, jobs: int) -> int:
    """Torch threads per setting: as asked, else one per worker when several run at once."""
    if threads:
        return threads
    return 1 if jobs > 1 else torch.get_num_threads()


def memory_floors(corpora: list[str], num_steps: list[int]) -> dict[str, dict[str, Any]]:
    """Theoretical loss floors of `memory` corpora, if rnnlab.synthetic is installed."""
    floors: dict[str, dict[str, Any]] = {}
    for c in corpora:
        if not c.startswith("memory"):
            continue
        try:  # another module's: absent from older installations
            synthetic = importlib.import_module("rnnlab.synthetic")
        except ImportError:
            return floors
        task = synthetic.MemoryTask.parse(c)
        floors[c] = {
            "floor": float(task.floor()),
            "no_memory": float(task.no_memory()),
            "window": {str(T): float(task.window_floor(T)) for T in num_steps},
        }
    return floors


def data_summary(spec: SweepSpec) -> dict[str, dict[str, int]]:
    """Prepare each corpus once in the parent: bad input fails before any training starts."""
    from rnnlab.runs import prepare_data

    B = spec.train.batch_size
    info: dict[str, dict[str, int]] = {}
    for c in spec.grid.corpus:
        data = prepare_data(dataclasses.replace(spec.data, corpus=c))
        what = f"training text of {c}"
        for T in spec.grid.num_steps:
            check_length(len(data.train_ids), B, T, what)
        if len(data.valid_ids) < 2:
            raise UsageError(f"held-out text of {c} is too short: raise --valid-fraction")
        info[c] = {
            "vocab_size": len(data.vocab),
            "train_chars": len(data.train_ids),
            "heldout_chars": len(data.valid_ids),
        }
    return info


def sweep(
    spec: SweepSpec,
    out: Path,
    command: str,
    force: bool = False,
    jobs: int = 1,
    isolate: bool = True,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> int:
    """Run (or continue) the sweep in `out`, then write the report; returns the exit code."""
    from rnnlab import report

    report.pyplot()  # matplotlib missing: say so before training, not after
    spec_json = spec.to_json()
    with locked(out):
        continuing = claim_sweep_dir(out, spec_json, force)
        info = data_summary(spec)
        state = {"spec": spec_json, "command": command, "data": info, "finished": False}
        if not continuing:
            ckpt.write_atomic(out / SPEC_FILE, ckpt.json_bytes(state))
        settings = spec.grid.settings()
        log(
            f"sweep of {len(settings)} settings ({describe_grid(spec.grid)}), "
            f"{spec.budget.describe()}, torch threads per setting: {spec.threads} -> {out}"
        )
        runner = Runner(spec, out, jobs, isolate, progress, log)
        outcome = runner.run({c: v["train_chars"] for c, v in info.items()})
        if outcome.exit_code:
            log(
                f"stopped by {signal.Signals(outcome.exit_code - 128).name}: "
                f"{len(outcome.results)} of {outcome.total} settings done and saved in "
                f"{out / RESULTS_FILE}; rerun the same command to continue"
            )
            return outcome.exit_code
        write_report(out, state, command)
        state["finished"] = True
        ckpt.write_atomic(out / SPEC_FILE, ckpt.json_bytes(state))
        log(f"done: {out / RESULTS_FILE}, {out / report.REPORT_FILE}")
    return 0


def write_report(out: Path, state: dict[str, Any], command: str) -> Path:
    """Plots and report.md from the tables in `out` (all settings must be finished)."""
    from rnnlab import report

    spec = state["spec"]
    grid = spec["grid"]
    return report.write_report(
        out,
        report.SweepData(
            spec=spec,
            command=command,
            data=state["data"],
            rows=read_results(out / RESULTS_FILE),
            positions=read_results(out / POSITIONS_FILE),
            gradflow=read_results(out / GRADFLOW_FILE),
            floors=memory_floors(grid["corpus"], grid["num_steps"]),
        ),
    )


def rewrite_report(out: Path, command: str) -> Path:
    """`--report-only`: the plots and report.md again from a finished sweep's tables."""
    state = read_state(out)
    if state is None or not (out / RESULTS_FILE).exists():
        raise UsageError(f"{str(out)!r} holds no sweep: run one there first")
    if not state["finished"]:
        raise UsageError(
            f"the sweep in {str(out)!r} is not finished: rerun its command to continue it"
        )
    return write_report(out, state, state.get("command") or command)


def describe_grid(grid: Grid) -> str:
    parts = [f"{a} {', '.join(map(str, grid.axis_values(a)))}" for a in AXES if a != "seed_index"]
    return "; ".join(parts) + f"; {grid.seeds} seed{'' if grid.seeds == 1 else 's'}"
