"""Corpora and vocabulary: the d2l figures, cleaning, splitting, encodings and compact ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnlab.corpus import BUILTINS, DataConfig, clean, load_text, read_text_file, split
from rnnlab.errors import UsageError
from rnnlab.vocab import UNK, Vocab, smallest_id_dtype


def test_timemachine_matches_d2l_whole_text_preprocessing():
    text = load_text(DataConfig(corpus="timemachine"))
    assert len(text) == 173_428
    assert len(set(text)) == 27
    assert text.startswith("the time machine by h g wells ")
    train, _ = split(text, 0.1)
    assert len(Vocab.build(train)) == 28  # 26 letters, space, <unk>


@pytest.mark.parametrize(
    "name, symbols",
    [("alphabet", 26), ("pinyin", 28), ("shakespeare", 65)],
)
def test_builtin_symbol_counts(name, symbols):
    assert len(set(load_text(DataConfig(corpus=name)))) == symbols


def test_songci_is_large_vocabulary_chinese():
    text = load_text(DataConfig(corpus="songci"))
    assert 4_800 < len(set(text)) < 5_000
    assert "风" in text


def test_every_builtin_loads():
    for name in BUILTINS:
        assert load_text(DataConfig(corpus=name)).strip()


def test_letters_cleaning_collapses_non_letters():
    assert clean("Hello, World!\n\n42 times", "letters") == "hello world times"
    assert clean("a\nb", "raw") == "a\nb"


def test_user_files_default_to_raw(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("Hi!\nYo", encoding="utf-8")
    assert load_text(DataConfig(corpus=str(f))) == "Hi!\nYo"
    assert load_text(DataConfig(corpus=str(f), cleaning="letters")) == "hi yo"


def test_split_is_contiguous_tail():
    text = "".join(chr(97 + i % 26) for i in range(1000))
    train, valid = split(text, 0.1)
    assert train + valid == text
    assert len(valid) == 100


def test_vocab_order_frequency_then_code_point():
    v = Vocab.build("bbbaaccd")
    assert v.idx_to_token == [UNK, "b", "a", "c", "d"]


def test_vocab_roundtrip_and_unknowns():
    text = "the quick brown fox\njumps"
    v = Vocab.build(text)
    assert v.decode(v.encode(text)) == text
    ids = v.encode("xyz!")
    assert ids[-1].item() == v.unk  # '!' was never seen
    assert v.unknown_chars("fox!?!") == ["!", "?"]
    assert Vocab.from_json(v.to_json()).idx_to_token == v.idx_to_token


def test_min_freq_maps_rare_characters_to_unk():
    v = Vocab.build("aaab", min_freq=2)
    assert "b" not in v.token_to_idx
    assert v.encode("b").tolist() == [v.unk]


def test_ids_are_one_compact_tensor():
    v = Vocab.build("abc")
    ids = v.encode("abcabc")
    assert isinstance(ids, torch.Tensor) and ids.dtype == torch.uint8 and ids.dim() == 1


@pytest.mark.parametrize(
    "size, dtype", [(28, np.uint8), (256, np.uint8), (257, np.int16), (40_000, np.int32)]
)
def test_smallest_id_dtype(size, dtype):
    assert smallest_id_dtype(size) == dtype


def test_more_than_65535_symbols_keep_exact_ids():
    # 70,000 distinct code points from the CJK extension planes: ids past 65,535 must not wrap.
    chars = "".join(chr(0x20000 + i) for i in range(70_000))
    v = Vocab.build(chars)
    ids = v.encode(chars)
    assert ids.dtype == torch.int32
    assert int(ids.max()) == 70_000
    assert v.decode(ids) == chars


def test_gb18030_file_with_encoding_flag(tmp_path):
    f = tmp_path / "ci.txt"
    f.write_bytes("明月几时有".encode("gb18030"))
    with pytest.raises(UsageError, match=r"offset 0.*gb18030"):
        read_text_file(f)
    assert read_text_file(f, "gb18030") == "明月几时有"


def test_bom_is_never_text(tmp_path):
    f = tmp_path / "bom.txt"
    f.write_bytes(b"\xef\xbb\xbfabc")
    assert read_text_file(f) == "abc"
    g = tmp_path / "u16.txt"
    g.write_bytes("abc".encode("utf-16"))
    assert read_text_file(g, "utf-16") == "abc"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"  \n\t ", "only whitespace"),
        (b"abc\x00def", "binary"),
        (b"abc\xffdef", "offset 3"),
    ],
)
def test_bad_files(tmp_path, content, message):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        read_text_file(f)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(UsageError, match="neither a built-in"):
        read_text_file(tmp_path / "nope.txt")
    with pytest.raises(UsageError, match="is a directory"):
        read_text_file(tmp_path)


def test_data_config_validation():
    with pytest.raises(UsageError, match="valid-fraction"):
        DataConfig(valid_fraction=1.5)
    with pytest.raises(UsageError, match="unknown encoding"):
        DataConfig(encoding="klingon")


def test_shipped_corpora_match_their_provenance_checksums():
    import hashlib
    import re
    from importlib import resources

    data = resources.files("rnnlab").joinpath("data")
    readme = data.joinpath("README.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"\| `([a-z]+\.txt)` \|.*\| `([0-9a-f]{64})` \|", readme))
    assert set(listed) == {"timemachine.txt", "tinyshakespeare.txt", "songci.txt", "pinyin.txt"}
    for name, digest in listed.items():
        assert hashlib.sha256(data.joinpath(name).read_bytes()).hexdigest() == digest
