"""Decoding strategies shared by the language model and the seq2seq decoder.

Every strategy drives a *step function* and knows nothing else about the model:

    step_fn(ids, state) -> (logits, state)      ids: (B,) int64   logits: (B, V)

`logits` may also be log-probabilities (log_softmax leaves them unchanged). `state` is whatever the
recurrent core carries, an (L, B, H) tensor or the LSTM pair (h, c); beam search reorders it with
`index_select` on dim 1, so any state of that shape works. Decoding starts from `start_ids`, the
token the model consumes first: `<bos>` for a seq2seq decoder, the last character of the prefix for
a language model (whose other prefix characters have already warmed the state up, see `lm_start`).

Strategies:
    greedy       the most likely token each step (d2l 10.8.1)
    sample       softmax(logits / temperature), optionally cut to the top-k tokens and/or the
                 nucleus (smallest set whose probability reaches top-p; Holtzman et al. 2020)
    beam_search  keep the `beam` most likely prefixes each step (d2l 10.8.3); finished hypotheses
                 are ranked by log-likelihood / length**alpha (alpha 0: plain log-likelihood)

Log-likelihoods are computed in float64 so that beam width 1 picks exactly what greedy picks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from rnnlab.errors import UsageError
from rnnlab.model import RNNLM, State, eval_mode
from rnnlab.vocab import Vocab, require_known

StepFn = Callable[[torch.Tensor, State], tuple[torch.Tensor, State]]
STRATEGIES = ("greedy", "sample", "beam")
MAX_BEAM = 1000


# -- argument checks (one accepted range each, shared by the functions and the config) -----------


def check_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature >= 0):
        raise UsageError(
            f"--temperature must be a finite number >= 0 (0 = greedy), got {temperature}"
        )


def check_top_k(top_k: int) -> None:
    if top_k < 0:
        raise UsageError(f"--top-k must be 0 (no limit) or more, got {top_k}")


def check_top_p(top_p: float) -> None:
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise UsageError(f"--top-p must be in (0, 1] (1 = no limit), got {top_p}")


def check_beam(beam: int) -> None:
    if not 1 <= beam <= MAX_BEAM:
        raise UsageError(f"--beam must be between 1 and {MAX_BEAM}, got {beam}")


def check_length_norm(alpha: float) -> None:
    if not (math.isfinite(alpha) and 0 <= alpha <= 2):
        raise UsageError(f"--length-norm must be in [0, 2] (0 = none), got {alpha}")


def check_max_len(max_len: int) -> None:
    if max_len < 0:
        raise UsageError(f"--max-len must be 0 or more, got {max_len}")


@dataclass
class DecodeConfig:
    """How to turn next-token distributions into a sequence."""

    strategy: str = field(
        default="greedy",
        metadata={
            "help": "greedy: most likely token; sample: draw with --temperature/--top-k/--top-p; "
            "beam: keep the --beam most likely prefixes",
            "choices": STRATEGIES,
        },
    )
    beam: int = field(default=5, metadata={"help": "beam width for --strategy beam (1 = greedy)"})
    length_norm: float = field(
        default=0.0,
        metadata={
            "help": "beam: rank finished hypotheses by log-likelihood / length**A "
            "(0: plain log-likelihood; 1: per-token mean)"
        },
    )
    temperature: float = field(
        default=1.0, metadata={"help": "sample: softmax(logits / T); 0 = greedy"}
    )
    top_k: int = field(
        default=0, metadata={"help": "sample: draw only from the K most likely tokens (0: all)"}
    )
    top_p: float = field(
        default=1.0,
        metadata={
            "help": "sample: draw only from the smallest set of tokens whose "
            "probability reaches P (nucleus; 1: all)"
        },
    )
    seed: int = field(default=0, metadata={"help": "sample: seed of the random generator"})

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise UsageError(
                f"unknown strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)}"
            )
        check_beam(self.beam)
        check_length_norm(self.length_norm)
        check_temperature(self.temperature)
        check_top_k(self.top_k)
        check_top_p(self.top_p)


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


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits.double(), dim=-1)  # (B, V) float64
    # A row of all -inf (a step function that allows nothing) gives NaN; NaN would win `topk`.
    return logp.masked_fill(logp.isnan(), -math.inf)


# -- logit filters and one-step choice ------------------------------------------------------------


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set every logit outside the top-k and outside the top-p nucleus to -inf.

    Top-k keeps exactly `top_k` tokens per row (ties broken by `topk`). The nucleus keeps the most
    likely tokens until their probability reaches `top_p`, so the most likely token always stays.

    Shapes:
        logits: (B, V) -> (B, V)
    """
    check_top_k(top_k)
    check_top_p(top_p)
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
    check_temperature(temperature)
    if temperature == 0:
        return _log_probs(logits).argmax(dim=-1)  # (B,)
    scaled = filter_logits(logits.double() / temperature, top_k, top_p)
    probs = torch.softmax(scaled, dim=-1)  # (B, V)
    if generator is not None and generator.device != probs.device:
        # Draw where the seeded generator lives (the CPU): the same seed gives the same text on
        # every device, at the cost of one small copy per step.
        return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


