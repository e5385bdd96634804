"""A sweep's tables -> PNG plots and report.md, with a discussion generated from the numbers.

The discussion is a list of small rules over the aggregated results table. Each rule looks at
one effect (context, zero-state starts, optimizer steps per character, gradient flow, cost per
step, ...) and returns a claim only when the numbers support it, naming the table or figure
that shows it. Two settings differ "clearly" only when their means differ by more than the
spread between seeds (the larger of the two standard deviations); with one seed the spread is
not measured, and differences under 1% are called no clear difference instead.

This module trains nothing and reads plain rows (dicts), so a report can be rewritten from a
sweep's CSV files, and every rule tested on hand-made tables.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from rnnlab.errors import UsageError

REPORT_FILE = "report.md"
HELDOUT_PNG = "heldout.png"
GRADFLOW_PNG = "gradflow.png"
COST_PNG = "cost.png"
GRADIENTS_PNG = "gradients.png"
POSITION_PNG = "position_loss_{sampling}.png"
OUTPUT_FILES = (
    REPORT_FILE,
    HELDOUT_PNG,
    GRADFLOW_PNG,
    COST_PNG,
    GRADIENTS_PNG,
    POSITION_PNG.format(sampling="random"),
    POSITION_PNG.format(sampling="sequential"),
)

ONE_SEED_REL_TOL = 0.01  # with one seed, differences under 1% are "no clear difference"
AXES = ("corpus", "cell", "layers", "impl", "embed", "sampling", "num_steps", "seed_index")
GROUP_AXES = tuple(a for a in AXES if a not in ("num_steps", "seed_index"))
# results.csv after the setting columns: figures a rerun reproduces exactly, then those that vary.
EXACT_COLUMNS = (
    "params",
    "vocab_size",
    "threads",
    "chars_trained",
    "steps",
    "epochs",
    "heldout_chars",
    "heldout_carried_loss",
    "heldout_carried_ppl",
    "heldout_carried_bpc",
    "heldout_reset_loss",
    "heldout_reset_ppl",
    "heldout_reset_bpc",
    "train_final_loss",
    "train_final_ppl",
    "grad_norm",
    "clip_fraction",
)
VARYING_COLUMNS = ("time_train_s", "time_chars_per_s", "time_setting_s", "mem_peak_rss_mib")
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


# -- the rules ------------------------------------------------------------------------------------


@dataclass
class Claim:
    topic: str
    text: str
    evidence: str  # the table or figure that shows it


@dataclass
class Context:
    """What the rules know besides the groups."""

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


def _ppl(g: Group, which: str = "carried") -> str:
    return f"{g.mean[f'heldout_{which}_ppl']:.3f} at {g.T}"


def rule_context(ctx: Context) -> list[Claim]:
    """Held-out perplexity (state carried) over num_steps: the context the model learned to use."""
    claims = []
    m = "heldout_carried_loss"
    for line in families(ctx.groups).values():
        if len(line) < 2:
            continue
        t = trend(line, m)
        first, last = line[0], line[-1]
        who = ctx.name(first)
        if t.kind == "flat":
            text = (
                f"{who}: no clear difference in held-out perplexity across num_steps "
                f"{first.T} to {last.T} ({_range(line, 'heldout_carried_ppl')})."
            )
        elif t.kind == "falls":
            text = (
                f"{who}: held-out perplexity falls as num_steps grows, from {_ppl(first)} to "
                f"{_ppl(last)}, still falling at the longest window tried: longer windows "
                "let training back-propagate through more context."
            )
        elif t.kind == "falls-flattens":
            flat = _range(line[line.index(t.knee) :], "heldout_carried_ppl")
            text = (
                f"{who}: held-out perplexity falls as num_steps grows from {_ppl(first)} to "
                f"{_ppl(t.knee)}, then flattens ({flat} from {t.knee.T} to {last.T}): beyond "
                f"{t.knee.T} characters, more context in training does not help at this budget."
            )
        elif t.kind == "rises":
            assert t.worse_after is not None
            text = (
                f"{who}: longer windows are worse: held-out perplexity is lowest at num_steps "
                f"{t.best.T} ({t.best.mean['heldout_carried_ppl']:.3f}) and clearly higher from "
                f"{t.worse_after.T} on ({_ppl(last)})."
            )
        elif t.kind == "u-shape":
            assert t.worse_after is not None
            text = (
                f"{who}: a U-shape: held-out perplexity falls from {_ppl(first)} to "
                f"{_ppl(t.best)}, then rises again ({_ppl(last)}): the best window lies in between."
            )
        else:
            text = (
                f"{who}: no simple trend over num_steps: best {_ppl(t.best)}, "
                f"worst {_ppl(max(line, key=lambda g: g.mean[m]))}."
            )
        claims.append(Claim("Context available to the model", text, f"Table 1, {HELDOUT_PNG}"))
    return claims


def _range(line: list[Group], metric: str) -> str:
    vals = [g.mean[metric] for g in line]
    return _span([f"{min(vals):.3f}", f"{max(vals):.3f}"])


def rule_reset(ctx: Context) -> list[Claim]:
    """Held-out loss with the state reset every num_steps against the state carried."""
    claims = []
    for line in families(ctx.groups).values():
        gaps = [(g, g.mean["heldout_reset_loss"] - g.mean["heldout_carried_loss"]) for g in line]
        clear = [(g, d) for g, d in gaps if abs(d) > _loss_tol(g)]
        who = ctx.name(line[0])
        listed = ", ".join(f"{d:+.3f} at {g.T}" for g, d in gaps)
        if not clear:
            text = (
                f"{who}: resetting the state every num_steps makes no clear difference to the "
                f"held-out loss (reset minus carried, nats/char: {listed})."
            )
            claims.append(Claim("Zero-state starts vs carried state", text, "Table 1"))
            continue
        worse = [g for g, d in clear if d > 0]
        better = [g for g, d in clear if d < 0]
        parts = [f"{who}: held-out loss with the state reset every num_steps minus carried, "]
        parts.append(f"in nats/char: {listed}.")
        if worse:
            parts.append(
                f" Starting each window from a zero state costs context at num_steps "
                f"{_list(g.T for g in worse)}."
            )
            if (
                len(line) >= 2
                and gaps[-1][1] < gaps[0][1] - _loss_tol(line[0])
                and all(
                    b <= a + _loss_tol(g) for (g, a), (_, b) in zip(gaps, gaps[1:], strict=False)
                )
            ):
                parts.append(
                    " The cost shrinks as the window grows: a long window holds most of "
                    "the context a carried state would supply."
                )
        if better:
            parts.append(
                f" At num_steps {_list(g.T for g in better)} the carried state is clearly worse "
                "than resetting: the model does not cope with a state carried further than it "
                "was trained on."
            )
        claims.append(
            Claim("Zero-state starts vs carried state", "".join(parts), f"Table 1, {HELDOUT_PNG}")
        )
    return claims


def _loss_tol(g: Group) -> float:
    """The spread of a loss difference within one group (std, or 1% with one seed)."""
    if g.n >= 2:
        return max(g.std["heldout_reset_loss"], g.std["heldout_carried_loss"])
    return ONE_SEED_REL_TOL * g.mean["heldout_carried_loss"]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _span(ends: list[str]) -> str:
    """ "a to b", or just "a" when both ends print the same."""
    return ends[0] if ends[0] == ends[-1] else f"{ends[0]} to {ends[-1]}"


def _list(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values)


def rule_positions(ctx: Context) -> list[Claim]:
    """Loss by position in a window (state reset): the first characters come from a zero state."""
    claims = []
    first_by_family: dict[tuple[Any, ...], tuple[Group, float]] = {}
    for line in families(ctx.groups).values():
        g = line[-1]  # the longest window: room to see the loss fall along it
        curve = _mean_curve(ctx.positions, g)
        if g.T < 4 or not curve:
            continue
        first = curve[1]
        tail = [curve[p] for p in range(g.T - g.T // 4 + 1, g.T + 1) if p in curve]
        late = statistics.fmean(tail)
        first_by_family[g.family()] = (g, first)
        sampling = g.axes["sampling"]
        fig = POSITION_PNG.format(sampling=sampling)
        if first > late * 1.1:
            text = (
                f"{ctx.name(g)}, num_steps {g.T}: the first character of a window, predicted "
                f"from a zero state, costs {first:.3f} nats against {late:.3f} on average at "
                f"positions {g.T - g.T // 4 + 1}-{g.T}"
                f" ({first / late:.1f}x); the loss falls as the window supplies context."
            )
        else:
            text = (
                f"{ctx.name(g)}, num_steps {g.T}: the first positions of a window are not "
                f"clearly harder ({first:.3f} nats at position 1, {late:.3f} at the last quarter)."
            )
        claims.append(Claim("Zero-state starts vs carried state", text, fig))
    # Sequential training rarely starts from zero: is its model worse there than random's?
    for g, first in first_by_family.values():
        if g.axes["sampling"] != "sequential":
            continue
        twin = tuple("random" if a == "sampling" else g.axes[a] for a in GROUP_AXES)
        if twin not in first_by_family or first_by_family[twin][0].T != g.T:
            continue
        r_first = first_by_family[twin][1]
        others = label(g, [a for a in ctx.label_axes if a != "sampling"])
        where = f"{others}, window of {g.T}" if others else f"window of {g.T}"
        if first > r_first * 1.05:
            text = (
                f"{where}: at position 1 the model trained with sequential partitioning loses "
                f"{first:.3f} nats against {r_first:.3f} for random sampling: in training it "
                "starts from a zero state only once per epoch, so it learned to lean on a "
                "carried state."
            )
        elif r_first > first * 1.05:
            text = (
                f"{where}: at position 1 the model trained with random sampling loses "
                f"{r_first:.3f} nats against {first:.3f} with sequential partitioning."
            )
        else:
            continue
        claims.append(Claim("Zero-state starts vs carried state", text, "position_loss_*.png"))
    return claims


def _mean_curve(positions: dict[str, dict[int, float]], g: Group) -> dict[int, float]:
    curves = [positions[k] for k in g.keys if k in positions]
    if not curves:
        return {}
    return {
        p: statistics.fmean(c[p] for c in curves) for p in curves[0] if all(p in c for c in curves)
    }


def rule_sampling(ctx: Context) -> list[Claim]:
    """Random sampling against sequential partitioning at the same num_steps."""
    by_setting = {(g.family(), g.T): g for g in ctx.groups if g.n}
    outcomes: dict[str, list[int]] = {"sequential": [], "random": [], "none": []}
    for (_, T), g in by_setting.items():
        if g.axes["sampling"] != "sequential":
            continue
        twin = tuple("random" if a == "sampling" else g.axes[a] for a in GROUP_AXES)
        r = by_setting.get((twin, T))
        if r is None:
            continue
        c = compare(g, r, "heldout_carried_loss")
        outcomes["sequential" if c < 0 else "random" if c > 0 else "none"].append(T)
    if not any(outcomes.values()):
        return []
    parts = []
    if outcomes["sequential"]:
        parts.append(
            "sequential partitioning is clearly lower at num_steps "
            + _list(sorted(set(outcomes["sequential"])))
        )
    if outcomes["random"]:
        parts.append(
            "random sampling is clearly lower at num_steps "
            + _list(sorted(set(outcomes["random"])))
        )
    if outcomes["none"]:
        parts.append(f"no clear difference at num_steps {_list(sorted(set(outcomes['none'])))}")
    text = "Held-out perplexity (state carried): " + "; ".join(parts) + "."
    short = min((T for v in outcomes.values() for T in v), default=0)
    if short in outcomes["sequential"]:
        text += (
            f" At the shortest window ({short}) the carried state gives the sequentially "
            "trained model context beyond its window, which a randomly sampled one never has."
        )
    return [Claim("Zero-state starts vs carried state", text, f"Table 1, {HELDOUT_PNG}")]


def rule_steps(ctx: Context) -> list[Claim]:
    """Optimizer steps per character: a longer window means fewer, larger updates."""
    claims = []
    kind = ctx.budget.get("kind")
    for line in families(ctx.groups).values():
        if len(line) < 2:
            continue
        short, long_ = line[0], line[-1]
        s_steps, l_steps = short.mean["steps"], long_.mean["steps"]
        s_chars, l_chars = short.mean["chars_trained"], long_.mean["chars_trained"]
        who = ctx.name(short)
        if kind == "seconds":
            text = (
                f"{who}: with equal wall-clock time, num_steps {short.T} trained on "
                f"{s_chars:,.0f} characters in {s_steps:,.0f} steps and num_steps {long_.T} on "
                f"{l_chars:,.0f} characters in {l_steps:,.0f} steps."
            )
        elif l_steps < s_steps:
            same = "the same" if abs(s_chars - l_chars) <= 0.01 * s_chars else "about the same"
            text = (
                f"{who}: for {same} {s_chars:,.0f} training characters, num_steps {long_.T} "
                f"takes {l_steps:,.0f} optimizer steps against {s_steps:,.0f} at {short.T} "
                f"({s_steps / l_steps:.0f}x fewer updates)."
            )
        else:
            continue
        t = trend(line, "heldout_carried_loss")
        if t.worse_after is not None and t.best is not long_:
            d = compare(long_, t.best, "train_final_loss")
            lt, bt = long_.mean["train_final_ppl"], t.best.mean["train_final_ppl"]
            if d > 0:
                text += (
                    f" The longest window is also worse on its own training text (final training "
                    f"perplexity {lt:.3f} against {bt:.3f} at {t.best.T}): it is under-trained, "
                    "consistent with fewer updates, not over-fitted."
                )
            else:
                text += (
                    f" Its final training perplexity is not higher ({lt:.3f} against {bt:.3f} "
                    f"at {t.best.T}), so fewer updates alone do not explain its worse held-out "
                    "figure."
                )
        claims.append(Claim("Fewer optimizer steps per character", text, f"Table 1, {COST_PNG}"))
    return claims


def _gradflow_curve(ctx: Context, g: Group) -> dict[int, float]:
    return _mean_curve(ctx.gradflow, g)


def rule_gradflow(ctx: Context) -> list[Claim]:
    """||dL/dh|| against distance for the longest window: vanishing or exploding gradients."""
    found = []
    for line in families(ctx.groups).values():
        g = line[-1]
        curve = _gradflow_curve(ctx, g)
        if len(curve) < 2:
            continue
        k = max(curve)
        ratio = curve[k] / curve[1] if curve[1] > 0 else math.nan
        if math.isfinite(ratio):
            found.append((g, k, ratio))
    if not found:
        return []
    parts = []
    for g, _, ratio in sorted(found, key=lambda f: f[2]):
        if ratio < 1e-3:
            what = "vanishes"
        elif ratio < 0.1:
            what = "decays"
        elif ratio <= 10:
            what = "stays within a factor of 10"
        else:
            what = "grows (exploding)"
        parts.append(f"{ctx.name(g)} {ratio:.1e} ({what})")
    k = found[0][1]
    text = (
        f"||dL/dh|| for the state {k} steps before a prediction, relative to one step before, "
        f"in the trained models of num_steps {k + 1} on held-out windows: {'; '.join(parts)}."
    )
    cells = {g.axes["cell"]: r for g, _, r in found}
    if len(cells) > 1 and len(found) == len(cells):
        order = sorted(cells, key=lambda c: cells[c])
        text += (
            f" It decays fastest for {order[0].upper()} and slowest for {order[-1].upper()}: "
            "gates let a cell pass its state (and the gradient) on nearly unchanged."
            if "rnn" == order[0] and order[-1] != "rnn"
            else f" It decays fastest for {order[0].upper()} and slowest for {order[-1].upper()}."
        )
    return [Claim("Vanishing and exploding gradients", text, GRADFLOW_PNG)]


def rule_clipping(ctx: Context) -> list[Claim]:
    """How often clipping fired and the gradient norm before it, over num_steps."""
    claims = []
    for line in families(ctx.groups).values():
        if len(line) < 2:
            continue
        first, last = line[0], line[-1]
        f0, f1 = first.mean["clip_fraction"], last.mean["clip_fraction"]
        n0, n1 = first.mean["grad_norm"], last.mean["grad_norm"]
        who = ctx.name(first)
        norms = f"mean gradient norm before clipping {n0:.3g} at {first.T}, {n1:.3g} at {last.T}"
        if f1 - f0 > 0.05:
            text = (
                f"{who}: clipping fired more often with longer windows ({f0:.0%} of steps at "
                f"num_steps {first.T}, {f1:.0%} at {last.T}; {norms}): a longer window's "
                "gradient sums more time steps and is larger."
            )
        elif f0 - f1 > 0.05:
            text = (
                f"{who}: clipping fired less often with longer windows ({f0:.0%} of steps at "
                f"num_steps {first.T}, {f1:.0%} at {last.T}; {norms})."
            )
        else:
            fr = [g.mean["clip_fraction"] for g in line]
            span = _span([f"{min(fr):.0%}", f"{max(fr):.0%}"])
            text = f"{who}: clipping fired in {span} of steps at every num_steps ({norms})."
        claims.append(Claim("Vanishing and exploding gradients", text, GRADIENTS_PNG))
    return claims


def rule_cost(ctx: Context) -> list[Claim]:
    """Training speed over num_steps (a timing figure: it varies between runs)."""
    claims = []
    for line in families(ctx.groups).values():
        if len(line) < 2:
            continue
        short, long_ = line[0], line[-1]
        c0, c1 = short.mean["time_chars_per_s"], long_.mean["time_chars_per_s"]
        if not (math.isfinite(c0) and math.isfinite(c1)):
            continue
        B = short.mean["chars_trained"] / short.mean["steps"] / short.T
        ms0, ms1 = 1000 * B * short.T / c0, 1000 * B * long_.T / c1
        who = ctx.name(short)
        if c1 > 1.2 * c0:
            text = (
                f"{who}: {c0:,.0f} chars/s at num_steps {short.T} against {c1:,.0f} at "
                f"{long_.T}. A step costs {ms0:.2f} ms for {B * short.T:,.0f} characters and "
                f"{ms1:.2f} ms for {B * long_.T:,.0f}: the fixed cost of each step (Python, "
                "optimizer, kernel launches) dominates short windows."
            )
        elif c0 > 1.2 * c1:
            text = (
                f"{who}: training is slower per character at longer windows: {c0:,.0f} chars/s "
                f"at num_steps {short.T} against {c1:,.0f} at {long_.T}."
            )
        else:
            text = (
                f"{who}: speed per character is about the same at every num_steps "
                f"({_range(line, 'time_chars_per_s').replace(' to ', '-')} chars/s)."
            )
        claims.append(Claim("Cost per step", text, f"Table 2, {COST_PNG}"))
    return claims


def rule_memory(ctx: Context) -> list[Claim]:
    """Peak RSS per setting over num_steps (varies a little between runs)."""
    claims = []
    for line in families(ctx.groups).values():
        vals = [g.mean["mem_peak_rss_mib"] for g in line]
        if len(line) < 2 or not all(math.isfinite(v) for v in vals):
            continue
        who = ctx.name(line[0])
        if vals[-1] > 1.05 * vals[0]:
            text = (
                f"{who}: peak RSS of the worker grows from {vals[0]:,.0f} MiB at num_steps "
                f"{line[0].T} to {vals[-1]:,.0f} MiB at {line[-1].T}: back-propagation keeps "
                "every time step's activations of a window."
            )
        else:
            span = _span([f"{min(vals):,.0f}", f"{max(vals):,.0f}"])
            text = f"{who}: peak RSS of the worker is {span} MiB; it does not grow with num_steps."
        claims.append(Claim("Cost per step", text, "Table 2"))
    return claims


def rule_axes(ctx: Context) -> list[Claim]:
    """Cells, layers, input encodings, implementations: which is lower, where it is clear."""
    claims = []
    varying = varying_axes(ctx.groups)
    for axis in ("cell", "layers", "embed", "impl"):
        if axis not in varying:
            continue
        wins: dict[Any, int] = {}
        ties = 0
        comparisons = 0
        for gs in _split_by(ctx.groups, axis).values():
            gs = [g for g in gs if g.n]
            if len(gs) < 2:
                continue
            comparisons += 1
            best = min(gs, key=lambda g: g.mean["heldout_carried_loss"])
            if all(compare(g, best, "heldout_carried_loss") > 0 for g in gs if g is not best):
                wins[best.axes[axis]] = wins.get(best.axes[axis], 0) + 1
            else:
                ties += 1
        if not comparisons:
            continue
        name = {
            "cell": "cell",
            "layers": "depth",
            "embed": "input encoding",
            "impl": "implementation",
        }[axis]
        parts = [
            f"{label(_fake(axis, v), [axis])} is clearly lowest in {n} of {comparisons}"
            for v, n in sorted(wins.items(), key=lambda kv: -kv[1])
        ]
        if ties:
            parts.append(f"no clear winner in {ties} of {comparisons}")
        text = (
            f"Held-out perplexity by {name}, comparing settings that differ only in it: "
            + "; ".join(parts)
            + "."
        )
        if axis == "impl":
            text += _impl_speed(ctx)
        claims.append(Claim(f"Comparing {name}s", text, f"Table 1, {HELDOUT_PNG}"))
    return claims


def _fake(axis: str, value: Any) -> Group:
    return Group(axes={axis: value}, n=0, mean={}, std={}, keys=[])


def _split_by(groups: list[Group], axis: str) -> dict[tuple[Any, ...], list[Group]]:
    out: dict[tuple[Any, ...], list[Group]] = {}
    for g in groups:
        out.setdefault(tuple(g.axes[a] for a in AXES[:-1] if a != axis), []).append(g)
    return out


def _impl_speed(ctx: Context) -> str:
    ratios = []
    for gs in _split_by(ctx.groups, "impl").values():
        by = {g.axes["impl"]: g for g in gs if g.n}
        if "torch" in by and "scratch" in by:
            t, s = by["torch"].mean["time_chars_per_s"], by["scratch"].mean["time_chars_per_s"]
            if math.isfinite(t) and math.isfinite(s) and s > 0:
                ratios.append(t / s)
    if not ratios:
        return ""
    return (
        f" Speed (Table 2): torch's fused cells train {min(ratios):.1f}x to {max(ratios):.1f}x as "
        "many characters per second as the scratch cells."
    )


def rule_corpora(ctx: Context) -> list[Claim]:
    """Several corpora: bits/char says how predictable each text is to the same model."""
    if "corpus" not in varying_axes(ctx.groups):
        return []
    best: dict[str, float] = {}
    for g in ctx.groups:
        if g.n:
            v = g.mean["heldout_carried_bpc"]
            best[g.axes["corpus"]] = min(best.get(g.axes["corpus"], math.inf), v)
    order = sorted(best, key=best.get)  # type: ignore[arg-type]
    listed = ", ".join(f"{c} {best[c]:.3f}" for c in order)
    text = (
        f"Best held-out bits/char per corpus (any setting): {listed}. Bits per character, not "
        "perplexity, compares texts with different alphabets; a lower figure is a text more "
        "predictable to this model, not a better model."
    )
    return [Claim("Comparing corpora", text, "Table 3")]


def rule_floors(ctx: Context) -> list[Claim]:
    """Known-memory corpora: the measured loss against the best achievable."""
    claims = []
    for corpus, fl in ctx.floors.items():
        gs = sorted(
            (g for g in ctx.groups if g.axes["corpus"] == corpus and g.n), key=lambda g: g.T
        )
        if not gs:
            continue
        bits = []
        for g in gs:
            carried = g.mean["heldout_carried_loss"]
            wf = fl["window"].get(str(g.T))
            s = (
                f"{ctx.name(g)} num_steps {g.T}: {carried:.3f} nats carried = "
                f"{carried / fl['floor']:.2f}x the floor"
            )
            if wf:
                reset = g.mean["heldout_reset_loss"]
                s += f", {reset:.3f} reset = {reset / wf:.2f}x the window floor {wf:.3f}"
            bits.append(s)
        text = (
            f"{corpus}: the best achievable held-out loss is {fl['floor']:.4f} nats/char "
            f"(a model with no memory: ln k = {fl['no_memory']:.4f}). " + "; ".join(bits) + "."
        )
        claims.append(Claim("Distance from the theoretical floor", text, f"Table 4, {HELDOUT_PNG}"))
    return claims


def rule_train_vs_heldout(ctx: Context) -> list[Claim]:
    """Preset sweeps: the book prints training perplexity; set it beside held-out perplexity."""
    if not ctx.preset:
        return []
    claims = []
    for g in ctx.groups:
        if not g.n:
            continue
        tr, ho = g.mean["train_final_ppl"], g.mean["heldout_carried_ppl"]
        rel = "higher than" if ho > tr * 1.01 else "lower than" if ho < tr / 1.01 else "about"
        text = (
            f"{ctx.name(g)}, num_steps {g.T}: final training perplexity {tr:.3f} (the figure "
            f"d2l prints) against held-out {ho:.3f}, {rel} the training figure."
        )
        claims.append(Claim(f"Preset {ctx.preset}: training vs held-out", text, "Table 1"))
    return claims


RULES: tuple[Callable[[Context], list[Claim]], ...] = (
    rule_context,
    rule_sampling,
    rule_reset,
    rule_positions,
    rule_steps,
    rule_gradflow,
    rule_clipping,
    rule_cost,
    rule_memory,
    rule_axes,
    rule_corpora,
    rule_floors,
    rule_train_vs_heldout,
)


def discussion(ctx: Context) -> list[Claim]:
    """Every claim the numbers support, grouped by topic in the order of RULES."""
    claims = [c for rule in RULES for c in rule(ctx)]
    topics = list(dict.fromkeys(c.topic for c in claims))
    return sorted(claims, key=lambda c: topics.index(c.topic))


# -- plots ----------------------------------------------------------------------------------------


def pyplot() -> ModuleType:
    """matplotlib.pyplot with the Agg backend; a sweep fails before training if it is missing."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError(
            "rnnlab sweep writes PNG plots and needs matplotlib: pip install 'rnnlab[plots]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    """Write a figure atomically (temp file + rename)."""
    import io

    from rnnlab.checkpoint import write_atomic

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_atomic(path, buf.getvalue())


def _log2_axis(ax: Any) -> None:
    """num_steps and positions double from point to point: log2 spacing, plain-number labels."""
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:  # (nothing to label when every setting diverged)
        ax.legend(fontsize=7)


def plot_heldout(ctx: Context, path: Path, several_corpora: bool) -> None:
    """Held-out ppl (bpc for several corpora) against num_steps; carried solid, reset dashed."""
    plt = pyplot()
    unit = "bpc" if several_corpora or ctx.floors else "ppl"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, line in enumerate(families(ctx.groups).values()):
        color = f"C{i % 10}"
        xs = [g.T for g in line]
        for which, style in (("carried", "-"), ("reset", "--")):
            m = f"heldout_{which}_{unit}"
            ax.errorbar(
                xs,
                [g.mean[m] for g in line],
                yerr=[g.std[m] for g in line],
                fmt=style + "o",
                color=color,
                ms=4,
                capsize=3,
                label=f"{ctx.name(line[0])} ({which})",
            )
        if ctx.preset:
            m = f"train_final_{'ppl' if unit == 'ppl' else 'loss'}"
            ys = [g.mean[m] / (1 if unit == "ppl" else math.log(2)) for g in line]
            ax.plot(xs, ys, ":s", color=color, ms=3, label=f"{ctx.name(line[0])} (training, final)")
    for corpus, fl in ctx.floors.items():
        ax.axhline(fl["floor"] / math.log(2), color="black", lw=1, label=f"{corpus} floor")
        ws = sorted((int(T), v / math.log(2)) for T, v in fl["window"].items())
        ax.plot(
            [w[0] for w in ws],
            [w[1] for w in ws],
            ":",
            color="black",
            label=f"{corpus} window floor",
        )
    _log2_axis(ax)
    ax.set_xlabel("num_steps (BPTT window, characters)")
    ax.set_ylabel("held-out perplexity" if unit == "ppl" else "held-out bits/char")
    ax.set_title("Held-out text: state carried (solid) vs reset every num_steps (dashed)")
    _legend(ax)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_positions(ctx: Context, sampling: str, path: Path) -> bool:
    """Mean held-out loss at each position of a window (state reset), one line per num_steps."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for g in sorted(
        (g for g in ctx.groups if g.axes["sampling"] == sampling), key=lambda g: (g.family(), g.T)
    ):
        curve = _mean_curve(ctx.positions, g)
        if not curve:
            continue
        ps = sorted(curve)
        name = label(g, [a for a in ctx.label_axes if a != "sampling"] + ["num_steps"])
        ax.plot(ps, [curve[p] for p in ps], "-o" if len(ps) < 3 else "-", ms=3, label=name)
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    for corpus, fl in ctx.floors.items():
        ax.axhline(fl["floor"], color="black", lw=1, label=f"{corpus} floor")
    _log2_axis(ax)
    ax.set_xlabel("position inside the window (1 = predicted from a zero state)")
    ax.set_ylabel("held-out loss, nats/char")
    ax.set_title(f"Loss by position, models trained with {sampling} sampling")
    _legend(ax)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def plot_gradflow(ctx: Context, path: Path) -> bool:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for line in families(ctx.groups).values():
        g = line[-1]
        curve = _gradflow_curve(ctx, g)
        if not curve:
            continue
        ks = sorted(curve)
        ax.semilogy(ks, [curve[k] for k in ks], label=ctx.name(g))
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    T = max(g.T for g in ctx.groups)
    ax.set_xlabel("k: steps between the state and the prediction")
    ax.set_ylabel("||dL / dh_(T-k)||, mean over held-out windows")
    ax.set_title(f"Gradient flow through time, trained models of num_steps {T}")
    _legend(ax)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


