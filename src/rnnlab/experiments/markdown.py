"""report.md: the setup, tables that adapt to the axes that vary, the figures, the discussion.

`write_report` is the whole report: it pools the results (`report_data`), draws the figures
(`figures`), states what the numbers support (`rules`) and writes report.md beside them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rnnlab.checkpoint import write_atomic
from rnnlab.experiments.figures import write_figures
from rnnlab.experiments.report_data import (
    Context,
    Group,
    SweepData,
    context,
    families,
    label,
    varying_axes,
)
from rnnlab.experiments.rules import discussion
from rnnlab.experiments.store import REPORT_FILE
from rnnlab.presets import PRESETS


def write_report(out: Path, data: SweepData) -> Path:
    """Write the plots and report.md into `out`; returns the report's path."""
    ctx = context(data)
    figures = write_figures(ctx, out, data.spec["grid"])
    path = out / REPORT_FILE
    write_atomic(path, "\n".join(report_lines(data, ctx, figures)).encode("utf-8"))
    return path


def report_lines(data: SweepData, ctx: Context, figures: list[tuple[str, str]]) -> list[str]:
    """report.md, line by line: setup, Tables 1-4, figures, discussion, files."""
    groups = ctx.groups
    varying = varying_axes(groups)
    axes = [a for a in varying if a != "num_steps"] + ["num_steps"]
    ordered = sorted(groups, key=lambda g: (g.family(), g.T))
    seeds = data.spec["grid"]["seeds"]
    title = "Sweep" + (f" (preset {data.spec['preset']})" if data.spec.get("preset") else "")
    lines = [f"# {title}: {', '.join(data.spec['grid']['corpus'])}", ""]
    lines += ["Command (rerun it to reproduce every figure but the timing and memory ones):", ""]
    lines += ["```", data.command, "```", "", "## Setup", ""]
    lines += describe_setup(data, groups)
    lines += table_heldout(ordered, axes, seeds)
    lines += table_cost(ordered, axes)
    if len(data.spec["grid"]["corpus"]) > 1:
        lines += table_corpora(groups, axes)
    if data.floors:
        lines += table_floors(ordered, axes, data.floors)
    diverged = [r["key"] for r in data.rows if r.get("status", "ok") != "ok"]
    if diverged:
        lines += ["", f"Diverged (NaN/inf; left out of the means): {', '.join(diverged)}."]
    lines += ["", "## Figures", ""]
    for name, caption in figures:
        lines += [f"**{name}**: {caption}.", "", f"![{caption}]({name})", ""]
    lines += discussion_lines(ctx, seeds)
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
    return lines


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
    p = PRESETS.get(spec["preset"])
    return "." if p is None else f": {p.description}. {p.note}"


def count(n: int, noun: str) -> str:
    """ "1 seed", "2 seeds"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def describe_setup(data: SweepData, groups: list[Group]) -> list[str]:
    """The Setup section: grid, model, training, budget, corpora, how figures are measured."""
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
        f"- Grid: {n_settings} runs = {axes_text}; {count(grid['seeds'], 'seed')} each "
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
        f"- Threads: {count(spec['threads'], 'torch thread')} per setting.",
        "- Reproducibility: rerunning the command reproduces every column of results.csv except "
        "`time_*` and `mem_*` (wall-clock and memory vary between runs and machines).",
    ]
    if spec.get("preset"):
        lines.append(f"- Preset: `{spec['preset']}` supplies the base configuration{_preset(spec)}")
    base = ", ".join(f"{k} {v}" for k, v in spec["data"].items() if v not in (None, False))
    lines.append(f"- Data options: {base}.")
    return lines


def table_heldout(ordered: list[Group], axes: list[str], seeds: int) -> list[str]:
    """Table 1: held-out and training figures (a rerun reproduces them exactly)."""
    lines = ["", "## Table 1: held-out and training figures (reproducible)", ""]
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
    return lines + _table(header, rows)


def table_cost(ordered: list[Group], axes: list[str]) -> list[str]:
    """Table 2: speed and memory (these vary between runs)."""
    lines = ["", "## Table 2: cost (timing and memory: these vary between runs)", ""]
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
    return lines


def table_corpora(groups: list[Group], axes: list[str]) -> list[str]:
    """Table 3 (several corpora): held-out bits/char by corpus and num_steps."""
    lines = ["", "## Table 3: held-out bits/char (carried) by corpus and num_steps", ""]
    Ts = sorted({g.T for g in groups})
    other = [a for a in axes if a not in ("num_steps",)]
    by_fam = families(groups)
    rows = []
    for line in by_fam.values():
        cells = {g.T: _fmt(g, "heldout_carried_bpc") for g in line}
        rows.append(_axis_cells(line[0], other) + [cells.get(T, "") for T in Ts])
    lines += _table(other + [f"num_steps {T}" for T in Ts], rows)
    return lines


def table_floors(
    ordered: list[Group], axes: list[str], floors: dict[str, dict[str, Any]]
) -> list[str]:
    """Table 4 (memory corpora): the measured held-out loss against the theoretical floors."""
    lines = ["", "## Table 4: measured held-out loss against the theoretical floor", ""]
    header = axes + ["carried, nats", "floor", "ratio", "reset, nats", "window floor", "ratio"]
    rows = []
    for g in ordered:
        fl = floors.get(g.axes["corpus"])
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
    return lines


def discussion_lines(ctx: Context, seeds: int) -> list[str]:
    """The rule-generated discussion, one section per topic."""
    lines = ["## What the numbers show", ""]
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
    return lines
