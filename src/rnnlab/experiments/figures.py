"""The PNG figures of a sweep's report, drawn from the pooled results (`report_data.Context`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rnnlab.experiments.report_data import Context, families, label, mean_curve
from rnnlab.experiments.store import (
    COST_PNG,
    GRADFLOW_PNG,
    GRADIENTS_PNG,
    HELDOUT_PNG,
    POSITION_PNG,
)
from rnnlab.plots import pyplot, save


def write_figures(ctx: Context, out: Path, grid: dict[str, Any]) -> list[tuple[str, str]]:
    """Draw every figure the results allow into `out`; returns (file name, caption) of each."""
    figures: list[tuple[str, str]] = []
    plot_heldout(ctx, out / HELDOUT_PNG, len(grid["corpus"]) > 1)
    figures.append((HELDOUT_PNG, "Held-out loss against num_steps, mean ± std over seeds"))
    for sampling in grid["sampling"]:
        name = POSITION_PNG.format(sampling=sampling)
        if plot_positions(ctx, sampling, out / name):
            figures.append((name, f"Loss by position inside the window ({sampling} sampling)"))
    if plot_gradflow(ctx, out / GRADFLOW_PNG):
        figures.append((GRADFLOW_PNG, "Gradient norm against distance (log scale)"))
    for name, panels, title, caption in PANELS:
        plot_over_num_steps(ctx, out / name, panels, title)
        figures.append((name, caption))
    return figures


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
    save(fig, path)
    plt.close(fig)


def plot_positions(ctx: Context, sampling: str, path: Path) -> bool:
    """Mean held-out loss at each position of a window (state reset), one line per num_steps."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for g in sorted(
        (g for g in ctx.groups if g.axes["sampling"] == sampling), key=lambda g: (g.family(), g.T)
    ):
        curve = mean_curve(ctx.positions, g)
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
    save(fig, path)
    plt.close(fig)
    return True


def plot_gradflow(ctx: Context, path: Path) -> bool:
    """||dL/dh|| against distance, log scale, for the longest window of each family."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for line in families(ctx.groups).values():
        g = line[-1]
        curve = mean_curve(ctx.gradflow, g)
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
    save(fig, path)
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
    save(fig, path)
    plt.close(fig)