# Figures of training figures against num_steps: (file, [(column, y label, log y)], title, caption)
PANELS = (
    (
        COST_PNG,
        [
            ("time_chars_per_s", "training chars/s (varies by run)", False),
            ("steps", "optimizer steps", True),
        ],
        "Cost: speed and optimizer steps",
        "Training speed and optimizer steps (speed varies between runs)",
    ),
    (
        GRADIENTS_PNG,
        [
            ("grad_norm", "mean gradient norm before clipping", True),
            ("clip_fraction", "fraction of steps clipped", False),
        ],
        "Gradients during training",
        "Gradient norm before clipping, and how often clipping fired",
    ),
)


def plot_over_num_steps(
    ctx: Context, path: Path, panels: list[tuple[str, str, bool]], title: str
) -> None:
    """Side-by-side panels of (metric, y label, log y) against num_steps, one line per family."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for ax, (metric, ylabel, logy) in zip(axes, panels, strict=True):
        for line in families(ctx.groups).values():
            ax.errorbar(
                [g.T for g in line],
                [g.mean[metric] for g in line],
                yerr=[g.std[metric] for g in line],
                fmt="-o",
                ms=4,
                capsize=3,
                label=ctx.name(line[0]),
            )
        _log2_axis(ax)
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("num_steps")
        ax.set_ylabel(ylabel)
        _legend(ax)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


# -- report.md ------------------------------------------------------------------------------------


def _fmt(g: Group, metric: str, digits: int = 3, pct: bool = False) -> str:
    if not g.n:
        return "diverged"
    m, s = g.mean[metric], g.std[metric]
    if not math.isfinite(m):
        return "n/a"
    if pct:
        return f"{m:.1%}" + (f" ± {s:.1%}" if g.n > 1 else "")
    if abs(m) >= 1000:
        return f"{m:,.0f}" + (f" ± {s:,.0f}" if g.n > 1 else "")
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if g.n > 1 else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _axis_cells(g: Group, axes: list[str]) -> list[str]:
    return [label(g, [a]) if a not in ("num_steps", "layers") else str(g.axes[a]) for a in axes]


def _preset(spec: dict[str, Any]) -> str:
    """The preset's own description and note, when this installation still knows it."""
    try:
        from rnnlab.presets import PRESETS
    except ImportError:
        return "."
    p = PRESETS.get(spec["preset"])
    return "." if p is None else f": {p.description}. {p.note}"


