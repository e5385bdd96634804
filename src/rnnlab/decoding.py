"""Decoding strategies, shared by the language model and the seq2seq decoder, and their options.

Every strategy drives an *advance function*, one call of the model per token, and knows nothing
else about the model:

    advance(ids, state) -> (logits, state)      ids: (B,) int64   logits: (B, V)

`logits` may also be log-probabilities (log_softmax leaves them unchanged). `state` is whatever the
recurrent core carries, an (L, B, H) tensor or the LSTM pair (h, c); beam search reorders it with
`index_select` on dim 1, so any state of that shape works. Decoding starts from `start_ids`, the
token the model consumes first: `<bos>` for a seq2seq decoder, the last character of the prefix for
a language model (whose other prefix characters have already warmed the state up: the adapters
that do this live with the language model's prediction, in `rnnlab.generate`).

Strategies:
    greedy       the most likely token each time (d2l 10.8.1)
    sample       softmax(logits / temperature), optionally cut to the top-k tokens and/or the
                 nucleus (smallest set whose probability reaches top-p; Holtzman et al. 2020)
    beam_search  keep the `beam` most likely prefixes (d2l 10.8.3); finished hypotheses are
                 ranked by log-likelihood / length**alpha (alpha 0: plain log-likelihood)

`DecodeConfig` declares the options once (`rnnlab.options`): the CLI flags, the API keywords and
the server's schema are made from it, and it checks them when built, so `decode` does not check
them again. The strategy functions called directly check their own arguments.

Log-likelihoods are computed in float64 so that beam width 1 picks exactly what greedy picks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rnnlab.errors import UsageError
from rnnlab.options import check_fields, check_option, option

# What a recurrent core carries: (L, B, H), or the LSTM pair (h, c). (rnnlab.model has the same
# alias; this module stays free of the model so that any decoder can use it.)
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
AdvanceFn = Callable[[torch.Tensor, State], tuple[torch.Tensor, State]]
STRATEGIES = ("greedy", "sample", "beam")
MAX_BEAM = 1000
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes


@dataclass
class DecodeConfig:
    """How to turn next-token distributions into a sequence: the decoding options, declared once.

    `strategy` None (the default) means greedy, unless a sampling option (a temperature > 0, a
    top-k, a top-p below 1) is given: then sample. It is resolved when the config is built, as
    is temperature 0 with sampling (the argmax: greedy), so `strategy` is always one of
    STRATEGIES afterwards and `temperature` a number. (To change options, build a new config:
    `dataclasses.replace` would carry the strategy already resolved.)
    """

    strategy: str | None = option(
        None,
        "greedy: the most likely token; sample: draw with --temperature/--top-k/--top-p; beam: "
        "keep the --beam most likely continuations (default: greedy, or sample when a "
        "sampling option is given)",
        choices=STRATEGIES,
    )
    temperature: float | None = option(
        None,
        "sample: softmax(logits / T); 0 means greedy (default 1)",
        ge=0,
        must="a finite number >= 0 (0 = greedy)",
    )
    top_k: int = option(
        0,
        "sample: draw only from the K most likely tokens (0: all)",
        ge=0,
        must="0 (no limit) or more",
    )
    top_p: float = option(
        1.0,
        "sample: draw only from the smallest set of tokens whose probability reaches P "
        "(nucleus; 1: all)",
        gt=0,
        le=1,
        must="in (0, 1] (1 = no limit)",
    )
    beam: int = option(
        5,
        "beam width for --strategy beam (1 = greedy)",
        ge=1,
        le=MAX_BEAM,
        must="between 1 and {le}",
    )
    length_norm: float = option(
        0.0,
        "beam: rank finished hypotheses by log-likelihood / length**A "
        "(0: plain log-likelihood; 1: per-token mean)",
        ge=0,
        le=2,
        must="in [0, 2] (0 = none)",
    )
    seed: int = option(
        0,
        "sample: seed of the random generator (the same seed draws the same text)",
        ge=SEED_RANGE[0],
        le=SEED_RANGE[1],
        must="between -2**63 and 2**64 - 1",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.strategy is None:
            sampling = bool(self.temperature) or self.top_k > 0 or self.top_p < 1
            self.strategy = "sample" if sampling else "greedy"
        if self.temperature is None:
            self.temperature = 1.0
        if self.strategy == "sample" and self.temperature == 0:
            self.strategy = "greedy"  # the limit of softmax(logits / T) as T -> 0


def _check(name: str, value: object) -> None:
    """Hold one argument of a strategy function against its `DecodeConfig` declaration."""
    check_option(DecodeConfig, name, value)


def check_max_len(max_len: int) -> None:
    if max_len < 0:
        raise UsageError(f"--max-len must be 0 or more, got {max_len}")


@dataclass
class Hypothesis:
    """One decoded sequence: its ids (end id excluded) and its log-likelihood under the model."""

    ids: list[int]
    log_prob: float  # natural log; includes the end token's probability when `ended`
    ended: bool  # stopped on end_id (False: ran into max_len, or no end_id was given)

    @property
    def length(self) -> int:
        """Tokens scored: the ids plus the end token when there is one."""
        return len(self.ids) + int(self.ended)

    def score(self, alpha: float = 0.0) -> float:
        """log-likelihood / length**alpha: the length-normalised score beam search ranks by."""
        return self.log_prob / max(self.length, 1) ** alpha


# -- state helpers --------------------------------------------------------------------------------


def reorder_state(state: State, index: torch.Tensor) -> State:
    """Pick rows of the batch dimension (dim 1) of an (L, B, H) state or an (h, c) pair."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)  # type: ignore[return-value]
    return state.index_select(1, index)


