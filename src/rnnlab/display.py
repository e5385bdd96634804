"""The playground's pictures in a notebook: HTML and PNG, no server, no JavaScript.

    from rnnlab import display
    lm                                           # a LanguageModel shows as a table (_repr_html_)
    display.show_next(lm, "the tim")             # bars: the next-character distribution
    display.show_surprisal(lm, "the time machine")   # each character shaded by its surprisal
    display.show_units(lm, text, pattern="word_position")  # a hidden unit over the text
    display.show_training(lm)                    # loss/perplexity per epoch, train and held-out

Each `show_*` returns a `Picture`: Jupyter draws its HTML, a terminal prints a short text
summary, `.html` is the markup to save. The colours are the playground's (serve/static/app.js):
surprisal from white (expected) to red (as surprising as a blind guess among the whole
vocabulary); an activation from blue (negative) through white to red (positive); training curves
solid on the training text and dashed on the held-out text. The figures come from the
`LanguageModel`'s own methods (`next`, `score`, `alternatives`, `states`, `units`,
`training_log`), so they are the numbers the playground and the CLI show.

This module does not import `rnnlab.api` (it sits below it): it takes any object with those
methods. matplotlib is imported only by `show_training`, and never through pyplot, so a
notebook's own plotting backend is left alone.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rnnlab.errors import UsageError

METRICS = ("loss", "ppl", "bpc")
METRIC_LABELS = {
    "loss": "loss (nats/char)",
    "ppl": "perplexity",
    "bpc": "bits per character",
}
COLOURS = ("#2563eb", "#dc2626")  # the playground's two runs
MAX_CHARS = 5000  # characters drawn at most: a notebook cell is not a book
_VISIBLE = {" ": "\u2423", "\n": "\u23ce", "\t": "\u21e5"}
_MONO = "font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace"


@dataclass(frozen=True)
class Picture:
    """Something a notebook draws: HTML for Jupyter, a text summary everywhere else."""

    html: str
    text: str

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


# -- colours, as the playground computes them ------------------------------------------------------


def heat(t: float) -> str:
    """White (0) to red (1): the playground's surprisal colour for bits / log2 |V|."""
    x = max(0.0, min(1.0, t))
    return f"rgb(255, {round(255 - 190 * x)}, {round(255 - 200 * x)})"


def diverging(v: float) -> str:
    """Blue (-1), white (0), red (+1): the playground's activation colour."""
    x = max(-1.0, min(1.0, v))
    a = round(255 - 200 * abs(x))
    return f"rgb(255, {a}, {a})" if x >= 0 else f"rgb({a}, {a}, 255)"


def visible(c: str) -> str:
    """A character as it can be seen: a space, newline or tab would be invisible in a label."""
    return _VISIBLE.get(c, c)


def _char_span(c: str, style: str, title: str) -> str:
    """One character, coloured, with a tooltip; a newline also breaks the line."""
    shown = html.escape(visible(c) if c in "\n\t" else c)
    span = (
        f'<span style="background:{style};white-space:pre;padding:1px 0" '
        f'title="{html.escape(title)}">{shown}</span>'
    )
    return span + ("<br>" if c == "\n" else "")


def _check_text(text: str, what: str) -> None:
    if len(text) > MAX_CHARS:
        raise UsageError(
            f"{what} has {len(text):,} characters: show at most {MAX_CHARS:,} (take a slice)"
        )


def _box(title: str, body: str) -> str:
    return (
        f'<div class="rnnlab" style="margin:4px 0">'
        f'<div style="font-weight:600;margin-bottom:4px">{html.escape(title)}</div>{body}</div>'
    )


# -- the model ---------------------------------------------------------------------------------


