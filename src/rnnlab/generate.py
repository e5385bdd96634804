"""Prediction from a prefix: warm the state up once, then one character per model step.

The prefix goes through the model once from a zero state; each new character is then fed back
alone with the carried state, so producing K characters costs K single steps, never a re-run of
the growing prefix (d2l 9.5 `predict`). The strategies themselves live in `rnnlab.decoding`,
shared with the seq2seq decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from rnnlab.decoding import (
    STRATEGIES,
    DecodeConfig,
    check_beam,
    check_length_norm,
    check_temperature,
    check_top_k,
    check_top_p,
    decode,
    lm_start,
    lm_step_fn,
)
from rnnlab.errors import UsageError
from rnnlab.model import RNNLM
from rnnlab.vocab import Vocab

MAX_STEPS = 1_000_000


@dataclass
class GenerateConfig:
    """How to continue a prefix: greedy unless a sampling flag or --strategy says otherwise."""

    steps: int = field(default=0, metadata={"help": "characters to generate after the prefix (K)"})
    show: int = field(default=5, metadata={"help": "how many next-character candidates to list"})
    strategy: str | None = field(
        default=None,
        metadata={
            "help": "greedy: the most likely character; sample: draw from the distribution; "
            "beam: keep the --beam most likely continuations",
            "choices": STRATEGIES,
        },
    )
    temperature: float | None = field(
        default=None,
        metadata={"help": "sampling temperature, softmax(logits / T); 0 means greedy (default 1)"},
    )
    top_k: int = field(
        default=0, metadata={"help": "sample only from the N most likely characters (0: all)"}
    )
    top_p: float = field(
        default=1.0,
        metadata={"help": "sample only from the smallest set whose probability reaches P"},
    )
    beam: int = field(default=5, metadata={"help": "beam width for --strategy beam"})
    length_norm: float = field(
        default=0.0, metadata={"help": "beam: rank by log-likelihood / length**A"}
    )
    seed: int = field(default=0, metadata={"help": "seed for sampling"})

    def __post_init__(self) -> None:
        if not 0 <= self.steps <= MAX_STEPS:
            raise UsageError(f"--steps must be between 0 and {MAX_STEPS:,}, got {self.steps}")
        if self.show < 1:
            raise UsageError(f"--show must be at least 1, got {self.show}")
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise UsageError(
                f"unknown strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)}"
            )
        if self.temperature is not None:
            check_temperature(self.temperature)
        check_top_k(self.top_k)
        check_top_p(self.top_p)
        check_beam(self.beam)
        check_length_norm(self.length_norm)

    def decode_config(self) -> DecodeConfig:
        """The decoding strategy these flags ask for (temperature 0 is greedy)."""
        sampling_asked = bool(self.temperature) or self.top_k > 0 or self.top_p < 1
        strategy = self.strategy or ("sample" if sampling_asked else "greedy")
        temperature = 1.0 if self.temperature is None else self.temperature
        if strategy == "sample" and temperature == 0:
            strategy = "greedy"
        return DecodeConfig(
            strategy=strategy,
            beam=self.beam,
            length_norm=self.length_norm,
            temperature=temperature if temperature > 0 else 1.0,
            top_k=self.top_k,
            top_p=self.top_p,
            seed=self.seed,
        )


@dataclass
class Prediction:
    prefix: str
    next: list[tuple[str, float]]  # the `show` most likely next characters and their probabilities
    continuation: str
    log_prob: float  # log-likelihood of the continuation given the prefix (nats)


@torch.no_grad()
def predict(
    model: RNNLM, vocab: Vocab, prefixes: Sequence[str], config: GenerateConfig
) -> list[Prediction]:
    """Next-character distribution and K-step continuation of several prefixes at once.

    Each prefix but its last character warms up its own row of the state (streamed, once); the
    last character is the first input of decoding, and its step gives the next-character
    distribution.
    """
    for p in prefixes:
        if not p:
            raise UsageError("the prefix is empty: give at least one character with --prefix")
    model.eval()
    start_ids, state = lm_start(model, vocab, prefixes)  # (B,), state after prefix[:-1]
    step = lm_step_fn(model)
    logits, _ = step(start_ids, state)  # (B, V): the distribution after the whole prefix
    probs = torch.softmax(logits.double(), dim=-1)
    top = probs.topk(min(config.show, len(vocab)), dim=-1)
    hyps = decode(step, state, start_ids, config.steps, None, config.decode_config())
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
