"""What a sweep runs: the grid of settings, the budget, and the configs each setting trains with.

The question behind a sweep is d2l 9.7's: how long should the BPTT window (`num_steps`) be, and
does it matter whether windows are sampled at random (zero state each minibatch) or partitioned
sequentially (state carried)? A fair answer changes one thing at a time, so every setting gets
the same model, optimizer and budget (by default the same number of training characters).

Determinism: a setting's seed is the base seed plus its seed index (never its place in the run
order), so rerunning the command reproduces every column except the `time_*` and `mem_*` ones.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from rnnlab.batches import SAMPLINGS
from rnnlab.corpus import BUILTINS, DataConfig
from rnnlab.errors import UsageError
from rnnlab.model import CELLS, IMPLS, ModelConfig
from rnnlab.training import TrainConfig

BUDGETS = ("chars", "seconds", "epochs")
DEFAULT_AMOUNTS = {"chars": 2_000_000, "seconds": 60.0, "epochs": 5}
UNBOUNDED_EPOCHS = 1_000_000  # the budget, not the epoch count, ends a chars or seconds run
CHECKPOINTS_PER_SETTING = 10  # rare checkpoints: enough to resume, cheap to write
FORMAT_VERSION = 1

# The grid's axes in the order settings are enumerated (and keys written).
AXES = ("corpus", "cell", "layers", "impl", "embed", "sampling", "num_steps", "seed_index")

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


def describe_grid(grid: Grid) -> str:
    """One line naming every axis's values and the seed count."""
    parts = [f"{a} {', '.join(map(str, grid.axis_values(a)))}" for a in AXES if a != "seed_index"]
    return "; ".join(parts) + f"; {grid.seeds} seed{'' if grid.seeds == 1 else 's'}"
