"""Vocab: the ordered characters of the training text, `<unk>`, and encode/decode.

A vocabulary is built from character counts (`Vocab.from_counts`: counts[code point], which
corpus.py measures on the training text, streamed or not) and encodes whole texts through numpy
code-point arrays, so a large corpus becomes one compact integer tensor without ever building a
Python list of ints. `Vocab.encode_pieces` writes the ids of a text given as pieces of code points
(`Vocab.encode_codepoints` for each) into one preallocated array: that is how a file too large to
hold as one string is turned into ids. This module knows nothing of files or corpora.

Fine-tuning a trained model on a new text needs the old ids kept: `extend_vocab` appends the new
text's unseen characters after the trained ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from rnnlab.errors import UsageError

UNK = "<unk>"


def char_counts(text: str) -> np.ndarray:
    """counts[code point] of the characters of `text`."""
    return np.bincount(_codepoints(text))


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # one UTF-32 buffer, viewed


def smallest_id_dtype(vocab_size: int) -> np.dtype:
    """The narrowest integer type that holds every id exactly (never wraps past 65,535)."""
    if vocab_size <= 2**8:
        return np.dtype(np.uint8)
    if vocab_size <= 2**15:
        return np.dtype(np.int16)
    return np.dtype(np.int32)


def _chosen(counts: np.ndarray, min_freq: int, keep: str) -> list[str]:
    """The characters counted at least `min_freq` times, and those of `keep` whatever their
    count, by descending count, ties by code point."""
    forced = np.array([ord(c) for c in keep], dtype=np.int64)
    size = max(len(counts), int(forced.max()) + 1 if len(forced) else 0)
    counts = np.pad(np.asarray(counts, dtype=np.int64), (0, size - len(counts)))
    chosen = counts >= max(min_freq, 1)
    chosen[forced] = True
    codes = np.flatnonzero(chosen)
    order = np.lexsort((codes, -counts[codes]))  # frequency descending, then code point ascending
    return [chr(int(c)) for c in codes[order]]


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
        return cls.from_counts(char_counts(text), min_freq)

    @classmethod
    def from_counts(cls, counts: np.ndarray, min_freq: int = 1, keep: str = "") -> Vocab:
        """The vocabulary of characters whose count (counts[code point]) is at least `min_freq`,
        plus the characters of `keep` however rare (a corpus's document separator)."""
        return cls([UNK, *_chosen(counts, min_freq, keep)])

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
        self.encode_codepoints(_codepoints(text), out)

    def encode_codepoints(self, codes: np.ndarray, out: np.ndarray) -> None:
        """Write the ids of code points `codes` into `out`, copying nothing else.

        A table lookup: mode="clip" sends code points past the table's end to its last slot,
        which holds <unk>.
        """
        np.take(self._table, codes, out=out, mode="clip")

    def encode_pieces(self, pieces: Iterable[np.ndarray], n: int) -> torch.Tensor:
        """The ids of a text of `n` characters given as pieces of code points, written into one
        array as the pieces come: peak memory is the ids plus one piece."""
        ids = np.empty(n, dtype=self.id_dtype)
        done = 0
        for codes in pieces:
            self.encode_codepoints(codes, ids[done : done + len(codes)])
            done += len(codes)
        if done != n:
            raise ValueError(f"pieces held {done} characters, not the {n} announced")
        return torch.from_numpy(ids)

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


def extend_vocab(
    base: Vocab, counts: np.ndarray, min_freq: int = 1, keep: str = ""
) -> tuple[Vocab, list[str]]:
    """The vocabulary for fine-tuning a model trained with `base` on a new text, and the
    characters it adds.

    Every character of `base` keeps its id, so the trained rows of the embedding (or one-hot
    input) and of the output layer stay where they are and can be copied as they are; a
    character of `base` the new text lacks stays known. Characters new to `base` that the new
    text holds at least `min_freq` times (`counts[code point]`, as `Vocab.from_counts` takes
    them), and those of `keep`, are appended after them in `from_counts`'s order (descending
    count, ties by code point): the model needs fresh rows for exactly those, ids
    len(base)..len(result)-1.
    """
    old = set(base.idx_to_token)
    added = [c for c in _chosen(counts, min_freq, keep) if c not in old]
    return Vocab([*base.idx_to_token, *added]), added


def require_known(unknown: list[str], what: str, source: str = "the training text") -> None:
    """Refuse input holding characters a model never saw, listing them (one line, exit 2)."""
    if unknown:
        listed = " ".join(repr(c) for c in unknown)
        raise UsageError(
            f"{what} has characters not in the model's vocabulary: {listed}; "
            f"use only characters from {source}"
        )
