"""`rnnlab sweep`: flags into a `SweepSpec`, then `rnnlab.experiments.runner.sweep`, nothing more.

`rnnlab.cli` hooks this in with `add_parsers(sub, common)` (or `add_parser(sub)`) and dispatches
the `sweep` command to `run` (`COMMANDS`).

Grid axes take comma-separated lists; the other model, training and data flags are generated
from the config dataclasses (minus the fields an axis or the budget sets) and override, in
order, the dataclass defaults, the sweep's small-model defaults and a `--preset`.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Any

from rnnlab.cli.flags import add_config_args, flag
from rnnlab.corpus import DataConfig
from rnnlab.devices import DEVICE_HELP, resolve_device
from rnnlab.errors import UsageError
from rnnlab.experiments.runner import resolve_threads, rewrite_report, sweep
from rnnlab.experiments.spec import (
    DEFAULT_AMOUNTS,
    DEFAULT_GRID,
    GRID_FIELDS,
    SWEEP_MODEL_DEFAULTS,
    Budget,
    SweepSpec,
    base_configs,
    grid_from_preset,
)
from rnnlab.model import ModelConfig
from rnnlab.presets import get_preset
from rnnlab.training import TrainConfig

# Base-config flags a sweep takes: every field that neither an axis nor the budget sets.
# (`bidirectional` is left out: a bidirectional language model's numbers are meaningless.)
DATA_FLAGS = tuple(f.name for f in dataclasses.fields(DataConfig) if f.name != "corpus")
MODEL_FLAGS = tuple(
    f.name
    for f in dataclasses.fields(ModelConfig)
    if f.name not in GRID_FIELDS["model"] and f.name != "bidirectional"
)
TRAIN_FLAGS = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.name not in GRID_FIELDS["train"]
)

# Axis flag -> (grid field, element type).
AXIS_FLAGS: dict[str, tuple[str, type]] = {
    "num_steps": ("num_steps", int),
    "cells": ("cell", str),
    "sampling": ("sampling", str),
    "layers": ("layers", int),
    "impls": ("impl", str),
    "embeds": ("embed", int),
    "corpus": ("corpus", str),
}


def _default(axis: str) -> str:
    return ",".join(str(v) for v in DEFAULT_GRID[axis])


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `sweep` to a subparsers action."""
    p = subparsers.add_parser(
        "sweep",
        help="train a grid of settings (num_steps, cells, sampling, ...) under one budget and "
        "write results.csv, plots and report.md",
    )
    _add_grid_args(p)
    _add_config_args(p)
    _add_running_args(p)
    return p


def _add_grid_args(p: argparse.ArgumentParser) -> None:
    """The axes, the seeds, the budget and the preset."""
    g = p.add_argument_group("grid (comma-separated lists; one value fixes an axis)")
    g.add_argument(
        "--num-steps",
        dest="axis_num_steps",
        metavar="T,...",
        help=f"BPTT windows (T) (default: {_default('num_steps')})",
    )
    g.add_argument(
        "--cells",
        dest="axis_cells",
        metavar="CELL,...",
        help=f"rnn, gru, lstm (default: {_default('cell')})",
    )
    g.add_argument(
        "--sampling",
        dest="axis_sampling",
        metavar="SCHEME,...",
        help=f"random, sequential (default: {_default('sampling')})",
    )
    g.add_argument(
        "--layers", dest="axis_layers", metavar="L,...", help="recurrent layers (default: 1)"
    )
    g.add_argument(
        "--impls",
        dest="axis_impls",
        metavar="IMPL,...",
        help="torch, scratch, fast: the speed comparison (default: torch)",
    )
    g.add_argument(
        "--embeds",
        dest="axis_embeds",
        metavar="E,...",
        help="input encodings: 0 one-hot, N an embedding of size N, -1 auto (default: -1)",
    )
    g.add_argument(
        "--corpus",
        dest="axis_corpus",
        metavar="CORPUS,...",
        help="corpora, built-in names or files, e.g. timemachine,pinyin,songci "
        f"(default: {_default('corpus')})",
    )
    g.add_argument("--seeds", type=int, default=1, help="seeds per setting (default: 1)")
    g.add_argument(
        "--budget",
        metavar="KIND[:AMOUNT]",
        help="training per setting: chars[:N], seconds[:S] or epochs[:E], equal for every "
        f"setting (default: chars:{DEFAULT_AMOUNTS['chars']:,}; without an amount chars "
        f"{DEFAULT_AMOUNTS['chars']:,}, seconds {DEFAULT_AMOUNTS['seconds']:g}, epochs "
        f"{DEFAULT_AMOUNTS['epochs']})",
    )
    g.add_argument(
        "--preset",
        metavar="NAME",
        help="start from a named configuration (rnnlab.presets, e.g. d2l); its values become "
        "the base configuration and fix the axes it names, explicit flags override",
    )


