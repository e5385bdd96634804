"""Vocab: the ordered characters of the training text, `<unk>`, and encode/decode.

Encoding works on whole texts at once through numpy code-point arrays, so a large corpus becomes
one compact integer tensor without ever building a Python list of ints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

UNK = "<unk>"


def codepoints(text: str) -> np.ndarray:
    """The Unicode code points of `text` as a uint32 array (a view of one UTF-32 buffer)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


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
        chars = np.array([ord(t) for t in tokens[1:]], dtype=np.uint32)
        order = np.argsort(chars)
        self._sorted_codes = chars[order]  # for vectorised lookup with searchsorted
        self._sorted_ids = (order + 1).astype(np.int64)

    @classmethod
    def build(cls, text: str, min_freq: int = 1) -> Vocab:
        """Count characters of `text`; keep those seen at least `min_freq` times."""
        codes, counts = np.unique(codepoints(text), return_counts=True)
        keep = counts >= min_freq
        codes, counts = codes[keep], counts[keep]
        order = np.lexsort((codes, -counts))  # frequency descending, then code point ascending
        return cls([UNK] + [chr(int(c)) for c in codes[order]])

    def __len__(self) -> int:
        return len(self.idx_to_token)

    @property
    def unk(self) -> int:
        return 0

    def encode(self, text: str) -> torch.Tensor:
        """Ids of every character of `text` as a 1-D tensor of the smallest exact integer type."""
        codes = codepoints(text)
        dtype = smallest_id_dtype(len(self))
        if len(self._sorted_codes) == 0:
            return torch.from_numpy(np.full(len(codes), self.unk, dtype=dtype))
        pos = np.minimum(np.searchsorted(self._sorted_codes, codes), len(self._sorted_codes) - 1)
        found = self._sorted_codes[pos] == codes
        ids = np.where(found, self._sorted_ids[pos], self.unk).astype(dtype)
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
