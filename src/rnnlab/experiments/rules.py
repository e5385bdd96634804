"""The discussion of report.md: small rules over the pooled results, one effect each.

Each rule looks at one effect (context, zero-state starts, optimizer steps per character,
gradient flow, cost per step, ...) and returns a claim only when the numbers support it, naming
the table or figure that shows it. "Clearly" means beyond the spread between seeds
(`report_data.compare`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rnnlab.experiments.report_data import (
    GROUP_AXES,
    ONE_SEED_REL_TOL,
    Context,
    Group,
    compare,
    families,
    label,
    mean_curve,
    trend,
    varying_axes,
)
from rnnlab.experiments.spec import AXES
from rnnlab.experiments.store import (
    COST_PNG,
    GRADFLOW_PNG,
    GRADIENTS_PNG,
    HELDOUT_PNG,
    POSITION_PNG,
)


@dataclass
class Claim:
    topic: str
    text: str
    evidence: str  # the table or figure that shows it


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
        curve = mean_curve(ctx.positions, g)
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


def rule_gradflow(ctx: Context) -> list[Claim]:
    """||dL/dh|| against distance for the longest window: vanishing or exploding gradients."""
    found = []
    for line in families(ctx.groups).values():
        g = line[-1]
        curve = mean_curve(ctx.gradflow, g)
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
