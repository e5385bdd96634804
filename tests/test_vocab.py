"""The vocabulary for fine-tuning (`extend_vocab`), property-tested: old ids never move."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.vocab import UNK, Vocab, char_counts, extend_vocab

# Small alphabets so the two texts share some characters and not others; a few past U+FFFF.
chars = st.sampled_from(list("abcdefxyz \n.é词") + ["😀", "\x1c"])
texts = st.text(alphabet=chars, min_size=1, max_size=60)
FAST = settings(max_examples=200, deadline=None, derandomize=True)


@FAST
@given(old_text=texts, new_text=texts, min_freq=st.integers(1, 3))
def test_old_characters_keep_their_ids_and_new_ones_come_after(old_text, new_text, min_freq):
    base = Vocab.build(old_text)
    vocab, added = extend_vocab(base, char_counts(new_text), min_freq)
    n = len(base)
    assert vocab.idx_to_token[:n] == base.idx_to_token  # every trained row stays where it is
    assert vocab.idx_to_token[n:] == added and len(vocab) == n + len(added)
    assert vocab.unk == 0 and vocab.idx_to_token[0] == UNK
    # Exactly the new text's characters the base lacks, seen at least min_freq times.
    counts = {c: new_text.count(c) for c in set(new_text)}
    expected = {c for c, k in counts.items() if k >= min_freq and c not in base.token_to_idx}
    assert set(added) == expected
    # ... in from_counts' order: the vocabulary those characters alone would have.
    only_new = Vocab.build("".join(c * counts[c] for c in added))
    assert added == only_new.idx_to_token[1:]
    # The old text still encodes to the same ids; the new one loses nothing it was asked to keep.
    assert np.array_equal(vocab.encode(old_text).numpy(), base.encode(old_text).numpy())
    for c in new_text:
        assert (vocab.token_to_idx.get(c, 0) != 0) == (c in base.token_to_idx or c in expected)


@FAST
@given(old_text=texts, new_text=texts)
def test_extending_twice_with_the_same_text_adds_nothing_more(old_text, new_text):
    once, added = extend_vocab(Vocab.build(old_text), char_counts(new_text))
    twice, again = extend_vocab(once, char_counts(new_text))
    assert again == [] and twice.idx_to_token == once.idx_to_token
    same, none = extend_vocab(Vocab.build(old_text), char_counts(old_text))
    assert none == [] and same.idx_to_token == Vocab.build(old_text).idx_to_token


def test_kept_characters_are_added_however_rare_and_the_count_is_reported():
    base = Vocab.build("hello world")
    vocab, added = extend_vocab(base, char_counts("hello there!!"), min_freq=2, keep="\x1c")
    assert added == ["!", "\x1c"]  # '!' twice; 't' once, below min_freq
    assert vocab.token_to_idx["!"] == len(base) and vocab.token_to_idx["\x1c"] == len(base) + 1
    assert "w" in vocab.token_to_idx and "d" in vocab.token_to_idx  # absent from the new text


def test_ids_widen_when_the_extension_passes_256_symbols():
    base = Vocab.build("".join(chr(0x100 + i) for i in range(250)))
    vocab, added = extend_vocab(base, char_counts("".join(chr(0x400 + i) for i in range(10))))
    assert len(added) == 10 and base.id_dtype == np.uint8 and vocab.id_dtype == np.int16
    assert vocab.decode(vocab.encode(chr(0x100) + chr(0x409))) == chr(0x100) + chr(0x409)


def test_from_counts_keeps_a_character_it_never_counted():
    v = Vocab.from_counts(char_counts("aab"), min_freq=2, keep="\x1c")
    assert v.idx_to_token == [UNK, "a", "\x1c"]
