"""Loss, perplexity and bits per character, and held-out evaluation with the state carried.

Perplexity is exp(total NLL / characters predicted), never an average of per-batch perplexities;
bits per character is the same NLL in base 2. Both describe one named text (train or held-out).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from rnnlab.model import RNNLM


@dataclass(frozen=True)
class Metrics:
    loss: float  # mean NLL per character, in nats
    ppl: float  # perplexity, exp(loss)
    bpc: float  # bits per character, loss / ln 2
    chars: int  # characters predicted

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def perplexity(loss: float) -> float:
    """exp(loss), but inf instead of an OverflowError for a diverged model."""
    return math.exp(loss) if loss < 709.0 else math.inf  # exp overflows float64 above ~709.78


def metrics_from_nll(total_nll: float, chars: int) -> Metrics:
    """The one place the three figures are computed."""
    if chars <= 0:
        raise ValueError("no characters to score")
    loss = total_nll / chars
    return Metrics(loss=loss, ppl=perplexity(loss), bpc=loss / math.log(2), chars=chars)


@torch.no_grad()
def evaluate(model: RNNLM, ids: torch.Tensor, chunk: int = 512, rows: int = 1) -> Metrics:
    """Score every character of `ids` after the first, in order, carrying the state throughout.

    `rows` > 1 splits the text into that many contiguous streams scored in parallel (faster,
    at the cost of `rows - 1` extra cold starts); the default scores one stream exactly.

    Shapes:
        ids: (N,) compact integer ids of one text.
    """
    if len(ids) < 2:
        raise ValueError("need at least two characters to score one prediction")
    was_training = model.training
    model.eval()
    try:
        n = (len(ids) - 1) // rows * rows  # predictions we score, divisible into the rows
        X_all = ids[:n].view(rows, -1).long()  # (R, n/R)
        Y_all = ids[1 : n + 1].view(rows, -1).long()  # (R, n/R)
        state = model.begin_state(rows)
        total = 0.0
        for i in range(0, X_all.shape[1], chunk):
            logits, state = model(X_all[:, i : i + chunk], state)  # (R, t, V)
            Y = Y_all[:, i : i + chunk]
            total += F.cross_entropy(logits.flatten(0, 1), Y.flatten(), reduction="sum").item()
        return metrics_from_nll(total, n)
    finally:
        model.train(was_training)
