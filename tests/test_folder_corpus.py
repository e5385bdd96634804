"""A corpus can be a folder or several files: which files, the boundary between documents, the
held-out end of each, streamed or not, and what the command line says when it cannot be read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import rnnlab
from rnnlab.cli import main
from rnnlab.cli.flags import Parser, add_config_args, config_from
from rnnlab.corpus import DOCUMENT_SEPARATOR, DataConfig, corpus_label, documents, load_text
from rnnlab.data import prepare_data
from rnnlab.errors import UsageError

SEP = DOCUMENT_SEPARATOR
TINY = ["--hidden", "8", "--layers", "1", "--batch-size", "2", "--num-steps", "8"]
TINY += ["--epochs", "1", "--max-steps", "2", "--quiet"]


POEMS = {  # in the order the folder gives them
    "a.txt": ("a" * 19 + "\n") * 10,
    "b.txt": ("b" * 9 + "\n") * 10,
    "sub/c.md": ("c" * 29 + "\n") * 10,
}


def poems(tmp_path: Path) -> Path:
    """A folder of three documents of 100, 200 and 300 characters, plus what is skipped."""
    folder = tmp_path / "poems"
    (folder / "sub").mkdir(parents=True)
    (folder / ".git").mkdir()
    for path, text in POEMS.items():
        (folder / path).write_text(text, encoding="utf-8")
    (folder / ".hidden.txt").write_text("hidden", encoding="utf-8")
    (folder / ".git" / "HEAD").write_text("ref", encoding="utf-8")
    (folder / "empty.txt").write_text("", encoding="utf-8")
    return folder


def text_of(data, ids: torch.Tensor) -> str:
    return data.vocab.decode(ids)


def test_a_folder_is_its_text_files_sorted_hidden_and_empty_ones_skipped(tmp_path):
    folder = poems(tmp_path)
    docs = documents(DataConfig(corpus=str(folder)))
    assert [Path(d.name).relative_to(folder).as_posix() for d in docs] == [
        "a.txt",
        "b.txt",
        "sub/c.md",
    ]
    assert [d.size for d in docs] == [200, 100, 300]
    assert corpus_label(str(folder)) == "poems"
    assert corpus_label([str(folder / "b.txt"), str(folder / "a.txt")]) == "b-and-1-more"


def test_each_document_keeps_its_boundary_and_its_own_held_out_end(tmp_path):
    data = prepare_data(DataConfig(corpus=str(poems(tmp_path)), valid_fraction=0.1))
    # The last 10% of each document is held out; documents are separated in both texts.
    a, b, c = POEMS.values()
    assert text_of(data, data.train_ids) == a[:180] + SEP + b[:90] + SEP + c[:270]
    assert text_of(data, data.valid_ids) == a[180:] + SEP + b[90:] + SEP + c[270:]
    assert SEP in data.vocab.token_to_idx
    assert [(d["bytes"], d["chars"], d["train"], d["valid"]) for d in data.documents] == [
        (200, 200, 180, 20),
        (100, 100, 90, 10),
        (300, 300, 270, 30),
    ]
    assert json.loads(json.dumps(data.documents)) == data.documents  # config.json-ready


def test_several_paths_keep_the_order_given_and_may_name_folders(tmp_path):
    folder = poems(tmp_path)
    data = prepare_data(DataConfig(corpus=[str(folder / "sub"), str(folder / "b.txt")]))
    assert text_of(data, data.train_ids) == POEMS["sub/c.md"][:270] + SEP + POEMS["b.txt"][:90]
    assert [Path(d["path"]).name for d in data.documents] == ["c.md", "b.txt"]


def test_one_file_alone_in_a_folder_or_a_list_gives_exactly_its_ids(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    f = folder / "t.txt"
    f.write_text("Hello, world! The quick brown fox.\n" * 40, encoding="utf-8")
    alone = prepare_data(DataConfig(corpus=str(f)))
    for corpus in (str(folder), [str(f)]):
        other = prepare_data(DataConfig(corpus=corpus))
        assert other.vocab.idx_to_token == alone.vocab.idx_to_token
        assert torch.equal(other.train_ids, alone.train_ids)
        assert torch.equal(other.valid_ids, alone.valid_ids)
    assert SEP not in alone.vocab.token_to_idx


@pytest.mark.parametrize("cleaning", ["raw", "letters"])
@pytest.mark.parametrize("train_chars", [None, 3, 131, 132, 137, 203, 204, 209, 1000])
def test_a_streamed_folder_gives_exactly_the_ids_of_a_whole_one(tmp_path, cleaning, train_chars):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "1.txt").write_text("Ünïcode, 宋词 and   gaps!! " * 9, encoding="utf-8")
    (folder / "2.txt").write_text("xyz" * 2, encoding="utf-8")  # 6 characters: 2 held out
    (folder / "3.txt").write_text("ab", encoding="utf-8")  # under 4 characters: all training
    (folder / "4.txt").write_text(",,, " * 50 + "The End.\n", encoding="utf-8")
    config = DataConfig(corpus=str(folder), cleaning=cleaning, train_chars=train_chars)
    whole = prepare_data(config)
    for chunk in (1, 5, 64, 4096):
        part = prepare_data(config, stream_over=0, chunk_bytes=chunk)
        assert part.vocab.idx_to_token == whole.vocab.idx_to_token
        assert torch.equal(part.train_ids, whole.train_ids)
        assert torch.equal(part.valid_ids, whole.valid_ids)
        assert part.documents == whole.documents
    assert whole.documents[2]["valid"] == 0
    full = sum(d["train"] for d in whole.documents) + 3  # three boundaries
    assert len(whole.train_ids) == min(train_chars or full, full)


def test_the_separator_is_in_the_vocabulary_however_rare(tmp_path):
    folder = poems(tmp_path)
    data = prepare_data(DataConfig(corpus=str(folder), min_freq=50))
    assert SEP in data.vocab.token_to_idx and "\n" not in data.vocab.token_to_idx
    # Cut before the first boundary, the training text holds none, yet the held-out text does.
    cut = prepare_data(DataConfig(corpus=str(folder), train_chars=10))
    assert SEP in cut.vocab.token_to_idx
    assert int((cut.valid_ids == cut.vocab.token_to_idx[SEP]).sum()) == 2


def test_load_text_joins_the_documents_with_the_separator(tmp_path):
    assert load_text(DataConfig(corpus=str(poems(tmp_path)))) == SEP.join(POEMS.values())


# -- mistakes: one line, exit 2 ---------------------------------------------------------------


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def make_case(d: Path, case: str) -> list[str]:
    """The --corpus values of one bad corpus, made under `d`."""
    ok = str(write(d / "ok.txt", b"some text " * 20))
    if case == "empty folder":
        (d / "empty").mkdir()
        return [str(d / "empty")]
    if case == "no text files":
        write(d / "quiet" / ".notes.txt", b"hidden")
        write(d / "quiet" / "nothing.txt", b"")
        return [str(d / "quiet")]
    if case == "missing":
        return [ok, str(d / "nope.txt")]
    if case == "binary":
        write(d / "imgs" / "a.txt", b"text " * 20)
        return [str(write(d / "imgs" / "b.png", b"\x89PNG\r\n\x1a\n\x00\x00").parent)]
    if case == "not utf-8":
        return [ok, str(write(d / "gb.txt", "宋词".encode("gb18030") * 20))]
    if case == "separator":
        return [ok, str(write(d / "fs.txt", b"one\x1ctwo" * 5))]
    if case == "twice":
        return [ok, str(d / "." / "ok.txt")]
    if case == "built-in":
        return [ok, "shakespeare"]
    if case == "too short":
        return [str(write(d / "s1.txt", b"abc")), str(write(d / "s2.txt", b"xy"))]
    raise AssertionError(case)


BAD = {
    "empty folder": "is a directory with nothing in it: put text files in it",
    "no text files": "is a directory with no text files in it (2 hidden or empty entries skipped)",
    "missing": "nope.txt' is neither a built-in",
    "binary": "b.png' looks binary (NUL byte at offset 8)",
    "not utf-8": "gb.txt' is not valid utf-8: bad byte at offset 0",
    "separator": "fs.txt' holds U+001C, the character rnnlab puts between documents",
    "twice": "ok.txt' is given twice",
    "built-in": "built-in corpus 'shakespeare' cannot be combined",
    "too short": "the 2 documents are too short to hold out --valid-fraction 0.1 of each",
}


@pytest.mark.parametrize("case", BAD)
def test_bad_folder_corpora_are_one_line_exit_2(tmp_path, capsys, case):
    out = tmp_path / "run"
    assert main(["train", "--corpus", *make_case(tmp_path, case), *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert BAD[case] in err, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert not out.exists()
    if case in ("binary", "not utf-8", "separator"):
        assert err.endswith("; or leave the file out of the corpus")


def test_a_file_in_a_folder_that_went_away_is_a_usage_error(tmp_path):
    folder = poems(tmp_path)
    (folder / "gone.txt").symlink_to(folder / "nowhere.txt")  # a dangling link: not a file
    assert len(documents(DataConfig(corpus=str(folder)))) == 3
    with pytest.raises(UsageError, match="neither a built-in"):
        documents(DataConfig(corpus=[str(folder / "a.txt"), str(folder / "gone.txt")]))


# -- end to end ------------------------------------------------------------------------------


def test_train_on_a_folder_then_evaluate_on_several_files(tmp_path, capsys):
    folder = poems(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--corpus", str(folder), *TINY, "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["data"]["corpus"] == str(folder)
    assert SEP in config["vocab"]
    # The same command with --resume continues the run (the folder is no change).
    again = ["train", "--corpus", str(folder), *TINY, "--max-steps", "3", "--out", str(out)]
    assert main([*again, "--resume", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 3
    files = [str(folder / "b.txt"), str(folder / "a.txt")]
    assert main(["evaluate", str(out), "--corpus", *files, "--json"]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scored["chars"] == 100 + 1 + 200 - 1  # both documents, one boundary; all but the first
    assert rnnlab.load(out).evaluate(corpus=files).loss == pytest.approx(scored["loss"])


def test_config_json_lists_the_files_with_their_sizes(tmp_path):
    folder = poems(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--corpus", str(folder), *TINY, "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    listed = json.dumps(config)
    for name, size in (("a.txt", 200), ("b.txt", 100), ("c.md", 300)):
        assert name in listed and f'"bytes": {size}' in listed


# -- the flag: a list-valued field takes one or more values ----------------------------------


@dataclass
class ToyConfig:
    names: str | list[str] = "x"
    sizes: list[int] = field(default_factory=lambda: [1])
    rate: float = 0.5


def test_list_fields_become_flags_with_one_or_more_values():
    parser = Parser(prog="toy")
    add_config_args(parser, ToyConfig)
    args = parser.parse_args(["--names", "a", "--sizes", "3", "4"])
    assert config_from(ToyConfig, args) == ToyConfig(names="a", sizes=[3, 4])
    args = parser.parse_args(["--names", "a", "b", "--rate", "2"])
    assert config_from(ToyConfig, args) == ToyConfig(names=["a", "b"], rate=2.0)
    assert config_from(ToyConfig, parser.parse_args([])) == ToyConfig()
    with pytest.raises(UsageError, match="invalid int value"):
        parser.parse_args(["--sizes", "3", "four"])
    with pytest.raises(UsageError, match="expected at least one argument"):
        parser.parse_args(["--names"])
