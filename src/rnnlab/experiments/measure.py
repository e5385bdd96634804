"""How every setting of a sweep is measured: the same measurements for each, so they compare.

    held-out loss, state carried through the whole text   (`metrics.evaluate`)
    held-out loss, state reset every num_steps            (`evaluate_windows`, with the mean
                                                           loss at each position of a window)
    ||dL/dh|| k steps back, on fixed held-out windows     (`gradient_flow`, longest window only)
    optimizer steps, mean gradient norm before clipping, how often clipping fired,
    final training perplexity (`step_figures`), seconds of training (`training_seconds`),
    peak memory of the process that trained it (`peak_rss_mib`)

The training figures come from the run's logs (steps.csv, metrics.csv), which survive resumes:
a setting continued from a checkpoint is measured like one never interrupted.

The held-out measurements run on the model's device (ids on another device are moved there
once); per-position sums are kept in float64 on the CPU, one transfer per forward pass.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from rnnlab import checkpoint as ckpt
from rnnlab.gradflow import gradflow_windows, hidden_grad_norms
from rnnlab.metrics import Metrics, evaluate, metrics_from_nll
from rnnlab.model import RNNLM, eval_mode
from rnnlab.training import TrainConfig, Trainer, read_step_rows

GRADFLOW_WINDOWS = 32  # held-out windows averaged in the gradient-flow measurement
GRADFLOW_SEED = 0  # the same windows for every setting, so the curves compare the models only
EVAL_CHARS_PER_BATCH = 1 << 16  # reset evaluation: windows per forward pass x num_steps


def heldout_figures(
    model: RNNLM, ids: torch.Tensor, num_steps: int
) -> tuple[dict[str, float], list[float]]:
    """Held-out loss, perplexity and bits/char, state carried and reset; the per-position loss."""
    carried = evaluate(model, ids)
    reset, per_position = evaluate_windows(model, ids, num_steps)
    return heldout_columns(carried, reset), per_position.tolist()


def heldout_columns(carried: Metrics, reset: Metrics) -> dict[str, float]:
    """The `heldout_{carried,reset}_{loss,ppl,bpc}` columns of results.csv."""
    row: dict[str, float] = {}
    for name, m in (("carried", carried), ("reset", reset)):
        row.update(
            {
                f"heldout_{name}_loss": m.loss,
                f"heldout_{name}_ppl": m.ppl,
                f"heldout_{name}_bpc": m.bpc,
            }
        )
    return row


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
        ids: (N,) compact integer ids of one text, on any device (moved to the model's).
    """
    if len(ids) < 2:
        raise ValueError("need at least two characters to score one prediction")
    ids = ids.to(model.output.weight.device)
    T = num_steps
    n = len(ids) - 1  # predictions
    full = n // T  # complete windows
    sums = torch.zeros(T, dtype=torch.float64)
    counts = torch.zeros(T, dtype=torch.float64)
    with eval_mode(model):
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
    metrics = metrics_from_nll(float(sums.sum()), n)
    return metrics, sums / counts  # positions no window reaches (a text shorter than T): nan


def window_nll(model: RNNLM, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Per-character NLL of windows each started from a zero state: (R, t) -> (R, t), float64
    on the CPU (MPS has no float64; the sums are the CPU's whatever the device)."""
    logits, _ = model(X, model.begin_state(X.shape[0]))  # (R, t, V)
    nll = F.cross_entropy(logits.flatten(0, 1), Y.flatten(), reduction="none")  # (R*t,)
    return nll.view(X.shape).cpu().double()


def gradient_flow(model: RNNLM, ids: torch.Tensor, num_steps: int) -> list[float] | None:
    """||dL/dh|| k = 1 .. num_steps - 1 steps back, mean over the fixed held-out windows.

    None when the text is too short for a window of `num_steps`. The windows are drawn on the
    CPU (a CPU generator: the same windows on every device) and then moved to the model's device.
    """
    windows = gradflow_windows(ids.cpu(), num_steps, GRADFLOW_WINDOWS, GRADFLOW_SEED)
    if windows is None:
        return None
    device = model.output.weight.device
    X, Y = (w.to(device) for w in windows)  # (W, T) each
    return hidden_grad_norms(model, X, Y).tolist()


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