# -- strategies -----------------------------------------------------------------------------------


@torch.no_grad()
def _run(
    step_fn: StepFn,
    state: State,
    start_ids: torch.Tensor,
    max_len: int,
    end_id: int | None,
    pick: Callable[[torch.Tensor], torch.Tensor],
) -> list[Hypothesis]:
    """Feed back one chosen token per row per step until every row ends or max_len is reached."""
    check_max_len(max_len)
    B = start_ids.shape[0]
    ids = start_ids.long()
    chosen: list[torch.Tensor] = []  # one (B,) tensor per step
    step_logits: list[torch.Tensor] = []  # one (B, V) tensor per step
    ended = torch.zeros(B, dtype=torch.bool, device=start_ids.device)
    for _ in range(max_len):
        logits, state = step_fn(ids, state)  # (B, V)
        ids = pick(logits)  # (B,)
        chosen.append(ids)
        step_logits.append(logits)
        if end_id is not None:
            ended |= ids == end_id
            if ended.all():
                break
    if not chosen:
        return [Hypothesis([], 0.0, False) for _ in range(B)]
    # The bookkeeping runs once, over all steps, so that each step costs little more than the
    # model's own step (the batch-1 generation speed target in BENCHMARKS.md).
    tokens = torch.stack(chosen, dim=1)  # (B, S)
    logp = _log_probs(torch.stack(step_logits, dim=1))  # (B, S, V)
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
    step_fn: StepFn,
    state: State,
    start_ids: torch.Tensor,
    max_len: int,
    end_id: int | None = None,
) -> list[Hypothesis]:
    """The most likely token at every step, for each row of the batch (one hypothesis per row).

    Args:
        step_fn: (ids (B,), state) -> (logits (B, V), state).
        state: the state before `start_ids` is consumed.
        start_ids: (B,) the first token fed to the model.
        max_len: most tokens generated per row (the end token included).
        end_id: stop a row when it produces this id; None runs every row for max_len steps.
    """
    return _run(step_fn, state, start_ids, max_len, end_id, _argmax)


