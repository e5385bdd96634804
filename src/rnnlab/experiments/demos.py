"""Small worked examples printed step by step, for ``rnnlab demo ...``.

The simple recurrent network (SRN) example is the course's hand calculation: two inputs, two
hidden units, two outputs, every weight 1, every bias 0, inputs [1,1], [1,1], [2,2] from a zero
state. Computing it three ways (numpy by hand, a loop over ``nn.RNNCell``, one ``nn.RNN`` call)
and printing the steps side by side shows that the library's fused RNN is the same recurrence a
student can do on paper.

The BPTT example trains each cell briefly and measures how far back its gradient reaches: the
norm of dL/dh_t against the distance to the loss (`rnnlab.gradflow`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rnnlab.corpus import DataConfig
from rnnlab.data import prepare_data
from rnnlab.errors import UsageError
from rnnlab.gradflow import gradflow_windows, hidden_grad_norms
from rnnlab.model import ModelConfig
from rnnlab.numpy_rnn import ACTIVATIONS, worked_example
from rnnlab.plots import pyplot
from rnnlab.training.config import TrainConfig
from rnnlab.training.lm import LanguageModelRecipe
from rnnlab.training.start import open_run

# torch's RNNs offer only tanh and relu. For the identity we use relu: relu(a) = a whenever
# a >= 0, and in this example every pre-activation is >= 0 (non-negative inputs and weights,
# zero biases and initial state), so relu computes the identity exactly. The three-way agreement
# check below would expose it if that ever stopped being true.
_TORCH_NONLINEARITY = {"identity": "relu", "tanh": "tanh"}
_RELU_NOTE = (
    "torch has no identity RNN, so the torch columns use nonlinearity='relu': relu(a) = a for\n"
    "a >= 0, and here every pre-activation is >= 0 (non-negative inputs and weights, zero biases\n"
    "and initial state), so relu is the identity on this example."
)


def _ones_linear(layer: nn.Module) -> nn.Module:
    """Set every weight of a torch layer to 1 and every bias to 0, as in the worked example."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.fill_(1.0 if name.startswith("weight") else 0.0)
    return layer


def _torch_rnncell_loop(X: torch.Tensor, nonlinearity: str) -> tuple[np.ndarray, np.ndarray]:
    """States and outputs from a Python loop over ``nn.RNNCell``; ``X: (T, 2)``."""
    cell = _ones_linear(nn.RNNCell(2, 2, nonlinearity=nonlinearity, dtype=torch.float64))
    out = _ones_linear(nn.Linear(2, 2, dtype=torch.float64))
    h = torch.zeros(1, 2, dtype=torch.float64)  # (B=1, H)
    states, outputs = [], []
    with torch.no_grad():
        for x in X:
            h = cell(x[None], h)  # (1, H)
            states.append(h[0])
            outputs.append(out(h)[0])
    return torch.stack(states).numpy(), torch.stack(outputs).numpy()


def _torch_rnn_call(X: torch.Tensor, nonlinearity: str) -> tuple[np.ndarray, np.ndarray]:
    """States and outputs from one ``nn.RNN`` call plus ``nn.Linear`` on every step."""
    rnn = _ones_linear(
        nn.RNN(2, 2, nonlinearity=nonlinearity, batch_first=True, dtype=torch.float64)
    )
    out = _ones_linear(nn.Linear(2, 2, dtype=torch.float64))
    with torch.no_grad():
        states, _ = rnn(X[None])  # (1, T, H): nn.RNN returns every step's state as its output
        outputs = out(states)  # (1, T, V)
    return states[0].numpy(), outputs[0].numpy()


def _fmt(v: np.ndarray) -> str:
    return "[" + ", ".join(f"{x:.6g}" for x in v) + "]"


def _ascii_table(header: list[str], groups: list[list[list[str]]]) -> str:
    """A plain ASCII table; each group of rows (one time step) is closed by a rule."""
    rows = [row for group in groups for row in group]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(row: list[str]) -> str:
        return "|" + "|".join(f" {c:<{w}} " for c, w in zip(row, widths, strict=True)) + "|"

    out = [rule, line(header), rule]
    for group in groups:
        out += [line(r) for r in group] + [rule]
    return "\n".join(out)


