"""Using a trained encoder-decoder: translate words, and score it on pairs.

Decoding is `rnnlab.decoding`'s (greedy, sampling, beam search), the decoder adapted to it as an
advance function (one call per symbol). The figures are exact match, character error rate (edit
distance over reference characters) and the teacher-forced loss of the references;
`beam_vs_greedy` compares the log-likelihood of the two strategies' outputs pair by pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rnnlab.decoding import AdvanceFn, DecodeConfig, Hypothesis, beam_search, decode, greedy
from rnnlab.errors import UsageError
from rnnlab.model import State, eval_mode
from rnnlab.seq2seq.model import Seq2Seq, masked_nll
from rnnlab.seq2seq.pairs import Batch, Pair, PairVocab, make_batch
from rnnlab.vocab import require_known

EVAL_BATCH = 256  # pairs decoded at once during evaluation


# -- decoding -------------------------------------------------------------------------------------


def decoder_advance(model: Seq2Seq) -> AdvanceFn:
    """The decoder as an advance function for `rnnlab.decoding`: ids (B,) -> logits (B, V)."""

    def advance(ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        logits, state = model.decoder(ids[:, None], state)  # (B, 1, V)
        return logits[:, 0], state

    return advance


def auto_max_len(sources: Sequence[str], max_target_len: int) -> int:
    """A length limit that a correct output never reaches: room for twice the longest source."""
    return max(2 * max(len(s) for s in sources), max_target_len) + 10


def encode_sources(vocab: PairVocab, words: Sequence[str]) -> Batch:
    """User words as a batch (targets empty), refusing characters the model has never seen."""
    if not words:
        raise UsageError("give at least one word to translate")
    for w in words:
        if not w:
            raise UsageError("a word to translate is empty: give at least one character")
        require_known(vocab.unknown_chars(w), repr(w), "the training pairs")
    return make_batch(vocab, [(w, "") for w in words])


@torch.no_grad()
def translate_batch(
    model: Seq2Seq,
    batch: Batch,
    config: DecodeConfig,
    max_len: int,
) -> list[Hypothesis]:
    """The best hypothesis for every source of a batch under `config`'s strategy.

    Decoding runs on the model's device: the batch is moved there (a no-op when it is there).
    """
    batch = batch.to(model.device)
    with eval_mode(model):
        state = model.encoder(batch.src, batch.src_len)
        start = torch.full((len(batch),), PairVocab.bos, dtype=torch.long, device=model.device)
        return decode(decoder_advance(model), state, start, max_len, PairVocab.eos, config)


@dataclass
class Translation:
    source: str
    output: str
    log_prob: float  # natural-log likelihood of output + <eos> under the model
    ended: bool  # False: the length limit cut the output


def translate(
    model: Seq2Seq,
    vocab: PairVocab,
    words: Sequence[str],
    config: DecodeConfig | None = None,
    max_len: int = 0,
    max_target_len: int = 0,
) -> list[Translation]:
    """Translate words with a trained model; `max_len` 0 picks `auto_max_len`."""
    config = config or DecodeConfig()
    batch = encode_sources(vocab, words)
    limit = max_len or auto_max_len(words, max_target_len)
    hyps = translate_batch(model, batch, config, limit)
    return [
        Translation(w, vocab.decode(h.ids), h.log_prob, h.ended)
        for w, h in zip(words, hyps, strict=True)
    ]


# -- evaluation -----------------------------------------------------------------------------------


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: fewest insertions, deletions and substitutions turning a into b."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i]
        for j, cb in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@dataclass
class EvalResult:
    pairs: int
    exact: float  # fraction of outputs equal to the reference
    cer: float  # total edit distance / total reference characters
    loss: float  # teacher-forced cross-entropy per reference symbol (<eos> included), nats
    mean_log_prob: float  # mean log-likelihood of the decoded outputs (what beam search raises)
    outputs: list[Hypothesis]
    texts: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "exact": self.exact,
            "cer": self.cer,
            "loss": self.loss,
            "mean_log_prob": self.mean_log_prob,
        }


@torch.no_grad()
def evaluate_pairs(
    model: Seq2Seq,
    vocab: PairVocab,
    pairs: Sequence[Pair],
    config: DecodeConfig | None = None,
    max_len: int = 0,
    max_target_len: int = 0,
) -> EvalResult:
    """Exact match, character error rate and loss of `model` on `pairs` (decoded in batches)."""
    if not pairs:
        raise UsageError("no pairs to evaluate")
    config = config or DecodeConfig()
    hyps: list[Hypothesis] = []
    total_nll, symbols = 0.0, 0
    with eval_mode(model):
        for i in range(0, len(pairs), EVAL_BATCH):
            chunk = pairs[i : i + EVAL_BATCH]
            batch = make_batch(vocab, chunk)
            symbols += int(batch.mask.sum())  # counted on the CPU, before the batch moves
            batch = batch.to(model.device)
            logits = model(batch)  # (B, T, V) teacher-forced: the loss of the references
            total_nll += masked_nll(logits, batch.tgt_out, batch.mask).item()
            limit = max_len or auto_max_len([s for s, _ in chunk], max_target_len)
            hyps += translate_batch(model, batch, config, limit)
    texts = [vocab.decode(h.ids) for h in hyps]
    refs = [t for _, t in pairs]
    exact = sum(o == r for o, r in zip(texts, refs, strict=True)) / len(pairs)
    errors = sum(edit_distance(o, r) for o, r in zip(texts, refs, strict=True))
    return EvalResult(
        pairs=len(pairs),
        exact=exact,
        cer=errors / sum(len(r) for r in refs),
        loss=total_nll / symbols,
        mean_log_prob=sum(h.log_prob for h in hyps) / len(hyps),
        outputs=hyps,
        texts=texts,
    )


@torch.no_grad()
def beam_vs_greedy(
    model: Seq2Seq,
    vocab: PairVocab,
    pairs: Sequence[Pair],
    beam: int,
    length_norm: float = 0.0,
    max_target_len: int = 0,
) -> dict[str, Any]:
    """Log-likelihood of beam search's and greedy's outputs on the same sources, pair by pair.

    Where both write the same output their log-likelihoods agree up to float noise (different
    batch shapes), so those pairs count as `same_output`; the others are compared.
    """
    greedy_hyps: list[Hypothesis] = []
    beam_hyps: list[Hypothesis] = []
    advance = decoder_advance(model)
    with eval_mode(model):
        for i in range(0, len(pairs), EVAL_BATCH):
            chunk = pairs[i : i + EVAL_BATCH]
            batch = make_batch(vocab, chunk).to(model.device)
            limit = auto_max_len([s for s, _ in chunk], max_target_len)
            start = torch.full((len(chunk),), PairVocab.bos, dtype=torch.long, device=model.device)
            state = model.encoder(batch.src, batch.src_len)
            greedy_hyps += greedy(advance, state, start, limit, PairVocab.eos)
            beams = beam_search(advance, state, start, beam, limit, PairVocab.eos, length_norm)
            beam_hyps += [hyps[0] for hyps in beams]
    both = list(zip(beam_hyps, greedy_hyps, strict=True))
    differ = [(b.log_prob, g.log_prob) for b, g in both if (b.ids, b.ended) != (g.ids, g.ended)]
    return {
        "beam": beam,
        "length_norm": length_norm,
        "pairs": len(pairs),
        "greedy_mean_log_prob": sum(g.log_prob for g in greedy_hyps) / len(pairs),
        "beam_mean_log_prob": sum(b.log_prob for b in beam_hyps) / len(pairs),
        "same_output": len(both) - len(differ),
        "beam_higher": sum(b > g for b, g in differ),
        "beam_lower": sum(b < g for b, g in differ),
    }
