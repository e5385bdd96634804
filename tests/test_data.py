"""Text -> vocabulary -> ids: one pass down, and the same ids as before it was made one pass.

The fingerprints below were computed on main at 4606e23, before corpus.py, vocab.py and data.py
were reorganised: the built-in corpora, read whole and streamed, must keep every id.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from importlib import resources
from pathlib import Path

import pytest
import torch

import rnnlab.data
from rnnlab import corpus, vocab
from rnnlab.corpus import DataConfig
from rnnlab.data import encode_corpus, prepare_data
from rnnlab.errors import UsageError
from rnnlab.vocab import Vocab

SRC = Path(rnnlab.data.__file__).parent


def fingerprint(v: Vocab, *ids: torch.Tensor) -> str:
    """The vocabulary, and each tensor's dtype and ids, hashed (16 hex digits)."""
    h = hashlib.sha256(json.dumps(v.to_json()).encode())
    for t in ids:
        h.update(str(t.dtype).encode())
        h.update(t.numpy().astype("<i8").tobytes())
    return h.hexdigest()[:16]


# prepare_data on main at 4606e23 (vocabulary, train ids, held-out ids).
BUILTIN_IDS = {
    "timemachine": ({}, "9996e4e9d7778fc4"),
    "timemachine-10k": ({"corpus": "timemachine", "train_chars": 10_000}, "dfd41a18aff4f0ca"),
    "shakespeare": ({}, "621d96bfc1987427"),
    "pinyin": ({}, "02836e83914c915d"),
    "songci": ({}, "580dcaf45722d335"),
    "alphabet": ({}, "c7f784926eb99598"),
    "memory16": ({"corpus": "memory:16"}, "a034dc268b83d126"),
}

# The shipped files as user files: read whole, streamed in 100,003-byte chunks, and encoded
# whole with the vocabulary of "abcdefghij " (encode_corpus), whole and streamed.
FILE_IDS = {
    "timemachine-letters": (
        {"file": "timemachine.txt", "cleaning": "letters"},
        "9996e4e9d7778fc4",
        "b07ee190a439dee3",
    ),
    "shakespeare": ({"file": "tinyshakespeare.txt"}, "621d96bfc1987427", "d9078a3f7092dd72"),
    "shakespeare-letters-cut": (
        {"file": "tinyshakespeare.txt", "cleaning": "letters", "train_chars": 50_000},
        "69485836af244a2a",
        "79c1de83ad88ef97",
    ),
    "pinyin-min-freq": (
        {"file": "pinyin.txt", "min_freq": 2000, "valid_fraction": 0.2},
        "734ac5bf0d01a13c",
        "87302d37cc1be9cb",
    ),
}


@pytest.mark.parametrize("name", BUILTIN_IDS)
def test_built_in_corpora_keep_their_ids(name):
    options, expected = BUILTIN_IDS[name]
    d = prepare_data(DataConfig(**({"corpus": name} | options)))
    assert fingerprint(d.vocab, d.train_ids, d.valid_ids) == expected


@pytest.mark.parametrize("name", FILE_IDS)
def test_corpus_files_keep_their_ids_whole_and_streamed(tmp_path, name):
    options, expected, expected_encoded = FILE_IDS[name]
    options = dict(options)
    f = tmp_path / options["file"]
    f.write_bytes(resources.files("rnnlab").joinpath("data", options.pop("file")).read_bytes())
    config = DataConfig(corpus=str(f), **options)
    for kw in ({}, {"stream_over": 0, "chunk_bytes": 100_003}):
        d = prepare_data(config, **kw)
        assert fingerprint(d.vocab, d.train_ids, d.valid_ids) == expected, kw
    v = Vocab.build("abcdefghij ")
    for stream_over in (2**26, 0):
        assert fingerprint(v, encode_corpus(config, v, stream_over)) == expected_encoded


# -- one pass down: corpus.py knows text, vocab.py symbols, data.py composes them -------------


def rnnlab_imports(module: str) -> set[str]:
    """The rnnlab modules a source file imports, anywhere in it."""
    tree = ast.parse((SRC / f"{module}.py").read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rnnlab"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names if node.module == "rnnlab")
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("rnnlab"))
    return out


def test_corpus_knows_no_vocabulary_and_vocab_no_corpus():
    assert rnnlab_imports("corpus") == {"rnnlab.errors", "rnnlab.synthetic"}
    assert rnnlab_imports("vocab") == {"rnnlab.errors"}
    assert rnnlab_imports("data") == {"rnnlab.corpus", "rnnlab.vocab"}


def test_prepare_data_reads_once_then_builds_once_then_encodes(tmp_path, monkeypatch):
    """The walk of prepare_data: one call into corpus.py, one vocabulary, two encodings (train,
    held-out), in that order, for a folder streamed and for a built-in read whole."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a.txt", "b.txt"):
        (folder / name).write_text(f"the text of {name} " * 30, encoding="utf-8")
    calls: list[str] = []

    def spy(owner, name):
        real = getattr(owner, name)

        def wrapped(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapped)

    spy(rnnlab.data, "read_corpus")
    spy(Vocab, "from_counts")
    spy(Vocab, "encode_pieces")
    for config, kw in (
        (DataConfig(corpus=str(folder)), {"stream_over": 0, "chunk_bytes": 64}),
        (DataConfig(corpus="timemachine"), {}),
    ):
        calls.clear()
        prepare_data(config, **kw)
        assert calls == ["read_corpus", "from_counts", "encode_pieces", "encode_pieces"]


def test_vocab_docstring_names_functions_that_exist():
    """The module docstring once named the wrong streaming function: every `Vocab.x` and
    every function it names must be there."""
    doc = vocab.__doc__ or ""
    named = re.findall(r"`(Vocab\.\w+|\w+)`", doc)
    assert "Vocab.encode_pieces" in named and "Vocab.encode_codepoints" in named
    for name in named:
        owner, _, attr = name.rpartition(".")
        target = getattr(vocab, owner) if owner else vocab
        assert hasattr(target, attr), name
    for name in re.findall(r"`(\w+)`", corpus.__doc__ or ""):
        if name[0].islower() and "_" in name:
            assert hasattr(corpus, name) or name == "valid_fraction", name


# -- DataConfig: one corpus or several -------------------------------------------------------


def test_a_list_of_one_path_is_that_path(tmp_path):
    f = tmp_path / "a.txt"
    assert DataConfig(corpus=[str(f)]).corpus == str(f)
    assert DataConfig(corpus=f).corpus == str(f)
    assert DataConfig(corpus=(f, tmp_path / "b.txt")).corpus == [str(f), str(tmp_path / "b.txt")]
    config = DataConfig(corpus=[str(f), "b.txt"])
    assert DataConfig(**json.loads(json.dumps(config.__dict__))) == config  # config.json


@pytest.mark.parametrize(
    "corpus, message",
    [
        ([], "--corpus needs a built-in name, a file, a folder or several paths"),
        (["a.txt", "timemachine"], "built-in corpus 'timemachine' cannot be combined"),
        (["memory:8", "a.txt"], "built-in corpus 'memory:8' cannot be combined"),
    ],
)
def test_bad_corpus_lists(corpus, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        DataConfig(corpus=corpus)