def describe_setup(data: SweepData, groups: list[Group]) -> list[str]:
    spec = data.spec
    grid, model, train, budget = spec["grid"], spec["model"], spec["train"], spec["budget"]
    n_settings = len(data.rows)
    embeds = {-1: "auto (one-hot up to 256 symbols)", 0: "one-hot"}
    shown = {**grid, "embed": [embeds.get(e, f"embedding {e}") for e in grid["embed"]]}
    axes_text = "; ".join(
        f"{a} {', '.join(map(str, shown[a]))}"
        for a in ("corpus", "cell", "layers", "impl", "embed", "sampling", "num_steps")
    )
    lines = [
        f"- Grid: {n_settings} runs = {axes_text}; {_count(grid['seeds'], 'seed')} each "
        f"(seed = {train['seed']} + seed index). Axes with one value are fixed.",
        f"- Model: hidden {model['hidden']}, dropout {model['dropout']}"
        + (", bidirectional" if model.get("bidirectional") else "")
        + "; parameters: "
        + ", ".join(sorted({f"{int(r['params']):,}" for r in data.rows}))
        + ".",
        f"- Training: {train['optimizer']} lr {train['lr']}, gradient clipped to norm "
        f"{train['clip']}, batch {train['batch_size']}, "
        + (
            "no learning-rate decay."
            if train["lr_decay"] == 1
            else f"lr x{train['lr_decay']} after an epoch that did not improve the held-out loss."
        ),
    ]
    chars = sorted({int(r["chars_trained"]) for r in data.rows if r.get("status", "ok") == "ok"})
    if budget["kind"] == "chars":
        exact = (
            f"every setting trained on exactly {chars[0]:,} characters"
            if len(chars) == 1
            else f"settings trained on {chars[0]:,} to {chars[-1]:,} characters (whole minibatches)"
            if chars
            else "no setting finished"
        )
        lines.append(
            f"- Budget: equal training characters, {int(budget['amount']):,} asked; {exact}."
        )
    elif budget["kind"] == "seconds":
        lines.append(
            f"- Budget: equal wall-clock, {budget['amount']:g} s per setting (evaluation at epoch "
            "ends included); characters trained differ, see Table 1."
        )
    else:
        lines.append(f"- Budget: {int(budget['amount'])} epochs per setting.")
    for corpus, d in data.data.items():
        lines.append(
            f"- Corpus {corpus}: vocabulary {d['vocab_size']}, {d['train_chars']:,} training and "
            f"{d['heldout_chars']:,} held-out characters."
        )
    lines += [
        "- Held-out figures are of the final weights on the held-out text, scored two ways: "
        "**carried** (one pass, the state carried through the whole text) and **reset** (the "
        "state reset to zero every num_steps characters, as random sampling trains). "
        "Training perplexity is the mean over the last epoch's worth of steps.",
        f"- Threads: {_count(spec['threads'], 'torch thread')} per setting.",
        "- Reproducibility: rerunning the command reproduces every column of results.csv except "
        "`time_*` and `mem_*` (wall-clock and memory vary between runs and machines).",
    ]
    if spec.get("preset"):
        lines.append(f"- Preset: `{spec['preset']}` supplies the base configuration{_preset(spec)}")
    base = ", ".join(f"{k} {v}" for k, v in spec["data"].items() if v not in (None, False))
    lines.append(f"- Data options: {base}.")
    return lines


