"""Vocab: the ordered characters of the training text, `<unk>`, and encode/decode.

Encoding works on whole texts at once through numpy code-point arrays, so a large corpus becomes
one compact integer tensor without ever building a Python list of ints. Counting and encoding also
work piece by piece (`count_codepoints`, `Vocab.from_counts`, `Vocab.encode_into`), which is how a
file too large to hold as one string is turned into ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from rnnlab.corpus import codepoints
from rnnlab.errors import UsageError

UNK = "<unk>"


def count_codepoints(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct code points of an array and how often each occurs (sparse, sorted)."""
    dense = np.bincount(codes)
    present = np.flatnonzero(dense)
    return present, dense[present]


def dense_counts(pieces: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Sum sparse (code points, counts) pieces into counts[code point]."""
    size = max((int(codes[-1]) + 1 for codes, _ in pieces if len(codes)), default=0)
    total = np.zeros(size, dtype=np.int64)
    for codes, counts in pieces:
        total[codes] += counts
    return total


def smallest_id_dtype(vocab_size: int) -> np.dtype:
    """The narrowest integer type that holds every id exactly (never wraps past 65,535)."""
    if vocab_size <= 2**8:
        return np.dtype(np.uint8)
    if vocab_size <= 2**15:
        return np.dtype(np.int16)
    return np.dtype(np.int32)


class Vocab:
    """Characters ordered by descending training frequency (ties by code point), `<unk>` first.

    `<unk>` sits at index 0, as in d2l, so unseen characters of held-out or user text have a slot.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens or tokens[0] != UNK:
            raise ValueError("a Vocab's first token must be <unk>")
        if len(set(tokens)) != len(tokens):
            raise ValueError("duplicate tokens in Vocab")
        self.idx_to_token: list[str] = list(tokens)
        self.token_to_idx: dict[str, int] = {t: i for i, t in enumerate(tokens)}
        chars = np.array([ord(t) for t in tokens[1:]], dtype=np.int64)
        # table[code point] = id; one extra last slot, <unk>, catches every larger code point.
        size = int(chars.max()) + 2 if len(chars) else 1
        self._table = np.full(size, self.unk, dtype=smallest_id_dtype(len(tokens)))
        self._table[chars] = np.arange(1, len(tokens))

    @classmethod
    def build(cls, text: str, min_freq: int = 1) -> Vocab:
        """Count characters of `text`; keep those seen at least `min_freq` times."""
        return cls.from_counts(np.bincount(codepoints(text)), min_freq)

    @classmethod
    def from_counts(cls, counts: np.ndarray, min_freq: int = 1) -> Vocab:
        """The vocabulary of characters whose count (counts[code point]) is at least `min_freq`."""
        codes = np.flatnonzero(counts >= max(min_freq, 1))
        freq = counts[codes]
        order = np.lexsort((codes, -freq))  # frequency descending, then code point ascending
        return cls([UNK] + [chr(int(c)) for c in codes[order]])

    def __len__(self) -> int:
        return len(self.idx_to_token)

    @property
    def unk(self) -> int:
        return 0

    @property
    def id_dtype(self) -> np.dtype:
        return self._table.dtype

    def encode(self, text: str) -> torch.Tensor:
        """Ids of every character of `text` as a 1-D tensor of the smallest exact integer type."""
        ids = np.empty(len(text), dtype=self.id_dtype)
        self.encode_into(text, ids)
        return torch.from_numpy(ids)

    def encode_into(self, text: str, out: np.ndarray) -> None:
        """Write the ids of `text` into `out` (len(text) slots of `id_dtype`)."""
        self.encode_codepoints(codepoints(text), out)

    def encode_codepoints(self, codes: np.ndarray, out: np.ndarray) -> None:
        """Write the ids of code points `codes` into `out`, copying nothing else.

        A table lookup: mode="clip" sends code points past the table's end to its last slot,
        which holds <unk>.
        """
        np.take(self._table, codes, out=out, mode="clip")

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(self.idx_to_token[int(i)] for i in ids)

    def unknown_chars(self, text: str) -> list[str]:
        """Distinct characters of `text` the vocabulary does not hold, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.token_to_idx))

    def to_json(self) -> list[str]:
        return list(self.idx_to_token)

    @classmethod
    def from_json(cls, tokens: list[str]) -> Vocab:
        return cls(tokens)


def require_known(unknown: list[str], what: str, source: str = "the training text") -> None:
    """Refuse input holding characters a model never saw, listing them (one line, exit 2)."""
    if unknown:
        listed = " ".join(repr(c) for c in unknown)
        raise UsageError(
            f"{what} has characters not in the model's vocabulary: {listed}; "
            f"use only characters from {source}"
        )