def concat_states(states: Sequence[State]) -> State:
    """Stack per-row states along the batch dimension (dim 1)."""
    if isinstance(states[0], tuple):
        return tuple(torch.cat(parts, dim=1) for parts in zip(*states, strict=True))  # type: ignore[return-value]
    return torch.cat(list(states), dim=1)  # type: ignore[arg-type]


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Log-softmax in float64, a NaN (from a row of all -inf) turned into -inf.

    Shapes:
        logits: (..., V) -> (..., V) float64
    """
    logp = F.log_softmax(logits.double(), dim=-1)  # (..., V) float64
    # A row of all -inf (an advance function that allows nothing) gives NaN; NaN would win `topk`.
    return logp.masked_fill(logp.isnan(), -math.inf)


# -- logit filters and the choice of one token ----------------------------------------------------


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set every logit outside the top-k and outside the top-p nucleus to -inf.

    Top-k keeps exactly `top_k` tokens per row (ties broken by `topk`). The nucleus keeps the most
    likely tokens until their probability reaches `top_p`, so the most likely token always stays.

    Shapes:
        logits: (B, V) -> (B, V)
    """
    _check("top_k", top_k)
    _check("top_p", top_p)
    return _filter(logits, top_k, top_p)


def _filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    V = logits.shape[-1]
    if 0 < top_k < V:
        top = logits.topk(top_k, dim=-1)
        logits = torch.full_like(logits, -math.inf).scatter(-1, top.indices, top.values)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = torch.softmax(sorted_logits.double(), dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the strictly more likely tokens
        drop_sorted = before >= top_p  # the nucleus is already complete without this token
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, -math.inf)
    return logits


