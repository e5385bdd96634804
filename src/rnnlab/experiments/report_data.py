"""A sweep's results pooled over seeds, and the comparisons the report's rules make with them.

Two settings differ "clearly" only when their means differ by more than the spread between
seeds (the larger of the two standard deviations); with one seed the spread is not measured,
and differences under 1% are called no clear difference instead.

This module trains nothing and reads plain rows (dicts), so a report can be rewritten from a
sweep's CSV files, and every rule tested on hand-made tables.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rnnlab.experiments.spec import AXES
from rnnlab.experiments.store import EXACT_COLUMNS, VARYING_COLUMNS

ONE_SEED_REL_TOL = 0.01  # with one seed, differences under 1% are "no clear difference"
GROUP_AXES = tuple(a for a in AXES if a not in ("num_steps", "seed_index"))
NUMERIC = tuple(c for c in EXACT_COLUMNS + VARYING_COLUMNS if c not in ("vocab_size", "threads"))


@dataclass
class SweepData:
    """What a report is made from: the sweep's spec and command, and its three tables."""

    spec: dict[str, Any]  # sweep.json's spec: grid, base configs, budget, threads, preset
    command: str
    data: dict[str, dict[str, int]]  # corpus -> vocab_size, train_chars, heldout_chars
    rows: list[dict[str, Any]]  # results.csv
    positions: list[dict[str, Any]] = field(default_factory=list)  # key, position, loss
    gradflow: list[dict[str, Any]] = field(default_factory=list)  # key, k, norm
    floors: dict[str, dict[str, Any]] = field(default_factory=dict)  # memory corpora


# -- aggregation over seeds -----------------------------------------------------------------------


@dataclass
class Group:
    """One setting with its seeds pooled: mean and sample std of every measurement."""

    axes: dict[str, Any]  # every axis but the seed index
    n: int  # seeds that trained without diverging
    mean: dict[str, float]
    std: dict[str, float]  # 0 with one seed
    keys: list[str]  # the run keys pooled (all seeds)
    diverged: int = 0

    @property
    def T(self) -> int:
        return int(self.axes["num_steps"])

    def family(self) -> tuple[Any, ...]:
        """The setting without num_steps: the line a curve over num_steps belongs to."""
        return tuple(self.axes[a] for a in GROUP_AXES)


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(rows: list[dict[str, Any]]) -> list[Group]:
    """Pool the seeds of each setting (diverged seeds are counted, not averaged)."""
    by_setting: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        by_setting.setdefault(tuple(r[a] for a in AXES[:-1]), []).append(r)
    groups = []
    for axes, rs in by_setting.items():
        ok = [r for r in rs if r.get("status", "ok") == "ok"]
        mean, std = {}, {}
        for m in NUMERIC:
            vals = [float(r[m]) for r in ok if m in r and _finite(r[m])]
            mean[m], std[m] = _mean_std(vals)
        groups.append(
            Group(
                axes=dict(zip(AXES[:-1], axes, strict=True)),
                n=len(ok),
                mean=mean,
                std=std,
                keys=[r["key"] for r in rs],
                diverged=len(rs) - len(ok),
            )
        )
    return groups


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def families(groups: list[Group]) -> dict[tuple[Any, ...], list[Group]]:
    """Groups by everything but num_steps, each list sorted by num_steps (usable ones only)."""
    out: dict[tuple[Any, ...], list[Group]] = {}
    for g in groups:
        if g.n:
            out.setdefault(g.family(), []).append(g)
    return {k: sorted(v, key=lambda g: g.T) for k, v in out.items()}


def varying_axes(groups: list[Group]) -> list[str]:
    return [a for a in AXES[:-1] if len({g.axes[a] for g in groups}) > 1]


def label(g: Group, axes: Iterable[str]) -> str:
    """A short name for a setting from the axes that vary ("GRU, random")."""
    parts = []
    for a in axes:
        v = g.axes[a]
        if a == "cell":
            parts.append(str(v).upper())
        elif a == "layers":
            parts.append(f"{v} layer{'s' if v != 1 else ''}")
        elif a == "embed":
            parts.append("auto input" if v == -1 else "one-hot" if v == 0 else f"embedding {v}")
        elif a == "num_steps":
            parts.append(f"num_steps {v}")
        else:
            parts.append(str(v))
    return ", ".join(parts)