def srn_demo(activation: str = "identity") -> tuple[str, bool]:
    """Compute the SRN worked example three ways and lay the steps side by side.

    Args:
        activation: "identity" (the hand calculation: outputs 4, 12, 32) or "tanh".

    Returns:
        ``(text, agree)``: the printable report, and whether numpy, the ``nn.RNNCell`` loop and
        the ``nn.RNN`` call give the same states and outputs (``np.allclose``, atol 1e-6).

    Raises:
        UsageError: for an activation other than "identity" or "tanh".
    """
    if activation not in ACTIVATIONS:
        raise UsageError(
            f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
        )
    nonlinearity = _TORCH_NONLINEARITY[activation]
    X, H_np, Y_np = worked_example(activation)  # each (T, 2)
    X_t = torch.from_numpy(X)
    results = {
        "numpy": (H_np, Y_np),
        "nn.RNNCell loop": _torch_rnncell_loop(X_t, nonlinearity),
        "nn.RNN call": _torch_rnn_call(X_t, nonlinearity),
    }
    agree = all(
        np.allclose(H, H_np, rtol=0, atol=1e-6) and np.allclose(Y, Y_np, rtol=0, atol=1e-6)
        for H, Y in results.values()
    )

    groups = []
    for t in range(len(X)):
        group = []
        for i, (impl, (H, Y)) in enumerate(results.items()):
            h_prev = H[t - 1] if t > 0 else np.zeros(H.shape[1])
            step = str(t + 1) if i == 0 else ""
            group.append([step, impl, _fmt(X[t]), _fmt(h_prev), _fmt(H[t]), _fmt(Y[t])])
        groups.append(group)
    table = _ascii_table(["step", "implementation", "x_t", "h_{t-1}", "h_t", "y_t"], groups)

    lines = [
        f"Simple recurrent network, worked example (activation: {activation})",
        "  h_t = f(W_xh x_t + W_hh h_{t-1} + b_h)    y_t = W_hy h_t + b_y",
        "  W_xh = W_hh = W_hy = [[1, 1], [1, 1]]    b_h = b_y = [0, 0]    h_0 = [0, 0]",
        "",
        "  numpy           : rnnlab.numpy_rnn.srn_forward, the recurrence written out by hand",
        f"  nn.RNNCell loop : a Python loop over nn.RNNCell(2, 2, nonlinearity={nonlinearity!r}),"
        " then nn.Linear(2, 2)",
        f"  nn.RNN call     : nn.RNN(2, 2, nonlinearity={nonlinearity!r}) over the whole sequence,"
        " then nn.Linear(2, 2)",
    ]
    if activation == "identity":
        lines += ["", _RELU_NOTE]
    lines += ["", table, "", f"all three agree (atol 1e-6): {'yes' if agree else 'NO'}"]
    return "\n".join(lines), agree


def bptt_demo(
    cells: tuple[str, ...] = ("rnn", "gru", "lstm"),
    seconds: float = 20.0,
    hidden: int = 128,
    num_steps: int = 64,
    seed: int = 0,
    plot: str | None = None,
) -> tuple[str, dict[str, list[float]]]:
    """Train each cell briefly on `timemachine`, then measure ||dL/dh_t|| back through time.

    Returns the printed table and, per cell, the norms at distances 1 .. num_steps - 1.
    """
    data = prepare_data(DataConfig(corpus="timemachine"))
    windows = gradflow_windows(data.valid_ids, num_steps, count=32, seed=seed)  # held-out
    if windows is None:
        raise UsageError(
            f"demo bptt: --num-steps {num_steps} is longer than the held-out text "
            f"({len(data.valid_ids):,} characters)"
        )
    X, Y = windows  # (32, T)
    curves: dict[str, list[float]] = {}
    ppl: dict[str, float] = {}
    for cell in cells:
        model_cfg = ModelConfig(cell=cell, hidden=hidden, dropout=0.0)
        cfg = TrainConfig(num_steps=num_steps, epochs=1000, max_time=seconds, seed=seed)
        recipe = LanguageModelRecipe(DataConfig(corpus="timemachine"), model_cfg, cfg, data)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = open_run(recipe, Path(tmp), force=True, log=lambda s: None)
            ppl[cell] = trainer.fit().valid.ppl
        model = trainer.model
        curves[cell] = hidden_grad_norms(model, X, Y).tolist()
    distances = [d for d in (1, 2, 4, 8, 16, 32, 48, 63, 127) if d < num_steps]
    header = ["k steps back"] + [f"{c} (ppl {ppl[c]:.2f})" for c in cells]
    rows = [[str(d)] + [f"{curves[c][d - 1]:.2e}" for c in cells] for d in distances]
    rows.append(
        [f"ratio {distances[-1]}/1"]
        + [f"{curves[c][distances[-1] - 1] / curves[c][0]:.1e}" for c in cells]
    )
    lines = [
        f"||dL/dh_(T-k)|| for the loss of one prediction, mean over 32 held-out windows of "
        f"{num_steps} characters;",
        f"each model trained {seconds:g} s on timemachine (hidden {hidden}, num_steps {num_steps}, "
        "held-out perplexity in brackets).",
        "",
        _ascii_table(header, [rows]),
    ]
    if plot:
        _plot_curves(curves, plot, num_steps)
        lines.append(f"plot written to {plot}")
    return "\n".join(lines), curves


def _plot_curves(curves: dict[str, list[float]], path: str, num_steps: int) -> None:
    """The norms against k, one line per cell, log scale; the format follows `path`'s suffix."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for cell, norms in curves.items():
        ax.semilogy(range(1, len(norms) + 1), norms, label=cell.upper())
    ax.set_xlabel("k: steps between the state and the prediction")
    ax.set_ylabel("||dL / dh_(T-k)||")
    ax.set_title(f"Gradient flow through time (window {num_steps})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