def write_report(out: Path, data: SweepData) -> Path:
    """Write the plots and report.md into `out`; returns the report's path."""
    groups = aggregate(data.rows)
    positions: dict[str, dict[int, float]] = {}
    for r in data.positions:
        positions.setdefault(r["key"], {})[int(r["position"])] = float(r["loss"])
    gradflow: dict[str, dict[int, float]] = {}
    for r in data.gradflow:
        gradflow.setdefault(r["key"], {})[int(r["k"])] = float(r["norm"])
    ctx = Context(
        groups=groups,
        budget=data.spec["budget"],
        positions=positions,
        gradflow=gradflow,
        floors=data.floors,
        preset=data.spec.get("preset"),
    )
    several = len(data.spec["grid"]["corpus"]) > 1
    figures: list[tuple[str, str]] = []
    plot_heldout(ctx, out / HELDOUT_PNG, several)
    figures.append((HELDOUT_PNG, "Held-out loss against num_steps, mean ± std over seeds"))
    for sampling in data.spec["grid"]["sampling"]:
        name = POSITION_PNG.format(sampling=sampling)
        if plot_positions(ctx, sampling, out / name):
            figures.append((name, f"Loss by position inside the window ({sampling} sampling)"))
    if plot_gradflow(ctx, out / GRADFLOW_PNG):
        figures.append((GRADFLOW_PNG, "Gradient norm against distance (log scale)"))
    for name, panels, title, caption in PANELS:
        plot_over_num_steps(ctx, out / name, panels, title)
        figures.append((name, caption))

    varying = varying_axes(groups)
    axes = [a for a in varying if a != "num_steps"] + ["num_steps"]
    ordered = sorted(groups, key=lambda g: (g.family(), g.T))
    title = "Sweep" + (f" (preset {data.spec['preset']})" if data.spec.get("preset") else "")
    lines = [f"# {title}: {', '.join(data.spec['grid']['corpus'])}", ""]
    lines += ["Command (rerun it to reproduce every figure but the timing and memory ones):", ""]
    lines += ["```", data.command, "```", "", "## Setup", ""]
    lines += describe_setup(data, groups)
    lines += ["", "## Table 1: held-out and training figures (reproducible)", ""]
    seeds = data.spec["grid"]["seeds"]
    lines.append(
        f"Mean ± std over {seeds} seeds." if seeds > 1 else "One seed: no spread is measured."
    )
    lines.append("")
    header = axes + [
        "held-out ppl (carried)",
        "bpc (carried)",
        "held-out ppl (reset)",
        "bpc (reset)",
        "train ppl (final)",
        "chars trained",
        "steps",
        "grad norm",
        "clipped",
    ]
    rows = [
        _axis_cells(g, axes)
        + [
            _fmt(g, "heldout_carried_ppl"),
            _fmt(g, "heldout_carried_bpc"),
            _fmt(g, "heldout_reset_ppl"),
            _fmt(g, "heldout_reset_bpc"),
            _fmt(g, "train_final_ppl"),
            _fmt(g, "chars_trained", 0),
            _fmt(g, "steps", 0),
            _fmt(g, "grad_norm"),
            _fmt(g, "clip_fraction", pct=True),
        ]
        for g in ordered
    ]
    lines += _table(header, rows)
    lines += ["", "## Table 2: cost (timing and memory: these vary between runs)", ""]
    header = axes + ["chars/s", "training s", "setting s (all)", "peak RSS, MiB"]
    rows = [
        _axis_cells(g, axes)
        + [
            _fmt(g, "time_chars_per_s", 0),
            _fmt(g, "time_train_s", 1),
            _fmt(g, "time_setting_s", 1),
            _fmt(g, "mem_peak_rss_mib", 0),
        ]
        for g in ordered
    ]
    lines += _table(header, rows)
    lines += [
        "",
        "Training s counts optimizer steps only; setting s is the worker's whole life (data, "
        "training, per-epoch evaluation, checkpoints, the final measurements). Peak RSS is "
        "the high-water mark of the worker process that trained the setting (Python, torch and "
        "the data included); n/a when settings ran in one process (`--in-process`).",
    ]
    if several:
        lines += ["", "## Table 3: held-out bits/char (carried) by corpus and num_steps", ""]
        Ts = sorted({g.T for g in groups})
        other = [a for a in axes if a not in ("num_steps",)]
        by_fam = families(groups)
        rows = []
        for line in by_fam.values():
            cells = {g.T: _fmt(g, "heldout_carried_bpc") for g in line}
            rows.append(_axis_cells(line[0], other) + [cells.get(T, "") for T in Ts])
        lines += _table(other + [f"num_steps {T}" for T in Ts], rows)
    if data.floors:
        lines += ["", "## Table 4: measured held-out loss against the theoretical floor", ""]
        header = axes + ["carried, nats", "floor", "ratio", "reset, nats", "window floor", "ratio"]
        rows = []
        for g in ordered:
            fl = data.floors.get(g.axes["corpus"])
            if fl is None or not g.n:
                continue
            c, r = g.mean["heldout_carried_loss"], g.mean["heldout_reset_loss"]
            wf = fl["window"].get(str(g.T), math.nan)
            rows.append(
                _axis_cells(g, axes)
                + [
                    f"{c:.4f}",
                    f"{fl['floor']:.4f}",
                    f"{c / fl['floor']:.3f}",
                    f"{r:.4f}",
                    f"{wf:.4f}",
                    f"{r / wf:.3f}",
                ]
            )
        lines += _table(header, rows)
        lines += [
            "",
            "The floor is the best achievable loss knowing the task; the window floor the best "
            "with only num_steps characters of context from a zero state (what reset evaluation "
            "and random sampling allow).",
        ]
    diverged = [r["key"] for r in data.rows if r.get("status", "ok") != "ok"]
    if diverged:
        lines += ["", f"Diverged (NaN/inf; left out of the means): {', '.join(diverged)}."]
    lines += ["", "## Figures", ""]
    for name, caption in figures:
        lines += [f"**{name}**: {caption}.", "", f"![{caption}]({name})", ""]
    lines += ["## What the numbers show", ""]
    lines.append(
        "Each statement below is generated from the tables by a rule that states it only when "
        "the numbers support it; differences within the seed spread"
        + (" (with one seed: under 1%)" if seeds == 1 else "")
        + " are called no clear difference."
    )
    lines.append("")
    topic = None
    for c in discussion(ctx):
        if c.topic != topic:
            lines += ["", f"### {c.topic}", ""]
            topic = c.topic
        lines.append(f"- {c.text} ({c.evidence})")
    lines += [
        "",
        "## Files",
        "",
        "- `results.csv`: one row per run (seed); setting columns, then reproducible figures, "
        "then `time_*` and `mem_*` (vary between runs).",
        "- `positions.csv`: mean held-out loss (nats) by position inside the window, state reset.",
        "- `gradflow.csv`: ||dL/dh|| k steps back, models of the longest window.",
        "- `runs/KEY/`: each run's checkpoints, metrics.csv and steps.csv.",
        "",
    ]
    path = out / REPORT_FILE
    from rnnlab.checkpoint import write_atomic

    write_atomic(path, "\n".join(lines).encode("utf-8"))
    return path
