"""Text -> vocabulary -> ids: the one path from a corpus to the integer tensors training reads.

A small text is read whole; a file over `STREAM_BYTES` is streamed chunk by chunk into one
preallocated array (`prepare_streamed`). Both give the same ids, so every command (train, check,
evaluate, sweep) calls `prepare_data` and never needs to know which way the text came in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rnnlab.corpus import (
    CHUNK_BYTES,
    STREAM_BYTES,
    DataConfig,
    is_large,
    load_text,
    split,
    split_point,
    stream_codepoints,
)
from rnnlab.errors import UsageError
from rnnlab.vocab import Vocab, count_codepoints, dense_counts


@dataclass
class Data:
    vocab: Vocab
    train_ids: torch.Tensor  # (N_train,) compact integer ids
    valid_ids: torch.Tensor  # (N_valid,)


def prepare_data(
    config: DataConfig,
    vocab: Vocab | None = None,
    stream_over: int = STREAM_BYTES,
    chunk_bytes: int = CHUNK_BYTES,
) -> Data:
    """Clean, split, build the vocabulary from the training part (unless given), encode both.

    `config.train_chars` keeps only the start of the training part, after the split, so the
    held-out text is the same with or without it; the vocabulary comes from the characters
    kept (as d2l builds it from its 10,000), and held-out characters never seen become <unk>.
    Files over `stream_over` bytes are streamed (`prepare_streamed`): same result, bounded memory.
    """
    if is_large(config, stream_over):
        return prepare_streamed(config, vocab, chunk_bytes)
    text = load_text(config)
    train_text, valid_text = split(text, config.valid_fraction)
    train_text = train_text[: train_end(len(train_text), config)]
    if vocab is None:
        vocab = Vocab.build(train_text, config.min_freq)
    return Data(vocab, vocab.encode(train_text), vocab.encode(valid_text))


def prepare_streamed(
    config: DataConfig, vocab: Vocab | None = None, chunk_bytes: int = CHUNK_BYTES
) -> Data:
    """`prepare_data` for a file too large to hold as one string: two streamed passes.

    Pass 1 counts the cleaned characters, chunk by chunk, to find the train/valid split and the
    training text's character counts; the one chunk the split cuts is decoded again to count
    only its training part. Pass 2 writes each chunk's ids straight into one preallocated array
    of the narrowest exact integer type. Peak memory: that array plus a few chunks.
    """
    starts, lengths, counts = [], [], []
    for start, codes in stream_codepoints(config, chunk_bytes):
        starts.append(start)
        lengths.append(len(codes))
        if vocab is None:
            counts.append(count_codepoints(codes))  # sparse: a few KB per chunk
    n = sum(lengths)
    n_train = split_point(n, config.valid_fraction)
    n_kept = train_end(n_train, config)  # the training characters learnt from
    if vocab is None:
        train_counts = []
        for start, length, c in zip(starts, lengths, counts, strict=True):
            if start.char_offset + length <= n_kept:
                train_counts.append(c)
            elif start.char_offset < n_kept:  # the chunk the end of training cuts in two
                _, codes = next(stream_codepoints(config, chunk_bytes, start))
                train_counts.append(count_codepoints(codes[: n_kept - start.char_offset]))
        vocab = Vocab.from_counts(dense_counts(train_counts), config.min_freq)
    ids = np.empty(n, dtype=vocab.id_dtype)
    done = 0
    for start, codes in stream_codepoints(config, chunk_bytes):
        end = start.char_offset + len(codes)
        if end > n:
            break
        vocab.encode_codepoints(codes, ids[start.char_offset : end])
        done = end
    if done != n:
        raise UsageError(f"corpus {config.corpus!r} changed while it was being read: try again")
    return Data(vocab, torch.from_numpy(ids[:n_kept]), torch.from_numpy(ids[n_train:]))


def train_end(n_train: int, config: DataConfig) -> int:
    """How many characters of a training part of `n_train` are learnt from (`--train-chars`)."""
    if config.train_chars is None:
        return n_train
    return min(n_train, config.train_chars)


def encode_corpus(
    config: DataConfig, vocab: Vocab, stream_over: int = STREAM_BYTES
) -> torch.Tensor:
    """The ids of a whole corpus with a given vocabulary (large files streamed)."""
    if not is_large(config, stream_over):
        return vocab.encode(load_text(config))
    pieces = []
    for _, codes in stream_codepoints(config):
        ids = np.empty(len(codes), dtype=vocab.id_dtype)
        vocab.encode_codepoints(codes, ids)
        pieces.append(ids)
    return torch.from_numpy(np.concatenate(pieces))
