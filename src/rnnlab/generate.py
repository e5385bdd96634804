"""Prediction from a prefix: warm the state up once, then one call of the model per character.

The prefix goes through the model once from a zero state; each new character is then fed back
alone with the carried state, so writing `num_preds` characters costs `num_preds` calls on one
character each, never a re-run of the growing prefix (d2l 9.5 `predict`, whose `num_preds` this
is). The strategies themselves live in `rnnlab.decoding`, which knows nothing of the model
and also serves the seq2seq decoder; this module adapts the language model to them (`lm_advance`,
`lm_start`) and holds the one declaration of the prediction options, `GenerateConfig`, from
which `rnnlab predict`'s flags, `LanguageModel.predict/next/generate`'s keywords and the server's
`POST /api/predict` schema are all made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rnnlab.decoding import (
    AdvanceFn,
    DecodeConfig,
    Hypothesis,
    concat_states,
    decode,
    log_probs,
    reorder_state,
)
from rnnlab.errors import UsageError
from rnnlab.model import RNNLM, State, eval_mode
from rnnlab.options import accepts_aliases, option
from rnnlab.vocab import Vocab, require_known

MAX_NUM_PREDS = 1_000_000


@accepts_aliases
@dataclass
class GenerateConfig(DecodeConfig):
    """How to continue a prefix: the decoding options, how many characters, how many candidates.

    Greedy unless a sampling option or `strategy` says otherwise (see `DecodeConfig`). `num_preds`
    is also spelled `steps` (`--steps`, `steps=`, `"steps"`), the name users typed first.
    """

    num_preds: int = option(
        0,
        "characters to generate after the prefix",
        ge=0,
        le=MAX_NUM_PREDS,
        must="between 0 and {le:,}",
        aliases=("steps",),
        metavar="K",
    )
    show: int = option(5, "how many next-character candidates to list", ge=1, must="at least 1")


@dataclass
class Prediction:
    prefix: str
    next: list[tuple[str, float]]  # the `show` most likely next characters and their probabilities
    continuation: str
    log_prob: float  # log-likelihood of the continuation given the prefix (nats)


# -- the language model as the strategies see it --------------------------------------------------


def lm_advance(model: RNNLM) -> AdvanceFn:
    """Adapt `RNNLM` (X (B, 1), state) -> logits (B, 1, V) to an advance function."""

    def advance(ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        logits, state = model(ids.long().unsqueeze(1), state)  # (B, 1, V)
        return logits[:, -1], state  # (B, V)

    return advance


def encode_known(vocab: Vocab, text: str, what: str) -> torch.Tensor:
    """Ids (N,) int64 of `text`, refusing characters the model has never seen."""
    require_known(vocab.unknown_chars(text), what)
    return vocab.encode(text).long()


@torch.no_grad()
def lm_start(model: RNNLM, vocab: Vocab, prefixes: Sequence[str]) -> tuple[torch.Tensor, State]:
    """Warm the state up on each prefix but its last character; that character is the start id.

    Rows keep their own state: prefixes of equal length are warmed up together in one call, and
    the rows are put back in order, so each prefix sees exactly the state it would see alone.
    This is where a prefix is checked (not empty, every character known), once.

    Returns:
        start_ids (B,) and the batched state (L, B, H) or (h, c).
    """
    if not prefixes:
        raise UsageError("give at least one prefix")
    device = model.output.weight.device
    encoded = []
    for i, p in enumerate(prefixes):
        if not p:
            which = "the prefix" if len(prefixes) == 1 else f"prefix {i + 1}"
            raise UsageError(f"{which} is empty: give at least one character")
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


# -- prediction -----------------------------------------------------------------------------------


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
        return decode(lm_advance(model), state, start_ids, num_preds, None, config)


@torch.no_grad()
def predict(
    model: RNNLM, vocab: Vocab, prefixes: Sequence[str], config: GenerateConfig
) -> list[Prediction]:
    """Next-character distribution and `num_preds`-character continuation of several prefixes.

    Each prefix but its last character warms up its own row of the state (streamed, once); the
    last character is the first input of decoding, and the model's call on it gives the
    next-character distribution. Dropout is off for the call, and the model is left in the mode
    it was in.
    """
    with eval_mode(model):
        start_ids, state = lm_start(model, vocab, prefixes)  # (B,), state after prefix[:-1]
        advance = lm_advance(model)
        logits, _ = advance(start_ids, state)  # (B, V): the distribution after the whole prefix
        probs = torch.softmax(logits.double(), dim=-1)
        top = probs.topk(min(config.show, len(vocab)), dim=-1)
        hyps = decode(advance, state, start_ids, config.num_preds, None, config)
    return [
        Prediction(
            prefix=prefix,
            next=[
                (vocab.idx_to_token[i], p)
                for p, i in zip(top.values[row].tolist(), top.indices[row].tolist(), strict=True)
            ],
            continuation=vocab.decode(hyp.ids),
            log_prob=hyp.log_prob,
        )
        for row, (prefix, hyp) in enumerate(zip(prefixes, hyps, strict=True))
    ]


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
        logp = log_probs(logits[0]).gather(1, Y[:, None]).squeeze(1)  # (N-1,)
    bits = (-logp / math.log(2)).tolist()
    return list(zip(text[1:], bits, strict=True))