def _add_config_args(p: argparse.ArgumentParser) -> None:
    """The base configs' flags: every field that neither an axis nor the budget sets."""
    add_config_args(p, DataConfig, only=DATA_FLAGS)
    rest = [f for f in MODEL_FLAGS if f not in SWEEP_MODEL_DEFAULTS]
    if rest:  # (an empty `only` would mean every field)
        add_config_args(p, ModelConfig, only=rest)
    m = p.add_argument_group("model options with sweep defaults (a small model: fast grids)")
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    for name, value in SWEEP_MODEL_DEFAULTS.items():
        m.add_argument(
            flag(name),
            dest=name,
            type=type(value),
            default=argparse.SUPPRESS,
            help=f"{fields[name].metadata['help']} (default in a sweep: {value})",
        )
    add_config_args(p, TrainConfig, only=TRAIN_FLAGS)


def _add_running_args(p: argparse.ArgumentParser) -> None:
    """Where the sweep goes and how its settings run."""
    o = p.add_argument_group("running")
    o.add_argument("--out", type=Path, required=True, help="sweep directory")
    o.add_argument(
        "--force",
        action="store_true",
        help="start over in a directory holding a finished or different sweep",
    )
    o.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="settings trained at once (default: 1; timings then compete for the CPU)",
    )
    o.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads per setting (default: torch's choice with --jobs 1, else 1)",
    )
    o.add_argument(
        "--device",
        default="auto",
        help=f"where every setting trains: {DEVICE_HELP} (default: auto; not part of the "
        "sweep's configuration, so a sweep continues on another device)",
    )
    o.add_argument(
        "--in-process",
        action="store_true",
        help="train the settings in this process instead of one fresh worker each: faster to "
        "start, but no per-setting peak memory",
    )
    o.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the plots and report.md of the finished sweep in --out; train nothing",
    )
    o.add_argument("--quiet", action="store_true", help="no progress bar or per-setting lines")


def add_parsers(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """The `rnnlab.cli` group interface; a sweep has its own --threads and --device (per
    setting, in the running group), so `common` is unused."""
    add_parser(subparsers)


def parse_list(flag: str, text: str, kind: type) -> list[Any]:
    """`1,2,4` -> [1, 2, 4]; a bad element is a usage error naming the flag."""
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise UsageError(f"--{flag.replace('_', '-')} {text!r}: give comma-separated values")
    if kind is int:
        try:
            return [int(t) for t in items]
        except ValueError:
            raise UsageError(
                f"--{flag.replace('_', '-')} {text!r}: give comma-separated whole numbers"
            ) from None
    return items


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if hasattr(args, n)}


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """The sweep's spec: grid axes, base configs, budget, threads."""
    preset = None
    if args.preset:
        preset = get_preset(args.preset)
    axes = {
        field: parse_list(flag, getattr(args, f"axis_{flag}"), kind)
        for flag, (field, kind) in AXIS_FLAGS.items()
        if getattr(args, f"axis_{flag}", None) is not None
    }
    grid = grid_from_preset(preset, axes, args.seeds)
    data, model, train = base_configs(
        preset,
        {
            "data": _given(args, DATA_FLAGS),
            "model": _given(args, MODEL_FLAGS),
            "train": _given(args, TRAIN_FLAGS),
        },
    )
    if args.budget is not None:
        budget = Budget.parse(args.budget)
    elif preset is not None and "epochs" in preset.train:
        budget = Budget("epochs", preset.train["epochs"])
    else:
        budget = Budget()
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    if args.threads < 0:
        raise UsageError(f"--threads must be 0 (torch's choice) or more, got {args.threads}")
    return SweepSpec(
        grid=grid,
        data=data,
        model=model,
        train=train,
        budget=budget,
        threads=resolve_threads(args.threads, args.jobs),
        preset=args.preset,
    )


def run(args: argparse.Namespace) -> int:
    """Run the `sweep` subcommand parsed by a parser that `add_parser` extended."""
    argv = getattr(args, "argv", None)
    command = "rnnlab " + shlex.join(argv if argv is not None else sys.argv[1:])
    if args.report_only:
        path = rewrite_report(args.out, command)
        print(f"report rewritten: {path}")
        return 0
    device = resolve_device(args.device)  # a device that is not there: exit 2 before any work
    spec = spec_from_args(args)
    log = (lambda s: None) if args.quiet else print
    return sweep(
        spec,
        args.out,
        command,
        force=args.force,
        jobs=args.jobs,
        isolate=not args.in_process,
        progress=not args.quiet and sys.stderr.isatty(),
        log=log,
        device=device,
    )


COMMANDS = {"sweep": run}
