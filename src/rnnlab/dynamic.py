"""Dynamic evaluation: the model keeps learning from the text while it is scored on it.

Krause et al. 2018, "Dynamic Evaluation of Neural Sequence Models" (arXiv:1709.07432; the rule
follows benkrause/dynamic-evaluation's `dynamiceval.py`). The text is read at batch 1 in
consecutive segments, the state carried. Each segment is first *scored* with the weights as they
stand, then the model takes one step on that segment's loss:

    theta <- theta + lambda * decrate * (theta0 - theta) - eta * g / (rms + eps)

`g` is the gradient of the segment's mean loss; `rms` = sqrt(mean g^2), each parameter's root
mean square gradient over training batches ("MS" in the paper), so the step is RMS-normalised
like RMSprop's, with statistics fixed before the walk; `decrate` = rms / (the mean over parameter
tensors of their mean rms), clipped to at most 1/lambda so the pull back towards the trained
weights `theta0` never overshoots them. Recent text (a speaker's name, a rare word) becomes
likelier for a while, and the weights relax back to the trained ones when it stops recurring.

It stays a fair sequential prediction because a character's loss is added to the score *before*
any update that has seen it: each prediction uses only the text before it, as the static figure
does; the model merely uses that text twice, as context and as training data. It is still a
different protocol from the static figure (`rnnlab.metrics.evaluate`), so it is always reported
beside that one, never instead of it. Its two settings, eta and lambda, are tuned on the last
`tune_chars` characters of the run's *training* text, never on the text being reported.

The walk runs on a deep copy of the model: the model passed in (and the run on disk) never
changes.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from rnnlab.corpus import DataConfig
from rnnlab.data import prepare_data
from rnnlab.errors import UsageError
from rnnlab.metrics import PARALLEL_ROWS, Metrics, evaluate, metrics_from_nll
from rnnlab.model import RNNLM, detach_state, eval_mode
from rnnlab.vocab import Vocab

GRID_STEP = 3.0  # the tuning grid's settings are eta and lambda times powers of this


@dataclass
class DynamicConfig:
    """The settings of dynamic evaluation and of the tuning of eta and lambda on training text."""

    eta: float = field(
        default=2e-4,
        metadata={"help": "dynamic evaluation: learning rate eta (the centre of the tuning grid)"},
    )
    decay: float = field(
        default=5e-3,
        metadata={
            "help": "dynamic evaluation: decay lambda towards the trained weights per segment "
            "(the centre of the tuning grid)"
        },
    )
    segment: int = field(
        default=50,
        metadata={"help": "dynamic evaluation: characters scored between two updates"},
    )
    eps: float = field(
        default=2e-5,
        metadata={"help": "dynamic evaluation: added to the RMS gradient before dividing by it"},
    )
    stats_batches: int = field(
        default=100,
        metadata={"help": "dynamic evaluation: training batches the RMS gradients are measured on"},
    )
    stats_rows: int = field(
        default=32,
        metadata={"help": "dynamic evaluation: rows of each gradient-statistics batch"},
    )
    tune_chars: int = field(
        default=10_000,
        metadata={
            "help": "dynamic evaluation: eta and lambda are tuned on the last N characters of "
            "the training text"
        },
    )
    grid: int = field(
        default=3,
        metadata={
            "help": f"dynamic evaluation: settings per axis of the tuning grid (eta and lambda "
            f"times powers of {GRID_STEP:g}); 1 uses --eta and --decay as given"
        },
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "dynamic evaluation: where in the training text the statistics batches start"
        },
    )

    def __post_init__(self) -> None:
        if not (math.isfinite(self.eta) and self.eta >= 0.0):
            raise UsageError(f"--eta must be a number of 0 or more, got {self.eta}")
        if not 0.0 <= self.decay <= 1.0:
            raise UsageError(f"--decay (lambda) must be between 0 and 1, got {self.decay}")
        if self.segment < 1:
            raise UsageError(f"--segment must be at least 1 character, got {self.segment}")
        if not (math.isfinite(self.eps) and self.eps > 0.0):
            raise UsageError(f"--eps must be a number above 0, got {self.eps}")
        if self.stats_batches < 1:
            raise UsageError(f"--stats-batches must be at least 1, got {self.stats_batches}")
        if self.stats_rows < 1:
            raise UsageError(f"--stats-rows must be at least 1, got {self.stats_rows}")
        if self.tune_chars < 2:
            raise UsageError(f"--tune-chars must be at least 2, got {self.tune_chars}")
        if self.grid < 1:
            raise UsageError(f"--grid must be at least 1, got {self.grid}")
        if self.grid > 1 and (self.eta == 0.0 or self.decay == 0.0):
            raise UsageError(
                "--grid scales --eta and --decay, so both must be above 0: pass --grid 1 to use "
                "them as given"
            )

    def candidates(self) -> list[tuple[float, float]]:
        """The (eta, lambda) pairs tried: a log-spaced grid centred on (eta, decay)."""
        powers = [GRID_STEP ** (i - (self.grid - 1) / 2) for i in range(self.grid)]
        return [(self.eta * a, min(1.0, self.decay * b)) for a in powers for b in powers]


# -- the walk -----------------------------------------------------------------------------------

Update = Callable[[RNNLM], None]  # called after each segment's backward, the gradients in .grad


def score_then_update(
    model: RNNLM, ids: torch.Tensor, segment: int, update: Update
) -> tuple[float, int]:
    """Read `ids` at batch 1, state carried: score each segment, then let `update` learn from it.

    Returns the total NLL (nats) of every character after the first, each scored exactly once
    and before `update` has seen it, and the number of characters scored. A total that stops
    being finite (a diverging update) ends the walk early with inf.

    Shapes:
        ids: (N,) compact integer ids of one text.
    """
    if len(ids) < 2:
        raise UsageError("text is too short to evaluate: it needs at least two characters")
    device = model.output.weight.device
    ids = ids.to(device=device, dtype=torch.long)
    n = len(ids) - 1
    total = 0.0
    with eval_mode(model), torch.enable_grad():  # no dropout, but gradients even under no_grad
        state = model.begin_state(1)
        for start in range(0, n, segment):
            end = min(start + segment, n)
            X = ids[start:end].unsqueeze(0)  # (1, t)
            Y = ids[start + 1 : end + 1]  # (t,)
            model.zero_grad(set_to_none=True)
            logits, state = model(X, state)  # (1, t, V), from the weights before any update
            nll = F.cross_entropy(logits[0], Y, reduction="sum")
            total += nll.item()  # the score: these characters are counted before they are learnt
            if not math.isfinite(total):
                return math.inf, n
            (nll / len(Y)).backward()
            update(model)
            state = detach_state(state)
    model.zero_grad(set_to_none=True)
    return total, n


def gradient_rms(
    model: RNNLM, train_ids: torch.Tensor, config: DynamicConfig
) -> list[torch.Tensor]:
    """Each parameter's root mean square gradient over `stats_batches` training batches.

    The training text is laid out as `stats_rows` contiguous streams (the first `stats_rows`
    rows of a sequential partition) read in segments of `segment` characters with the state
    carried; the batches are consecutive, starting at a segment picked by `seed` so that they
    fit. Gradients are of each batch's mean loss, with dropout off, as in the walk.
    """
    device = model.output.weight.device
    ids = train_ids.to(device=device, dtype=torch.long)
    n = len(ids) - 1
    if n < 1:
        raise UsageError("the training text is too short to measure gradients on")
    seg = config.segment
    B = max(1, min(config.stats_rows, n // seg))
    cols = n // B  # predictions per row
    X_all = ids[: B * cols].view(B, cols)  # (B, cols)
    Y_all = ids[1 : B * cols + 1].view(B, cols)  # (B, cols)
    segments = -(-cols // seg)
    batches = min(config.stats_batches, segments)
    g = torch.Generator().manual_seed(config.seed)
    first = int(torch.randint(segments - batches + 1, (1,), generator=g))
    params = list(model.parameters())
    sq = [torch.zeros_like(p) for p in params]
    with eval_mode(model), torch.enable_grad():
        state = model.begin_state(B)
        for k in range(first, first + batches):
            X, Y = X_all[:, k * seg : (k + 1) * seg], Y_all[:, k * seg : (k + 1) * seg]  # (B, t)
            logits, state = model(X, state)  # (B, t, V)
            loss = F.cross_entropy(logits.flatten(0, 1), Y.flatten())
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for s, gr in zip(sq, grads, strict=True):
                if gr is not None:
                    s.add_(gr.detach() ** 2)
            state = detach_state(state)
    return [(s / batches).sqrt() for s in sq]


class RmsUpdate:
    """Krause's rule: theta += lambda * decrate * (theta0 - theta) - eta * g / (rms + eps).

    Built on the model it will update, whose weights at that moment are theta0.
    """

    def __init__(
        self, model: RNNLM, rms: list[torch.Tensor], eta: float, decay: float, eps: float
    ) -> None:
        self.eta, self.decay, self.eps = eta, decay, eps
        self.rms = rms
        self.theta0 = [p.detach().clone() for p in model.parameters()]
        mean = torch.stack([r.mean() for r in rms]).mean().clamp_min(1e-30)  # Krause's gsum
        decrate = [r / mean for r in rms]
        if decay > 0:  # lambda * decrate <= 1: the decay never overshoots theta0
            decrate = [d.clamp(max=1.0 / decay) for d in decrate]
        self.decrate = decrate

    @torch.no_grad()
    def __call__(self, model: RNNLM) -> None:
        parts = zip(model.parameters(), self.theta0, self.rms, self.decrate, strict=True)
        for p, p0, r, d in parts:
            step = self.decay * d * (p0 - p)
            if p.grad is not None:
                step -= self.eta * p.grad / (r + self.eps)
            p.add_(step)


def dynamic_nll(
    model: RNNLM,
    ids: torch.Tensor,
    rms: list[torch.Tensor],
    eta: float,
    decay: float,
    config: DynamicConfig,
) -> tuple[float, int]:
    """The dynamic total NLL of `ids` with one (eta, lambda), on a copy of `model`."""
    adapted = copy.deepcopy(model)
    rule = RmsUpdate(adapted, rms, eta, decay, config.eps)
    return score_then_update(adapted, ids, config.segment, rule)


def dynamic_evaluate(
    model: RNNLM, ids: torch.Tensor, rms: list[torch.Tensor], config: DynamicConfig
) -> Metrics:
    """The dynamic figure of `ids` with `config.eta` and `config.decay` as given (no tuning)."""
    _check_model(model)
    return metrics_from_nll(*dynamic_nll(model, ids, rms, config.eta, config.decay, config))


# -- tuning on training text, then the figure on the reported text ------------------------------


@dataclass(frozen=True)
class GridPoint:
    eta: float
    decay: float  # lambda
    loss: float  # dynamic loss (nats/char) on the tuning slice of the training text


@dataclass(frozen=True)
class DynamicReport:
    """Both figures on the reported text, and how the dynamic one's settings were chosen."""

    static: Metrics  # `rnnlab.metrics.evaluate`: fixed weights, state carried
    dynamic: Metrics  # the weights adapting, each character scored before it is learnt
    eta: float  # the chosen pair
    decay: float  # lambda
    tuned_on: tuple[int, int]  # [start, end) of the training text the pair was chosen on
    stats_on: tuple[int, int]  # [start, end) of the training text the RMS gradients came from
    tuning_static: float  # static loss of the tuning slice (nats/char)
    grid: tuple[GridPoint, ...]  # every pair tried, in order
    segment: int
    seconds: float  # statistics, tuning and the dynamic pass (not the static one)

    def at_edge(self) -> list[str]:
        """The settings ("eta", "lambda") whose chosen value is the grid's smallest or largest.

        A best value on the edge means the best one may lie outside the grid: search around it.
        """
        out = []
        for name, chosen, values in (
            ("eta", self.eta, {p.eta for p in self.grid}),
            ("lambda", self.decay, {p.decay for p in self.grid}),
        ):
            if len(values) > 2 and chosen in (min(values), max(values)):
                out.append(name)
        return out

    def dynamic_dict(self) -> dict[str, Any]:
        """The `dynamic` entry of `rnnlab evaluate --dynamic --json`."""
        return {
            **self.dynamic.to_dict(),
            "eta": self.eta,
            "lambda": self.decay,
            "segment": self.segment,
            "tuned_on": {"text": "train", "start": self.tuned_on[0], "end": self.tuned_on[1]},
            "stats_on": {"text": "train", "start": self.stats_on[0], "end": self.stats_on[1]},
            "tuning_static_loss": self.tuning_static,
            "grid": [{"eta": p.eta, "lambda": p.decay, "loss": p.loss} for p in self.grid],
            "seconds": self.seconds,
        }

    def to_dict(self) -> dict[str, Any]:
        """The static figures at the top level (as plain `evaluate`), the dynamic ones apart."""
        return {**self.static.to_dict(), "dynamic": self.dynamic_dict()}