# -- comparing with the spread between seeds ------------------------------------------------------


def spread(a: Group, b: Group, metric: str) -> float:
    """How far apart two means must be to count as a clear difference."""
    if min(a.n, b.n) >= 2:
        return max(a.std[metric], b.std[metric])
    return ONE_SEED_REL_TOL * min(abs(a.mean[metric]), abs(b.mean[metric]))


def compare(a: Group, b: Group, metric: str) -> int:
    """-1 if a is clearly lower, +1 if clearly higher, 0 if the difference is within the spread."""
    d = a.mean[metric] - b.mean[metric]
    if not math.isfinite(d) or abs(d) <= spread(a, b, metric):
        return 0
    return -1 if d < 0 else 1


@dataclass
class Trend:
    """The shape of a metric (lower is better) over num_steps."""

    kind: str  # flat, falls, falls-flattens, rises, u-shape, mixed
    best: Group
    knee: Group  # the first window within the spread of the best
    worse_after: Group | None  # the first window after the best that is clearly worse


def trend(line: list[Group], metric: str) -> Trend:
    """Classify a curve over num_steps, comparing each point with the best one.

    "rises" and "u-shape" need every window after the first clearly worse one to stay clearly
    worse; "falls" needs every window from the first that reaches the best level to stay there;
    a clear rise on the way down, or a return to the best level after a rise, is "mixed".
    """
    n = len(line)
    best_i = min(range(n), key=lambda i: line[i].mean[metric])
    best = line[best_i]
    close = [compare(g, best, metric) == 0 for g in line]
    knee_i = close.index(True)
    w = next((j for j in range(best_i, n) if not close[j]), None)
    worse_after = None if w is None else line[w]
    rise_on_way_down = any(
        compare(line[j], line[i], metric) > 0 for i in range(best_i) for j in range(i, best_i)
    )
    if all(close):
        kind = "flat"
    elif w is not None:
        if any(close[w:]) or rise_on_way_down:
            kind = "mixed"
        else:
            kind = "rises" if all(close[:best_i]) else "u-shape"
    elif not all(close[knee_i:]) or rise_on_way_down:
        kind = "mixed"  # a bump after first reaching the best level
    elif knee_i == n - 1:
        kind = "falls"
    else:
        kind = "falls-flattens"
    return Trend(kind, best, line[knee_i], worse_after)


# -- what the rules and the figures read ---------------------------------------------------------


@dataclass
class Context:
    """What the rules and the plots know: the groups, and the sweep's curves by run key."""

    groups: list[Group]
    budget: dict[str, Any]
    positions: dict[str, dict[int, float]] = field(default_factory=dict)  # key -> position -> loss
    gradflow: dict[str, dict[int, float]] = field(default_factory=dict)  # key -> k -> norm
    floors: dict[str, dict[str, Any]] = field(default_factory=dict)
    preset: str | None = None

    @property
    def label_axes(self) -> list[str]:
        return [a for a in varying_axes(self.groups) if a != "num_steps"]

    def name(self, g: Group) -> str:
        return label(g, self.label_axes) or label(g, ["cell"])


def context(data: SweepData) -> Context:
    """Pool the seeds of `data` and index its curves by run key."""
    positions: dict[str, dict[int, float]] = {}
    for r in data.positions:
        positions.setdefault(r["key"], {})[int(r["position"])] = float(r["loss"])
    gradflow: dict[str, dict[int, float]] = {}
    for r in data.gradflow:
        gradflow.setdefault(r["key"], {})[int(r["k"])] = float(r["norm"])
    return Context(
        groups=aggregate(data.rows),
        budget=data.spec["budget"],
        positions=positions,
        gradflow=gradflow,
        floors=data.floors,
        preset=data.spec.get("preset"),
    )


def mean_curve(by_key: dict[str, dict[int, float]], g: Group) -> dict[int, float]:
    """A group's curve (position or distance -> value), averaged over its seeds' runs."""
    curves = [by_key[k] for k in g.keys if k in by_key]
    if not curves:
        return {}
    return {
        p: statistics.fmean(c[p] for c in curves) for p in curves[0] if all(p in c for c in curves)
    }
