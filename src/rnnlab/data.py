"""Text -> vocabulary -> ids: the one path from a corpus to the integer tensors training reads.

Three steps, each down one floor and never back: corpus.py reads, cleans, splits and counts the
text (`read_corpus`), vocab.py chooses the symbols from the training text's counts
(`Vocab.from_counts`, or `extend_vocab` when fine-tuning) and then writes the ids of the training
and held-out text (`Vocab.encode_pieces`). corpus.py knows nothing of vocabularies, vocab.py
nothing of files; this module is where they meet. A small corpus is held as code points, a large
one (over `STREAM_BYTES`) streamed chunk by chunk; both give the same ids, so every command
(train, check, evaluate, sweep) calls `prepare_data` and never needs to know which way the text
came in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from rnnlab.corpus import CHUNK_BYTES, STREAM_BYTES, CorpusText, DataConfig, read_corpus
from rnnlab.vocab import Vocab, extend_vocab


@dataclass
class Data:
    vocab: Vocab
    train_ids: torch.Tensor  # (N_train,) compact integer ids
    valid_ids: torch.Tensor  # (N_valid,)
    # Each document of the corpus (its path or built-in name, bytes, cleaned characters, and how
    # many went to training and held-out text), JSON-ready: what config.json records.
    documents: list[dict[str, Any]] = field(default_factory=list)
    # With `base_vocab` (fine-tuning): the characters new to it, appended after its own ids.
    added: list[str] = field(default_factory=list)


def prepare_data(
    config: DataConfig,
    vocab: Vocab | None = None,
    stream_over: int = STREAM_BYTES,
    chunk_bytes: int = CHUNK_BYTES,
    base_vocab: Vocab | None = None,
    text: CorpusText | None = None,
) -> Data:
    """Read, clean and split the text; build the vocabulary from the training part (unless
    given); encode both parts.

    `config.train_chars` keeps only the start of the training part, after the split, so the
    held-out text is the same with or without it; the vocabulary comes from the characters kept
    (as d2l builds it from its 10,000), and held-out characters never seen become <unk>. With
    `base_vocab` (a trained model's, for fine-tuning) the vocabulary is that one with the new
    text's unseen characters appended (`extend_vocab`); `Data.added` lists them. Corpora over
    `stream_over` bytes are streamed in chunks of `chunk_bytes`: same result, bounded memory.
    """
    if text is None:  # 1. text: documents, split, counts (or as already read, e.g. to size it)
        text = read_corpus(config, stream_over, chunk_bytes)
    added: list[str] = []
    if vocab is None:  # 2. the vocabulary, from the training text's counts
        counts = text.train_counts()
        if base_vocab is None:
            vocab = Vocab.from_counts(counts, config.min_freq, keep=text.separators)
        else:
            vocab, added = extend_vocab(base_vocab, counts, config.min_freq, text.separators)
    train_ids = vocab.encode_pieces(text.train_pieces(), text.n_train)  # 3. ids
    valid_ids = vocab.encode_pieces(text.valid_pieces(), text.n_valid)
    return Data(vocab, train_ids, valid_ids, text.record(), added)


def encode_corpus(
    config: DataConfig, vocab: Vocab, stream_over: int = STREAM_BYTES
) -> torch.Tensor:
    """The ids of a whole corpus (every document, no split) with a given vocabulary."""
    text = read_corpus(config, stream_over)
    return vocab.encode_pieces(text.pieces(text.whole_spans), text.n_chars)