def tuning_slices(n: int, config: DynamicConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """Which characters of a training text of `n` tune eta and lambda, and which give the RMS.

    Tuning: the last `tune_chars` (all of it if shorter). Statistics: everything before that
    slice, or the whole text when nothing is left before it.
    """
    tune = (max(0, n - config.tune_chars), n)
    stats = (0, tune[0]) if tune[0] >= 2 else (0, n)
    return tune, stats


def tune_and_evaluate(
    model: RNNLM,
    train_ids: torch.Tensor,
    ids: torch.Tensor,
    config: DynamicConfig,
    static_rows: int = PARALLEL_ROWS,
) -> DynamicReport:
    """The static and the dynamic figure of `ids`, eta and lambda tuned on training text first.

    Every pair of `config.candidates()` walks the tuning slice of `train_ids` (`tuning_slices`)
    from the trained weights; the pair with the lowest loss there is the one used on `ids`.
    `ids` is read once, by the final walk and the static evaluation, never by the tuning.
    `model` is never changed: each walk adapts a fresh copy.

    Shapes:
        train_ids: (N_train,), ids: (N,) compact integer ids with the model's vocabulary.
    """
    _check_model(model)
    if len(ids) < 2:
        raise UsageError("text is too short to evaluate: it needs at least two characters")
    if len(train_ids) < 2:
        raise UsageError("the training text is too short to tune dynamic evaluation on")
    t0 = time.perf_counter()
    (t_start, t_end), (s_start, s_end) = tuning_slices(len(train_ids), config)
    rms = gradient_rms(model, train_ids[s_start:s_end], config)
    tune_ids = train_ids[t_start:t_end]
    grid = []
    for eta, decay in config.candidates():
        total, count = dynamic_nll(model, tune_ids, rms, eta, decay, config)
        grid.append(GridPoint(eta, decay, total / count))
    best = min(grid, key=lambda p: p.loss)  # the first of equals: the grid's order decides
    dynamic = metrics_from_nll(*dynamic_nll(model, ids, rms, best.eta, best.decay, config))
    seconds = time.perf_counter() - t0
    return DynamicReport(
        static=evaluate(model, ids, rows=static_rows),
        dynamic=dynamic,
        eta=best.eta,
        decay=best.decay,
        tuned_on=(t_start, t_end),
        stats_on=(s_start, s_end),
        tuning_static=evaluate(model, tune_ids).loss,
        grid=tuple(grid),
        segment=config.segment,
        seconds=seconds,
    )


def training_ids(data: DataConfig, vocab: Vocab) -> torch.Tensor:
    """The training text a run learnt from, re-read from the corpus its config.json names."""
    try:
        return prepare_data(data, vocab=vocab).train_ids
    except UsageError as e:
        raise UsageError(
            f"dynamic evaluation tunes on the run's training text, which cannot be read: {e}"
        ) from None


def _check_model(model: RNNLM) -> None:
    if model.num_directions != 1:
        raise UsageError(
            "dynamic evaluation needs a left-to-right model: this one is bidirectional and reads "
            "the characters it predicts"
        )
