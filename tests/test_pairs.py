"""Pair data: TSV errors, built-in and generated sets, the disjoint split, vocabulary, padding."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import torch

from rnnlab.errors import UsageError
from rnnlab.seq2seq.pairs import (
    ANTONYM_PAIRS,
    COURSE_PAIRS,
    DATE_FORMATS,
    SPECIALS,
    PairsConfig,
    PairVocab,
    date_pairs,
    format_date,
    load_pairs,
    make_batch,
    pairs_tsv,
    prepare_pairs,
    read_pairs_tsv,
    reverse_pairs,
    split_pairs,
)


def write(tmp_path, data: bytes | str, name: str = "pairs.tsv"):
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def test_reads_tsv_with_bom_crlf_blank_lines_and_spaces_inside_fields(tmp_path):
    path = write(tmp_path, "\ufeffman\twomen\r\n\r\n22 nov 2026\t2026-11-22\r\nup\tdown")
    assert read_pairs_tsv(path) == [("man", "women"), ("22 nov 2026", "2026-11-22"), ("up", "down")]


@pytest.mark.parametrize(
    "content, message",
    [
        ("", r"is empty: give source<TAB>target lines"),
        ("\n  \n", r"is empty"),
        ("man\twomen\nking queen\n", r"line 2 has no tab: write each pair as source<TAB>target"),
        ("a\tb\tc\n", r"line 1 has 2 tabs"),
        ("man\twomen\n\nking\t\n", r"line 3 has an empty target"),
        ("\tqueen\n", r"line 1 has an empty source"),
        (b"man\twomen\n\xff\xfe\n", r"not valid UTF-8: bad byte at offset 10"),
    ],
)
def test_bad_pair_files_are_usage_errors_that_say_where(tmp_path, content, message):
    with pytest.raises(UsageError, match=message):
        read_pairs_tsv(write(tmp_path, content))


def test_missing_file_and_directory_are_usage_errors(tmp_path):
    with pytest.raises(
        UsageError, match=r"neither a built-in \(course, antonyms, reverse, dates\)"
    ):
        load_pairs(PairsConfig(pairs=str(tmp_path / "nope.tsv")))
    with pytest.raises(UsageError, match="is a directory"):
        read_pairs_tsv(tmp_path)


def test_course_pairs_are_the_six_of_the_course_sic():
    assert COURSE_PAIRS == [
        ("man", "women"),
        ("king", "queen"),
        ("black", "white"),
        ("girl", "boy"),
        ("up", "down"),
        ("high", "low"),
    ]
    cfg = PairsConfig(pairs="course")
    data = prepare_pairs(cfg)
    assert cfg.resolved_valid_fraction == 0 and data.heldout == [] and data.train == COURSE_PAIRS


def test_antonyms_are_real_words_with_one_target_per_source():
    assert ANTONYM_PAIRS[:6] == COURSE_PAIRS
    assert len(ANTONYM_PAIRS) >= 106
    sources = [s for s, _ in ANTONYM_PAIRS]
    assert len(set(sources)) == len(sources)
    assert all(re.fullmatch("[a-z]+", w) for pair in ANTONYM_PAIRS for w in pair)
    assert all(s != t for s, t in ANTONYM_PAIRS)


def test_reverse_pairs_are_seeded_distinct_and_reversed():
    pairs = reverse_pairs(500, seed=3)
    assert pairs == reverse_pairs(500, seed=3) and pairs != reverse_pairs(500, seed=4)
    assert len({s for s, _ in pairs}) == 500
    assert all(t == s[::-1] and 3 <= len(s) <= 10 for s, t in pairs)


def test_date_pairs_use_every_format_and_map_to_the_same_day():
    pairs = date_pairs(600, seed=0)
    assert pairs == date_pairs(600, seed=0) and len({s for s, _ in pairs}) == 600
    seen_formats = set()
    for source, target in pairs:
        day = dt.date.fromisoformat(target)
        matches = [f for f in DATE_FORMATS if format_date(day, f) == source]
        assert matches, (source, target)
        seen_formats.update(matches)
    assert seen_formats == set(DATE_FORMATS)
    assert format_date(dt.date(2026, 11, 22), DATE_FORMATS[0]) == "22 nov 2026"
    assert format_date(dt.date(2026, 1, 5), "{dd}/{mm}/{y}") == "05/01/2026"


def test_split_shares_no_source_or_target_and_is_deterministic():
    pairs = date_pairs(3000, seed=1)  # many dates appear in several formats: same target
    train, held = split_pairs(pairs, 0.1, seed=0)
    assert (train, held) == split_pairs(pairs, 0.1, seed=0)
    assert sorted(train + held) == sorted(pairs)
    assert 280 <= len(held) <= 330
    assert not {s for s, _ in train} & {s for s, _ in held}
    assert not {t for _, t in train} & {t for _, t in held}
    linked = [("a", "x"), ("b", "x"), ("c", "y"), ("d", "z"), ("e", "w")]
    for seed in range(10):  # a and b share their target: always on the same side
        _, held = split_pairs(linked, 0.2, seed)
        assert (("a", "x") in held) == (("b", "x") in held)


def test_split_edge_cases():
    assert split_pairs(COURSE_PAIRS, 0.0, 0) == (COURSE_PAIRS, [])
    train, held = split_pairs(COURSE_PAIRS, 0.1, 0)
    assert len(held) == 1 and len(train) == 5
    with pytest.raises(UsageError, match="leaves none to train on"):
        split_pairs([("a", "x"), ("b", "x")], 0.5, 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_pairs": 0}, r"--num-pairs must be between 1 and 200,000"),
        ({"valid_fraction": 1.0}, r"--valid-fraction must be in \[0, 1\)"),
        ({"valid_fraction": -0.1}, r"--valid-fraction must be in \[0, 1\)"),
    ],
)
def test_bad_pairs_config(kwargs, message):
    with pytest.raises(UsageError, match=message):
        PairsConfig(**kwargs)


def test_vocab_has_pad_zero_and_round_trips():
    vocab = PairVocab.build(COURSE_PAIRS)
    assert vocab.idx_to_token[:4] == list(SPECIALS) and vocab.pad == 0
    assert (vocab.bos, vocab.eos, vocab.unk) == (1, 2, 3)
    ids = vocab.encode("queen")
    assert vocab.decode(ids) == "queen"
    assert vocab.encode("qZ") == [ids[0], vocab.unk]
    assert vocab.decode([*ids, vocab.eos, *ids]) == "queen"  # stops at <eos>
    assert vocab.decode([vocab.bos, *ids, vocab.pad]) == "queen"
    assert vocab.unknown_chars("MAN man") == ["M", "A", "N", " "]
    assert PairVocab.from_json(vocab.to_json()).idx_to_token == vocab.idx_to_token


def test_make_batch_pads_and_masks_by_length():
    vocab = PairVocab.build(COURSE_PAIRS)
    b = make_batch(vocab, [("up", "down"), ("black", "white"), ("man", "women")])
    assert b.src.shape == (3, 5) and b.src_len.tolist() == [2, 5, 3]
    assert b.tgt_in.shape == b.tgt_out.shape == (3, 6) and b.tgt_len.tolist() == [5, 6, 6]
    assert b.src[0, 2:].eq(0).all() and b.tgt_out[0, 5:].eq(0).all()
    assert b.tgt_in[:, 0].eq(vocab.bos).all()
    assert vocab.decode(b.tgt_in[0, 1:]) == "down" and b.tgt_out[0, 4] == vocab.eos
    assert b.mask.tolist()[0] == [True] * 5 + [False]
    for i, n in enumerate(b.tgt_len.tolist()):  # the decoder reads the target shifted by one
        assert torch.equal(b.tgt_in[i, 1:n], b.tgt_out[i, : n - 1])


def test_pairs_tsv_round_trips(tmp_path):
    pairs = date_pairs(50, seed=2)
    assert read_pairs_tsv(write(tmp_path, pairs_tsv(pairs))) == pairs