def choose(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next id of each row: argmax when temperature is 0, else a draw from the filtered softmax.

    Shapes:
        logits: (B, V) -> (B,) int64
    """
    _check("temperature", temperature)
    _check("top_k", top_k)
    _check("top_p", top_p)
    return _choose(logits, temperature, top_k, top_p, generator)


def _choose(
    logits: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """`choose` without the argument checks: run once per token, on checked arguments."""
    if temperature == 0:
        return log_probs(logits).argmax(dim=-1)  # (B,)
    scaled = _filter(logits.double() / temperature, top_k, top_p)
    probs = torch.softmax(scaled, dim=-1)  # (B, V)
    if generator is not None and generator.device != probs.device:
        # Draw where the seeded generator lives (the CPU): the same seed gives the same text on
        # every device, at the cost of one small copy per token.
        return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


# -- strategies -----------------------------------------------------------------------------------


@torch.no_grad()
def _run(
    advance: AdvanceFn,
    state: State,
    start_ids: torch.Tensor,
    max_len: int,
    end_id: int | None,
    pick: Callable[[torch.Tensor], torch.Tensor],
) -> list[Hypothesis]:
    """Feed back one chosen token per row until every row ends or max_len tokens are written."""
    B = start_ids.shape[0]
    ids = start_ids.long()
    chosen: list[torch.Tensor] = []  # one (B,) tensor per token written
    all_logits: list[torch.Tensor] = []  # one (B, V) tensor per token written
    ended = torch.zeros(B, dtype=torch.bool, device=start_ids.device)
    for _ in range(max_len):
        logits, state = advance(ids, state)  # (B, V)
        ids = pick(logits)  # (B,)
        chosen.append(ids)
        all_logits.append(logits)
        if end_id is not None:
            ended |= ids == end_id
            if ended.all():
                break
    if not chosen:
        return [Hypothesis([], 0.0, False) for _ in range(B)]
    # The bookkeeping runs once, over all tokens, so that each token costs little more than the
    # model's own call (the batch-1 generation speed target in BENCHMARKS.md).
    tokens = torch.stack(chosen, dim=1)  # (B, S)
    logp = log_probs(torch.stack(all_logits, dim=1))  # (B, S, V)
    token_lp = logp.gather(2, tokens[:, :, None]).squeeze(2)  # (B, S)
    if end_id is None:
        counted = torch.ones_like(tokens, dtype=torch.bool)
    else:  # a row counts its tokens up to and including its first end token
        is_end = (tokens == end_id).long()
        counted = (is_end.cumsum(dim=1) - is_end) == 0  # (B, S)
    log_prob = torch.where(counted, token_lp, 0.0).sum(dim=1)  # (B,)
    lengths = counted.sum(dim=1)
    # One copy to the host, not one wait per element read below (on a GPU).
    tokens, log_prob, lengths, ended = (t.cpu() for t in (tokens, log_prob, lengths, ended))
    return [
        Hypothesis(
            tokens[b, : int(lengths[b]) - int(ended[b])].tolist(),
            float(log_prob[b]),
            bool(ended[b]),
        )
        for b in range(B)
    ]


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    """Greedy choice: ``choose`` at temperature 0 in one kernel, without its float64 softmax and
    NaN guard (a NaN logit, from a broken model, is chosen and scores -inf at the end)."""
    return logits.argmax(dim=-1)  # (B,)


def greedy(
    advance: AdvanceFn,
    state: State,
    start_ids: torch.Tensor,
    max_len: int,
    end_id: int | None = None,
) -> list[Hypothesis]:
    """The most likely token each time, for each row of the batch (one hypothesis per row).

    Args:
        advance: (ids (B,), state) -> (logits (B, V), state), one call of the model.
        state: the state before `start_ids` is consumed.
        start_ids: (B,) the first token fed to the model.
        max_len: most tokens generated per row (the end token included).
        end_id: stop a row when it produces this id; None writes max_len tokens in every row.
    """
    check_max_len(max_len)
    return _run(advance, state, start_ids, max_len, end_id, _argmax)


def sample(
    advance: AdvanceFn,
    state: State,
    start_ids: torch.Tensor,
    max_len: int,
    end_id: int | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[Hypothesis]:
    """Draw each token from softmax(logits / temperature) restricted to top-k and top-p.

    Temperature 0 is greedy. The recorded log-likelihood is under the model's own distribution
    (temperature 1, unfiltered), so it is comparable with greedy's and beam search's.
    Pass a seeded `torch.Generator` to make the draws reproducible.
    """
    check_max_len(max_len)
    _check("temperature", temperature)
    _check("top_k", top_k)
    _check("top_p", top_p)
    return _sample(advance, state, start_ids, max_len, end_id, temperature, top_k, top_p, generator)


def _sample(
    advance: AdvanceFn,
    state: State,
    start_ids: torch.Tensor,
    max_len: int,
    end_id: int | None,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
) -> list[Hypothesis]:
    def pick(logits: torch.Tensor) -> torch.Tensor:
        return _choose(logits, temperature, top_k, top_p, generator)

    return _run(advance, state, start_ids, max_len, end_id, pick)


def beam_search(
    advance: AdvanceFn,
    state: State,
    start_ids: torch.Tensor,
    beam: int,
    max_len: int,
    end_id: int | None = None,
    length_norm: float = 0.0,
) -> list[list[Hypothesis]]:
    """Keep the `beam` most likely prefixes of every row; return each row's hypotheses, best first.

    All B rows are searched at once as B * beam model rows. A hypothesis that produced `end_id`
    stays in its beam with a frozen score (its only continuation costs 0), so finished and open
    hypotheses compete on log-likelihood; the final ranking puts finished hypotheses first, then
    orders by log-likelihood / length**length_norm. With beam 1 this is exactly `greedy`.

    Shapes:
        start_ids: (B,); state: (L, B, H) or (h, c) before start_ids is consumed.
    """
    _check("beam", beam)
    _check("length_norm", length_norm)
    check_max_len(max_len)
    return _beam_search(advance, state, start_ids, beam, max_len, end_id, length_norm)


@torch.no_grad()
def _beam_search(
    advance: AdvanceFn,
    state: State,
    start_ids: torch.Tensor,
    beam: int,
    max_len: int,
    end_id: int | None,
    length_norm: float,
) -> list[list[Hypothesis]]:
    B, K = start_ids.shape[0], beam
    device = start_ids.device
    ids = start_ids.long().repeat_interleave(K)  # (B*K,) row b*K + k is beam k of row b
    state = reorder_state(state, torch.arange(B, device=device).repeat_interleave(K))
    scores = torch.full((B, K), -math.inf, dtype=torch.float64, device=device)
    scores[:, 0] = 0.0  # the K copies are identical at the start: expand only the first
    finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B, K, dtype=torch.long, device=device)
    tokens = torch.zeros(B, K, 0, dtype=torch.long, device=device)  # (B, K, t)
    base = (torch.arange(B, device=device) * K)[:, None]  # (B, 1) first model row of each row
    for _ in range(max_len):
        logits, state = advance(ids, state)  # (B*K, V)
        V = logits.shape[-1]
        logp = log_probs(logits).view(B, K, V)
        if end_id is not None:
            frozen = torch.full((V,), -math.inf, dtype=torch.float64, device=device)
            frozen[end_id] = 0.0  # a finished hypothesis can only repeat the end token, for free
            logp = torch.where(finished[..., None], frozen, logp)
        cand = scores[..., None] + logp  # (B, K, V)
        scores, flat = cand.view(B, K * V).topk(K, dim=-1)  # (B, K)
        parent, token = flat // V, flat % V  # (B, K)
        was_finished = finished.gather(1, parent)
        lengths = lengths.gather(1, parent) + (~was_finished).long()
        finished = was_finished if end_id is None else was_finished | (token == end_id)
        tokens = torch.cat(
            [tokens.gather(1, parent[..., None].expand_as(tokens)), token[..., None]], dim=-1
        )
        state = reorder_state(state, (base + parent).flatten())
        ids = token.flatten()
        if finished.all():
            break
    results = []
    scores, lengths, finished, tokens = (t.cpu() for t in (scores, lengths, finished, tokens))
    for b in range(B):
        hyps = []
        for k in range(K):
            if not math.isfinite(scores[b, k]):
                continue  # fewer than K distinct prefixes existed (tiny vocabulary or max_len)
            n = int(lengths[b, k])
            ended = bool(finished[b, k])
            seq = tokens[b, k, : n - int(ended)].tolist()
            hyps.append(Hypothesis(seq, float(scores[b, k]), ended))
        hyps.sort(key=lambda h: (h.ended, h.score(length_norm)), reverse=True)
        results.append(hyps)
    return results


def decode(
    advance: AdvanceFn,
    state: State,
    start_ids: torch.Tensor,
    max_len: int,
    end_id: int | None,
    config: DecodeConfig,
) -> list[Hypothesis]:
    """The best hypothesis of each row under `config`'s strategy.

    `config` checked its options when it was built: only `max_len`, which it does not hold, is
    checked here.
    """
    check_max_len(max_len)
    if config.strategy == "greedy":
        return _run(advance, state, start_ids, max_len, end_id, _argmax)
    if config.strategy == "sample":
        gen = torch.Generator().manual_seed(config.seed)
        temperature = float(config.temperature)  # type: ignore[arg-type] - set by __post_init__
        return _sample(
            advance, state, start_ids, max_len, end_id, temperature, config.top_k, config.top_p,
            gen,
        )  # fmt: skip
    beams = _beam_search(
        advance, state, start_ids, config.beam, max_len, end_id, config.length_norm
    )
    return [hyps[0] for hyps in beams]