def _best_epoch(log: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    rows = [r for r in log if isinstance(r.get("valid_loss"), int | float)]
    return min(rows, key=lambda r: r["valid_loss"]) if rows else None


def model_html(lm: Any) -> str:
    """A `LanguageModel` as a notebook shows it: what it is, and how well it predicts."""
    info = lm.describe()
    model = info["model"]
    shape = f"{model['cell']} {model['layers']} x {model['hidden']}"
    if model.get("bidirectional"):
        shape += ", bidirectional"
    rows = [
        ("run", info["name"]),
        ("network", f"{shape} ({model.get('impl', 'torch')})"),
        ("corpus", info["corpus"]),
        ("vocabulary", f"{info['vocab_size']:,} symbols"),
        ("parameters", f"{info['parameters']:,}"),
        ("device", str(lm.device)),
        ("checkpoint", info["checkpoint"] or "-"),
    ]
    best = _best_epoch(lm.training_log())
    if best is not None:
        rows.append(
            (
                "held-out",
                f"perplexity {best['valid_ppl']:.3f} ({best['valid_bpc']:.3f} bits/char), "
                f"best of {len(lm.training_log())} epochs at epoch {best['epoch']}",
            )
        )
    cells = "".join(
        f'<tr><th style="text-align:left;padding-right:1em">{html.escape(k)}</th>'
        f'<td style="text-align:left">{html.escape(str(v))}</td></tr>'
        for k, v in rows
    )
    return _box("LanguageModel", f"<table>{cells}</table>")


# -- next character ------------------------------------------------------------------------------


def show_next(lm: Any, prefix: str, k: int = 10) -> Picture:
    """The `k` likeliest next characters after `prefix`, as bars (the playground's first panel)."""
    _check_text(prefix, "the prefix")
    candidates = lm.next(prefix, k=k)
    rows = "".join(
        f'<tr><td style="{_MONO};padding-right:.6em">{html.escape(visible(c))}</td>'
        f'<td style="width:16em"><div style="background:{COLOURS[0]};height:.9em;'
        f'width:{max(p * 100, 0.5):.1f}%"></div></td>'
        f'<td style="{_MONO};padding-left:.6em">{p:.4f}</td></tr>'
        for c, p in candidates
    )
    title = f"after {prefix!r}: the {len(candidates)} likeliest next characters"
    text = f"{title}\n" + "\n".join(f"  {visible(c)!r:8} {p:.4f}" for c, p in candidates)
    return Picture(_box(title, f"<table>{rows}</table>"), text)


# -- surprisal -----------------------------------------------------------------------------------


def show_surprisal(lm: Any, text: str, k: int = 3) -> Picture:
    """Each character of `text` shaded by its surprisal, -log2 p(c_t | c_<t), in bits.

    White is expected, red as surprising as a blind guess among the whole vocabulary
    (log2 |V| bits); the first character is context only (grey). Hover a character for its bits
    and the `k` characters the model expected there.
    """
    _check_text(text, "the text")
    scores = lm.score(text)
    expected = lm.alternatives(text, k=k)
    blind = math.log2(len(lm.vocab))
    spans = [_char_span(text[0], "#e5e7eb", "context only")]
    for (c, bits), guesses in zip(scores, expected, strict=True):
        shown = "inf" if not math.isfinite(bits) else f"{bits:.3f}"
        tip = f"{c!r} {shown} bits; expected " + ", ".join(f"{g!r} {p:.3f}" for g, p in guesses)
        spans.append(_char_span(c, heat(bits / blind if math.isfinite(bits) else 1.0), tip))
    mean = sum(b for _, b in scores) / len(scores)
    worst = max(range(len(scores)), key=lambda i: scores[i][1])
    title = (
        f"surprisal: mean {mean:.3f} bits/char over {len(scores)} characters "
        f"(red = {blind:.2f} bits, a blind guess)"
    )
    summary = (
        f"{title}; most surprising {scores[worst][0]!r} after {text[: worst + 1]!r}: "
        f"{scores[worst][1]:.2f} bits"
    )
    body = f'<div style="{_MONO};line-height:1.6">{"".join(spans)}</div>'
    return Picture(_box(title, body), summary)


# -- hidden units --------------------------------------------------------------------------------


def show_units(
    lm: Any,
    text: str,
    layer: int | None = None,
    unit: int | None = None,
    pattern: str | Sequence[float] | None = None,
    regex: str | None = None,
    top: int = 5,
) -> Picture:
    """One hidden unit's activation after each character of `text`, as colours over the text.

    Give `layer` and `unit`, or a `pattern` (a name from `rnnlab.PATTERNS`, with `regex=` for
    "regex", or your own numbers) to rank the units by how well they track it (Pearson's r) and
    show the best one, or the one you name. Blue is negative, red positive, scaled by the largest
    |activation| (at least 1: a tanh unit stays in [-1, 1]). Where a yes/no pattern holds, the
    character is underlined.
    """
    _check_text(text, "the text")
    ranking = lm.units(text, pattern, regex=regex, top=top) if pattern is not None else []
    if (layer is None) != (unit is None):
        raise UsageError("give both layer and unit, or neither (with a pattern)")
    if layer is None:
        if not ranking:
            raise UsageError("give layer and unit, or a pattern to find the unit that tracks it")
        layer, unit = ranking[0].layer, ranking[0].unit
    states = lm.states(text)  # (T, L, H)
    _, L, H = states.shape
    if not (0 <= layer < L and 0 <= unit < H):
        raise UsageError(
            f"layer {layer} unit {unit} does not exist: layers 0-{L - 1}, units 0-{H - 1}"
        )
    values = states[:, layer, unit].tolist()
    scale = max(1.0, *(abs(v) for v in values))
    # Underline where a yes/no signal of your own holds (a count, like a position, would mark
    # everything; a named pattern's numbers live in rnnlab.api, which this module sits below).
    marks = None
    if pattern is not None and not isinstance(pattern, str):
        if all(v in (0, 1) for v in pattern):
            marks = [bool(v) for v in pattern]
    spans = []
    for i, (c, v) in enumerate(zip(text, values, strict=True)):
        span = _char_span(c, diverging(v / scale), f"{v:+.3f}")
        if marks is not None and marks[i]:
            span = f'<u style="text-decoration-thickness:2px">{span}</u>'
        spans.append(span)
    r = next((u.r for u in ranking if (u.layer, u.unit) == (layer, unit)), None)
    name = pattern if isinstance(pattern, str) else "your signal"
    named = f" ({name}: r = {r:+.3f})" if r is not None else ""
    title = f"layer {layer}, unit {unit}{named}: blue negative, red positive"
    body = f'<div style="{_MONO};line-height:1.6">{"".join(spans)}</div>'
    if ranking:
        rows = "".join(
            f"<tr><td>{u.layer}</td><td>{u.unit}</td><td>{u.r:+.3f}</td></tr>" for u in ranking
        )
        body += (
            '<table style="margin-top:4px"><tr><th>layer</th><th>unit</th><th>r</th></tr>'
            f"{rows}</table>"
        )
    listed = "; ".join(f"layer {u.layer} unit {u.unit} r={u.r:+.3f}" for u in ranking)
    summary = title + (f"\nranked: {listed}" if listed else "")
    return Picture(_box(title, body), summary)


# -- training curves -----------------------------------------------------------------------------


def _rows_of(source: Any) -> list[Mapping[str, Any]]:
    """metrics.csv rows from a LanguageModel, a TrainedRun (its .model) or the rows themselves."""
    if hasattr(source, "training_log"):
        return list(source.training_log())
    if hasattr(source, "model") and hasattr(source.model, "training_log"):
        return list(source.model.training_log())
    return list(source)


def training_figure(source: Any, metric: str = "ppl", title: str | None = None) -> Any:
    """A matplotlib Figure of `metric` per epoch: training text solid, held-out text dashed.

    Built without pyplot (no global figure, no backend switch); save it with `.savefig(path)`.
    """
    if metric not in METRICS:
        raise UsageError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    rows = _rows_of(source)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 3.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for part, style, label in (("train", "-", "training text"), ("valid", "--", "held-out text")):
        points = [
            (r["epoch"], r[f"{part}_{metric}"])
            for r in rows
            if isinstance(r.get(f"{part}_{metric}"), int | float)
            and math.isfinite(r[f"{part}_{metric}"])
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, style, color=COLOURS[0], marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(METRIC_LABELS[metric])
    if title:
        ax.set_title(title)
    if rows:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def png_bytes(fig: Any) -> bytes:
    """A figure as PNG bytes, without the matplotlib version stamp (the same bytes every run)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def show_training(source: Any, metric: str = "ppl", title: str | None = None) -> Picture:
    """The run's training curves (the playground's Training panel) from its metrics.csv.

    `source` is a `LanguageModel`, what `rnnlab.train` returns, or rows as `training_log()`
    gives them. `metric` is "loss", "ppl" or "bpc".
    """
    rows = _rows_of(source)
    if not rows:
        raise UsageError("this run has no training log (metrics.csv): nothing to draw")
    fig = training_figure(rows, metric, title)
    data = base64.b64encode(png_bytes(fig)).decode("ascii")
    last = rows[-1]
    summary = (
        f"{len(rows)} epochs; last: train {metric} {last.get(f'train_{metric}')}, "
        f"held-out {metric} {last.get(f'valid_{metric}')}"
    )
    img = f'<img alt="{html.escape(summary)}" src="data:image/png;base64,{data}">'
    return Picture(_box(title or f"training curves: {METRIC_LABELS[metric]}", img), summary)