def sample(
    step_fn: StepFn,
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
    check_temperature(temperature)
    check_top_k(top_k)
    check_top_p(top_p)
    return _run(
        step_fn,
        state,
        start_ids,
        max_len,
        end_id,
        lambda lg: choose(lg, temperature, top_k, top_p, generator),
    )


@torch.no_grad()
def beam_search(
    step_fn: StepFn,
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
    check_beam(beam)
    check_length_norm(length_norm)
    check_max_len(max_len)
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
        logits, state = step_fn(ids, state)  # (B*K, V)
        V = logits.shape[-1]
        logp = _log_probs(logits).view(B, K, V)
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
    step_fn: StepFn,
    state: State,
    start_ids: torch.Tensor,
    max_len: int,
    end_id: int | None,
    config: DecodeConfig,
) -> list[Hypothesis]:
    """The best hypothesis of each row under `config`'s strategy."""
    if config.strategy == "greedy":
        return greedy(step_fn, state, start_ids, max_len, end_id)
    if config.strategy == "sample":
        gen = torch.Generator().manual_seed(config.seed)
        return sample(
            step_fn,
            state,
            start_ids,
            max_len,
            end_id,
            config.temperature,
            config.top_k,
            config.top_p,
            gen,
        )
    beams = beam_search(step_fn, state, start_ids, config.beam, max_len, end_id, config.length_norm)
    return [hyps[0] for hyps in beams]


# -- the language model ---------------------------------------------------------------------------


def lm_step_fn(model: RNNLM) -> StepFn:
    """Adapt `RNNLM` (X (B, 1), state) -> logits (B, 1, V) to a step function."""

    def step(ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        logits, state = model(ids.long().unsqueeze(1), state)  # (B, 1, V)
        return logits[:, -1], state  # (B, V)

    return step


def encode_known(vocab: Vocab, text: str, what: str) -> torch.Tensor:
    """Ids (N,) int64 of `text`, refusing characters the model has never seen."""
    require_known(vocab.unknown_chars(text), what)
    return vocab.encode(text).long()


@torch.no_grad()
def lm_start(model: RNNLM, vocab: Vocab, prefixes: Sequence[str]) -> tuple[torch.Tensor, State]:
    """Warm the state up on each prefix but its last character; that character is the start id.

    Rows keep their own state: prefixes of equal length are warmed up together in one call, and
    the rows are put back in order, so each prefix sees exactly the state it would see alone.

    Returns:
        start_ids (B,) and the batched state (L, B, H) or (h, c).
    """
    if not prefixes:
        raise UsageError("give at least one prefix")
    device = model.output.weight.device
    encoded = []
    for i, p in enumerate(prefixes):
        if not p:
            raise UsageError(f"prefix {i + 1} is empty: give at least one character")
        encoded.append(encode_known(vocab, p, f"prefix {p!r}").to(device))
    start_ids = torch.stack([e[-1] for e in encoded])  # (B,)
    by_len: dict[int, list[int]] = {}
    for i, e in enumerate(encoded):
        by_len.setdefault(len(e), []).append(i)
    rows: list[int] = []
    states: list[State] = []
    for n, idx in by_len.items():
        state = model.begin_state(len(idx))
        if n > 1:
            X = torch.stack([encoded[i][:-1] for i in idx])  # (b, n-1)
            _, state = model.read(X, state)  # streamed: a long prefix costs time, not memory
        rows += idx
        states.append(state)
    state = concat_states(states)
    order = torch.tensor(rows, device=device).argsort()  # back to the order of `prefixes`
    return start_ids, reorder_state(state, order)


@torch.no_grad()
def lm_generate(
    model: RNNLM,
    vocab: Vocab,
    prefixes: Sequence[str],
    num_preds: int,
    config: DecodeConfig | None = None,
) -> list[Hypothesis]:
    """Continue several prefixes at once by `num_preds` characters each (batched, per-row state).

    Returns one hypothesis per prefix; `vocab.decode(h.ids)` is its continuation and `h.log_prob`
    the log-likelihood of that continuation given the prefix.
    """
    config = config or DecodeConfig()
    with eval_mode(model):
        start_ids, state = lm_start(model, vocab, prefixes)
        return decode(lm_step_fn(model), state, start_ids, num_preds, None, config)


@torch.no_grad()
def score_text(model: RNNLM, vocab: Vocab, text: str) -> list[tuple[str, float]]:
    """Surprisal in bits, -log2 p(c_t | c_<t), of every character after the first.

    One forward pass from the zero state over the whole text, the state carried throughout, so
    the figures are what the model would say reading the text left to right. Their mean is the
    text's bits/char.
    """
    if len(text) < 2:
        raise UsageError("text to score needs at least two characters (the first is only context)")
    ids = encode_known(vocab, text, "text").to(model.output.weight.device)
    with eval_mode(model):
        X, Y = ids[:-1].unsqueeze(0), ids[1:]  # (1, N-1), (N-1,)
        logits, _ = model(X, model.begin_state(1))  # (1, N-1, V)
        logp = _log_probs(logits[0]).gather(1, Y[:, None]).squeeze(1)  # (N-1,)
    bits = (-logp / math.log(2)).tolist()
    return list(zip(text[1:], bits, strict=True))
