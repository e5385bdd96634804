"""Loss, perplexity and bits per character, and held-out evaluation with the state carried.

Perplexity is exp(total NLL / characters predicted), never an average of per-batch perplexities;
bits per character is the same NLL in base 2. Both describe one named text (train or held-out).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from rnnlab.model import RNNLM, eval_mode


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


PARALLEL_ROWS = 16  # streams scored side by side by `rnnlab train` and `rnnlab evaluate`
WARMUP = 256  # characters each stream but the first reads, unscored, before its own part


@torch.no_grad()
def evaluate(
    model: RNNLM, ids: torch.Tensor, chunk: int = 512, rows: int = 1, warmup: int = WARMUP
) -> Metrics:
    """Score every character of `ids` after the first, carrying the state along the text.

    With `rows` = 1 the text is one stream, scored exactly in order from a zero state. With
    `rows` > 1 it is cut into that many contiguous parts scored side by side, one batch row
    each (several times faster on a CPU). Every part but the first starts `warmup` characters
    early and reads them without scoring them, so its first scored character sees the same
    recent text the single stream would; only context further back than `warmup` is lost, which
    for character models changes the loss in the fourth or fifth decimal (tests/test_metrics.py,
    BENCHMARKS.md). Every prediction is scored exactly once either way.

    Shapes:
        ids: (N,) compact integer ids of one text.
    """
    return metrics_from_nll(*evaluate_nll(model, ids, chunk, rows, warmup))


@torch.no_grad()
def evaluate_nll(
    model: RNNLM,
    ids: torch.Tensor,
    chunk: int = 512,
    rows: int = 1,
    warmup: int = WARMUP,
    shard: tuple[int, int] = (0, 1),
) -> tuple[float, int]:
    """`evaluate`'s total NLL (nats) and the number of predictions it covers.

    `shard` = (r, N) scores only rows r, r+N, r+2N, ... (process r of N): the N totals add up to
    the whole text's, and the count is always the whole text's, so the processes of a
    distributed run all-reduce NLL sums, never averages.
    """
    if len(ids) < 2:
        raise ValueError("need at least two characters to score one prediction")
    device = model.output.weight.device
    n = len(ids) - 1  # predictions to score
    rows = max(1, min(rows, (n - warmup) // max(warmup, 1)))  # a part at least warmup long
    if rows == 1:
        warmup = 0
    # Row r reads ids[r*S : r*S + warmup + S] (row 0 scores all of it, the others its last S):
    # windows of width warmup + S with stride S cover predictions 0 .. warmup + rows*S - 1.
    S = -(-(n - warmup) // rows)  # ceil
    width = warmup + S
    padded = torch.zeros(rows * S + warmup + 1, dtype=torch.long, device=device)
    padded[: n + 1] = ids.long()
    X_all = padded[:-1].unfold(0, width, S)[:rows]  # (R, width)
    Y_all = padded[1:].unfold(0, width, S)[:rows].clone()  # (R, width)
    Y_all[1:, :warmup] = IGNORE  # read to warm the state up, scored by the row before
    position = torch.arange(rows, device=device)[:, None] * S + torch.arange(width, device=device)
    Y_all[position >= n] = IGNORE  # padding past the end of the text
    part, parts = shard
    if parts > 1:
        X_all, Y_all = X_all[part::parts], Y_all[part::parts]  # (R/N, width)
        if len(X_all) == 0:
            return 0.0, n
    total = 0.0
    with eval_mode(model):
        state = model.begin_state(X_all.shape[0])
        for i in range(0, width, chunk):
            logits, state = model(X_all[:, i : i + chunk], state)  # (R, t, V)
            Y = Y_all[:, i : i + chunk]
            total += F.cross_entropy(
                logits.flatten(0, 1), Y.flatten(), reduction="sum", ignore_index=IGNORE
            ).item()
    return total, n


IGNORE = -100  # target of a position that is read but not scored
