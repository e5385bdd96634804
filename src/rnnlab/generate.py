"""Prediction from a prefix: warm the state up once, then one character per model step.

The prefix goes through the model in a single call from a zero state; each new character is then
fed back alone with the carried state, so producing K characters costs K single steps, never a
re-run of the growing prefix (d2l 9.5 `predict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from rnnlab.errors import UsageError
from rnnlab.model import RNNLM, State
from rnnlab.vocab import Vocab

MAX_STEPS = 1_000_000


@dataclass
class GenerateConfig:
    """How to continue a prefix; temperature 0 is greedy (the most likely character each step)."""

    steps: int = field(default=0, metadata={"help": "characters to generate after the prefix (K)"})
    top_k: int = field(default=5, metadata={"help": "how many next-character candidates to list"})
    temperature: float = field(
        default=0.0, metadata={"help": "0: greedy; > 0: sample from softmax(logits / T)"}
    )
    sample_top_k: int = field(
        default=0, metadata={"help": "when sampling, draw only from the N most likely (0: all)"}
    )
    seed: int = field(default=0, metadata={"help": "seed for sampling"})

    def __post_init__(self) -> None:
        if not 0 <= self.steps <= MAX_STEPS:
            raise UsageError(f"--steps must be between 0 and {MAX_STEPS:,}, got {self.steps}")
        if self.top_k < 1:
            raise UsageError(f"--top-k must be at least 1, got {self.top_k}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise UsageError(
                f"--temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}"
            )
        if self.sample_top_k < 0:
            raise UsageError(f"--sample-top-k must be 0 (all) or more, got {self.sample_top_k}")


@dataclass
class Prediction:
    prefix: str
    next: list[tuple[str, float]]  # the top-k next characters and their probabilities
    continuation: str


def encode_prefix(vocab: Vocab, prefix: str) -> torch.Tensor:
    """The prefix as (1, P) ids, refusing characters the model has never seen."""
    if not prefix:
        raise UsageError("the prefix is empty: give at least one character with --prefix")
    unknown = vocab.unknown_chars(prefix)
    if unknown:
        listed = " ".join(repr(c) for c in unknown)
        raise UsageError(
            f"prefix has characters not in the model's vocabulary: {listed}; "
            "use only characters from the training text"
        )
    return vocab.encode(prefix).long().unsqueeze(0)  # (1, P)


@torch.no_grad()
def warm_up(model: RNNLM, X: torch.Tensor) -> tuple[torch.Tensor, State]:
    """Run the prefix once from a zero state: logits after its last character, and the state.

    The prefix streams through in chunks, so a very long one costs time, not memory.
    """
    return model.read(X)  # (B, V), state


def choose(logits: torch.Tensor, config: GenerateConfig, gen: torch.Generator) -> torch.Tensor:
    """Pick the next id for each row of (B, V) logits: greedy, or sampled with temperature/top-k."""
    if config.temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    scaled = logits / config.temperature
    if config.sample_top_k:
        kth = scaled.topk(min(config.sample_top_k, scaled.shape[-1]), dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, -math.inf)
    probs = torch.softmax(scaled.double(), dim=-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)  # (B,)


@torch.no_grad()
def predict(model: RNNLM, vocab: Vocab, prefix: str, config: GenerateConfig) -> Prediction:
    """The top-k next characters after `prefix`, and K further characters fed back one by one."""
    model.eval()
    X = encode_prefix(vocab, prefix)  # (1, P)
    logits, state = warm_up(model, X)  # (1, V)
    probs = torch.softmax(logits[0].double(), dim=-1)  # (V,)
    top = probs.topk(min(config.top_k, len(vocab)))
    next_chars = [
        (vocab.idx_to_token[i], p) for p, i in zip(top.values.tolist(), top.indices.tolist())
    ]
    gen = torch.Generator().manual_seed(config.seed)
    out: list[int] = []
    for _ in range(config.steps):
        Y = choose(logits, config, gen)  # (1,)
        out.append(int(Y))
        step_logits, state = model(Y.unsqueeze(1), state)  # (1, 1, V)
        logits = step_logits[:, -1]
    return Prediction(prefix=prefix, next=next_chars, continuation=vocab.decode(out))
