"""Text in: built-in corpora, user files and folders, cleaning, and the train/held-out split.

This module knows text and nothing else: which documents a corpus is made of, how each is read
and cleaned, where each is cut into training and held-out text, and how often each character
occurs in the training part (`read_corpus` gives all of it as a `CorpusText`). Vocabularies and
ids are vocab.py's; data.py composes the two, text -> vocabulary -> ids.

Small corpora are read whole. A large one is streamed instead: each file is read in chunks,
decoded incrementally (a multi-byte character split by a chunk border is completed by the next
chunk) and cleaned chunk by chunk, so memory stays bounded whatever the file's size; the cleaned
text is exactly the one reading it whole would give. The user-facing checks (missing file, binary
data, wrong encoding, empty text, empty folder) live here so that every command reports them the
same way.

A corpus of several documents (a folder, or several paths) keeps each document's end: the
training text is each document's training part in turn, with `DOCUMENT_SEPARATOR` between two,
and the held-out text is each document's held-out part (its last `valid_fraction`) likewise. The
separator is one character, U+001C, ASCII's own "file separator": a model sees it between any two
documents, so it learns that a text can end and another begin instead of learning to run one file
on into the next, and because it is a character like any other, every part of rnnlab that works on
characters (batches, scoring, generation, checkpoints) handles it unchanged. It never occurs in
ordinary text; a document that holds it is refused rather than silently made ambiguous. A corpus of
one document has no separator, so one file gives exactly the ids it always did.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab.errors import UsageError
from rnnlab.synthetic import SPEC_FORMS, MemoryTask, is_memory

CLEANINGS = ("letters", "raw")

# name -> (file under rnnlab/data, default cleaning). `alphabet` and `memory` are generated, not
# shipped; `memory` also takes parameters, `memory:D[:k[:eps]]` (rnnlab.synthetic).
BUILTINS: dict[str, tuple[str | None, str]] = {
    "timemachine": ("timemachine.txt", "letters"),
    "alphabet": (None, "raw"),
    "pinyin": ("pinyin.txt", "raw"),
    "songci": ("songci.txt", "raw"),
    "shakespeare": ("tinyshakespeare.txt", "raw"),
    "memory": (None, "raw"),
}

ALPHABET_REPEATS = 400  # 10,400 characters: enough for a few dozen minibatches of 32 x 35
STREAM_BYTES = 64 * 2**20  # corpora larger than this (all files together) are streamed
CHUNK_BYTES = 4 * 2**20  # bytes read at a time when streaming

# Between two documents of a corpus (see the module docstring for why this character).
DOCUMENT_SEPARATOR = "\x1c"

_NON_LETTERS = re.compile("[^A-Za-z]+")


@dataclass
class DataConfig:
    """Which text to learn from and how to read it."""

    corpus: str | list[str] = field(
        default="timemachine",
        metadata={
            "help": f"built-in corpus ({', '.join(BUILTINS)}), a text file, a folder (its text "
            "files, sorted by path) or several files and folders; the synthetic memory corpus "
            f"takes parameters: {SPEC_FORMS}",
            "metavar": "NAME|PATH",
        },
    )
    cleaning: str | None = field(
        default=None,
        metadata={
            "help": "letters: runs of non-letters become one space, lower-cased (d2l); "
            "raw: every character kept. Default: letters for timemachine, raw otherwise",
            "choices": CLEANINGS,
        },
    )
    encoding: str = field(
        default="utf-8", metadata={"help": "text encoding of a corpus file (e.g. gb18030, utf-16)"}
    )
    valid_fraction: float = field(
        default=0.1,
        metadata={
            "help": "fraction of the text (the end of each document) held out for validation"
        },
    )
    min_freq: int = field(
        default=1, metadata={"help": "characters seen fewer times in training become <unk>"}
    )
    train_chars: int | None = field(
        default=None,
        metadata={
            "help": "train on only the first N characters of the training part (d2l uses "
            "10,000); the held-out text stays the last --valid-fraction of the full text"
        },
    )
    allow_binary: bool = field(
        default=False,
        metadata={
            "help": "learn from a file that looks binary (NUL bytes) instead of refusing it; "
            "--encoding latin-1 reads any byte as a character"
        },
    )

    def __post_init__(self) -> None:
        self.corpus = _corpus_spec(self.corpus)
        if self.cleaning is not None and self.cleaning not in CLEANINGS:
            raise UsageError(
                f"unknown cleaning {self.cleaning!r}: use one of {', '.join(CLEANINGS)}"
            )
        if not 0.0 < self.valid_fraction < 1.0:
            raise UsageError(
                f"--valid-fraction must be between 0 and 1 (exclusive), got {self.valid_fraction}"
            )
        if self.min_freq < 1:
            raise UsageError(f"--min-freq must be at least 1, got {self.min_freq}")
        if isinstance(self.corpus, str) and is_memory(self.corpus):
            MemoryTask.parse(self.corpus)  # a malformed spec fails here, before any work
        if self.train_chars is not None and self.train_chars < 1:
            raise UsageError(f"--train-chars must be at least 1, got {self.train_chars}")
        check_encoding(self.encoding)

    @property
    def resolved_cleaning(self) -> str:
        if self.cleaning is not None:
            return self.cleaning
        builtin = builtin_name(self.corpus)
        return BUILTINS[builtin][1] if builtin else "raw"


def _corpus_spec(corpus: Any) -> str | list[str]:
    """A corpus as config.json records it: one name or path, or a list of several paths.

    A list of one is that one path, so `--corpus a.txt` and `corpus=["a.txt"]` are the same run;
    paths become strings, so the config stays JSON-ready and compares equal after a round trip.
    """
    if isinstance(corpus, (str, os.PathLike)):
        return os.fspath(corpus)
    if not isinstance(corpus, (list, tuple)) or not corpus:
        raise UsageError("--corpus needs a built-in name, a file, a folder or several paths")
    items = [os.fspath(c) for c in corpus]
    if len(items) == 1:
        return items[0]
    builtins = [c for c in items if builtin_name(c)]
    if builtins:
        raise UsageError(
            f"built-in corpus {builtins[0]!r} cannot be combined with other paths: "
            "give it alone, or give only files and folders"
        )
    return items


def check_encoding(encoding: str) -> None:
    """Refuse an encoding name Python has no codec for, with examples of good ones."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UsageError(
            f"unknown encoding {encoding!r}: use a Python codec name such as "
            "utf-8, gb18030 or utf-16"
        ) from None


def builtin_name(corpus: str | Sequence[str]) -> str | None:
    """The built-in a corpus name refers to (`memory:16` -> `memory`), or None for paths."""
    if not isinstance(corpus, str):
        return None
    if is_memory(corpus):
        return "memory"
    return corpus if corpus in BUILTINS else None


def corpus_label(corpus: str | Sequence[str]) -> str:
    """A short name for a corpus, safe in a file name: `memory-16`, `timemachine`, a file's or
    folder's stem; several paths are named by the first (`poems-and-2-more`)."""
    if not isinstance(corpus, str):
        first = corpus_label(corpus[0]) if corpus else "corpus"
        return f"{first}-and-{len(corpus) - 1}-more" if len(corpus) > 1 else first
    if builtin_name(corpus):
        return corpus.replace(":", "-")
    return Path(corpus).stem or Path(corpus).resolve().name or "corpus"


def clean(text: str, mode: str) -> str:
    """Apply a cleaning mode; `letters` reproduces d2l 1.0's whole-text preprocessing."""
    if mode == "letters":
        return _NON_LETTERS.sub(" ", text).lower()
    if mode == "raw":
        return text
    raise UsageError(f"unknown cleaning {mode!r}: use one of {', '.join(CLEANINGS)}")


def codepoints(text: str) -> np.ndarray:
    """The Unicode code points of `text` as a uint32 array (a view of one UTF-32 buffer)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


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


def clean_codepoints(codes: np.ndarray, mode: str, in_gap: bool) -> tuple[np.ndarray, bool]:
    """`clean` for the code points of one piece of a longer text, in numpy (fast on GBs).

    Returns the cleaned code points and whether the piece ends inside a run of non-letters:
    `in_gap` says the text before did, and that run's one space is already out, so a run
    continuing here must not add a second.
    """
    if mode == "raw" or len(codes) == 0:
        return codes, in_gap
    if mode != "letters":
        raise UsageError(f"unknown cleaning {mode!r}: use one of {', '.join(CLEANINGS)}")
    upper = (codes >= 65) & (codes <= 90)
    letter = upper | ((codes >= 97) & (codes <= 122))
    out = np.where(letter, codes | (upper.astype(np.uint32) << 5), np.uint32(32))  # lower-case
    # A non-letter stays (as the run's one space) only if what precedes it is a letter.
    before = np.empty_like(letter)
    before[0] = not in_gap
    before[1:] = letter[:-1]
    out = out[letter | before]
    return out, not bool(letter[-1])


def read_builtin(name: str) -> str:
    """The raw text of a built-in corpus (before cleaning); `name` may be a `memory:...` spec."""
    if is_memory(name):
        return MemoryTask.parse(name).text()
    filename, _ = BUILTINS[name]
    if filename is None:  # alphabet
        return "abcdefghijklmnopqrstuvwxyz" * ALPHABET_REPEATS
    return resources.files("rnnlab").joinpath("data", filename).read_text(encoding="utf-8")


# -- which documents: a built-in, a file, a folder, several paths ------------------------------


@dataclass(frozen=True)
class Document:
    """One text of a corpus: a built-in, or a file (named by the user or found in a folder)."""

    name: str  # the built-in's name, or the file's path
    size: int | None = None  # bytes on disk; None for a built-in

    @property
    def builtin(self) -> bool:
        return self.size is None


def documents(config: DataConfig) -> list[Document]:
    """The documents of the configured corpus, in order, each checked to exist and hold bytes.

    A folder gives its text files and those of its subfolders, sorted by path (code-point order,
    `LC_ALL=C ls -R`'s, the same on every machine); hidden files and folders (a name starting
    with ".", such as .git) and empty files are skipped. Several paths keep the order given.
    """
    if builtin_name(config.corpus):
        return [Document(str(config.corpus))]
    given = [config.corpus] if isinstance(config.corpus, str) else config.corpus
    docs: list[Document] = []
    for item in given:
        if Path(item).is_dir():
            docs += folder_documents(Path(item))
        else:
            docs.append(Document(item, _file_size(corpus_file(item))))
    seen: dict[Path, str] = {}
    for doc in docs:
        key = Path(doc.name).resolve()
        if key in seen:
            raise UsageError(
                f"corpus file {doc.name!r} is given twice (also as {seen[key]!r}): "
                "name each file or folder once"
            )
        seen[key] = doc.name
    return docs


def folder_documents(folder: Path) -> list[Document]:
    """The text files under `folder`, sorted by path; hidden and empty files are skipped."""
    found: list[tuple[str, Path, int]] = []
    skipped = 0
    for root, dirs, files in os.walk(folder):
        skipped += sum(d.startswith(".") for d in dirs)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(root) / name
            size = 0 if name.startswith(".") or not path.is_file() else _file_size(path)
            if size == 0:
                skipped += 1
                continue
            found.append((path.relative_to(folder).as_posix(), path, size))
    if not found:
        if skipped == 0:
            raise UsageError(
                f"corpus {str(folder)!r} is a directory with nothing in it: put text files in "
                "it, or give a text file"
            )
        raise UsageError(
            f"corpus {str(folder)!r} is a directory with no text files in it ({skipped} hidden "
            "or empty entries skipped): put text files in it, or give a text file"
        )
    return [Document(str(path), size) for _, path, size in sorted(found)]


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as e:
        raise UsageError(f"cannot read corpus {str(path)!r}: {e.strerror}") from None


def corpus_file(path: str | Path) -> Path:
    """A user's corpus path, refused unless it names a readable, non-empty file."""
    p = Path(path)
    if not p.exists():
        known = ", ".join(BUILTINS)
        raise UsageError(
            f"corpus {str(path)!r} is neither a built-in ({known}) nor an existing file or folder"
        )
    if p.is_dir():
        raise UsageError(f"corpus {str(path)!r} is a directory: give a text file")
    if _file_size(p) == 0:
        raise UsageError(f"corpus {str(path)!r} is empty: give a file with text in it")
    return p


# -- reading one document: whole, or streamed in chunks ----------------------------------------


def _is_utf16_or_32(encoding: str) -> bool:
    return codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))


def _binary_error(path: str | Path, offset: int) -> UsageError:
    return UsageError(
        f"corpus {str(path)!r} looks binary (NUL byte at offset {offset}): give a text file, "
        "or pass --allow-binary to learn from it anyway"
    )


def _decode_error(path: str | Path, encoding: str, codec: str, offset: int) -> UsageError:
    hint = " (for Chinese text try --encoding gb18030)" if codec.startswith("utf-8") else ""
    return UsageError(
        f"corpus {str(path)!r} is not valid {encoding}: bad byte at offset {offset}; "
        f"pass the right --encoding{hint}"
    )


def _whitespace_error(path: str | Path) -> UsageError:
    return UsageError(f"corpus {str(path)!r} holds only whitespace: give a file with text in it")


def _codec(encoding: str, head: bytes) -> str:
    codec = codecs.lookup(encoding).name
    if codec == "utf-8" and head.startswith(codecs.BOM_UTF8):
        codec = "utf-8-sig"  # a BOM marks the encoding; it is never part of the text
    return codec


def read_text_file(path: str | Path, encoding: str = "utf-8", allow_binary: bool = False) -> str:
    """Read a user's corpus strictly: refuse what is not text rather than learn from garbage."""
    p = corpus_file(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read corpus {str(path)!r}: {e.strerror}") from None
    if not data:
        raise UsageError(f"corpus {str(path)!r} is empty: give a file with text in it")
    if b"\x00" in data and not allow_binary and not _is_utf16_or_32(encoding):
        raise _binary_error(path, data.index(b"\x00"))
    codec = _codec(encoding, data)
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as e:
        raise _decode_error(path, encoding, codec, e.start) from None
    if _is_utf16_or_32(codec):
        text = text.removeprefix("\ufeff")
    if not text.strip():
        raise _whitespace_error(path)
    return text


def read_document(doc: Document, config: DataConfig) -> np.ndarray:
    """The cleaned code points of one document, read whole."""
    if doc.builtin:
        raw = read_builtin(doc.name)
    else:
        raw = read_text_file(doc.name, config.encoding, config.allow_binary)
    return codepoints(clean(raw, config.resolved_cleaning))


@dataclass(frozen=True)
class ChunkStart:
    """Where one chunk of a streamed file starts: enough to decode from there on its own."""

    byte_offset: int
    decoder_state: Any  # the incremental decoder's state: bytes of a character cut in two
    char_offset: int  # cleaned characters before this chunk
    in_gap: bool  # `letters`: the text before ended inside a run of non-letters
    at_start: bool  # no character decoded yet (a UTF-16/32 BOM may still come)


def stream_document(
    doc: Document,
    config: DataConfig,
    chunk_bytes: int = CHUNK_BYTES,
    start: ChunkStart | None = None,
) -> Iterator[tuple[ChunkStart, np.ndarray]]:
    """The cleaned code points of a document file, chunk by chunk, each with where it starts.

    Joined, the chunks are exactly `read_document(doc, config)`, and the same checks apply
    (binary, encoding with the byte offset, only whitespace). A multi-byte character cut by a
    chunk border is completed by the incremental decoder, a run of non-letters across a border
    still becomes one space. Memory is a few times `chunk_bytes`, whatever the file's size.
    `start` (a `ChunkStart` yielded earlier) decodes again from that chunk on, without reading
    the text before it.
    """
    path, encoding, mode = doc.name, config.encoding, config.resolved_cleaning
    p = corpus_file(path)
    size = _file_size(p)
    wide = _is_utf16_or_32(encoding)
    with p.open("rb") as f:
        codec = _codec(encoding, f.read(3))
        decoder = codecs.getincrementaldecoder(codec)("strict")
        here = start or ChunkStart(0, decoder.getstate(), 0, False, True)
        decoder.setstate(here.decoder_state)
        pos, chars = here.byte_offset, here.char_offset
        in_gap, at_start = here.in_gap, here.at_start
        seen_text = False  # meaningful only when streaming from the start
        f.seek(pos)
        while True:
            data = f.read(chunk_bytes)
            final = pos + len(data) >= size or not data
            if not config.allow_binary and not wide:
                nul = data.find(b"\x00")
                if nul >= 0:
                    raise _binary_error(path, pos + nul)
            here = ChunkStart(pos, decoder.getstate(), chars, in_gap, at_start)
            pending = here.decoder_state[0] if isinstance(here.decoder_state, tuple) else b""
            try:
                text = decoder.decode(data, final=final)
            except UnicodeDecodeError as e:
                # The error's offset counts from the bytes held over from the last chunk.
                offset = pos - len(pending) + e.start
                raise _decode_error(path, encoding, codec, offset) from None
            pos += len(data)
            if at_start and text:
                at_start = False
                if _is_utf16_or_32(codec):
                    text = text.removeprefix("\ufeff")
            seen_text = seen_text or (bool(text) and not text.isspace())
            codes, in_gap = clean_codepoints(codepoints(text), mode, in_gap)
            del text
            chars += len(codes)
            yield here, codes
            if final:
                break
    if start is None and not seen_text:
        raise _whitespace_error(path)


# -- the corpus's text: measured, split, counted -----------------------------------------------


def split_point(n: int, valid_fraction: float) -> int:
    """Characters of a text of `n` that go to training; the rest, its end, is held out."""
    n_valid = int(round(n * valid_fraction))
    n_valid = min(max(n_valid, 2), n - 2)  # both sides need an input and a target
    if n_valid < 2:
        raise UsageError(f"text of {n} characters is too short to split into train/valid")
    return n - n_valid


def split(text: str, valid_fraction: float) -> tuple[str, str]:
    """Hold out the end of the text, contiguous: validation measures continuing unseen text."""
    n_train = split_point(len(text), valid_fraction)
    return text[:n_train], text[n_train:]


def train_end(n_train: int, config: DataConfig) -> int:
    """How many characters of a training part of `n_train` are learnt from (`--train-chars`)."""
    if config.train_chars is None:
        return n_train
    return min(n_train, config.train_chars)


@dataclass
class Chunk:
    """A run of one document's cleaned code points, held in memory or decoded again when read."""

    offset: int  # the document's cleaned characters before this chunk
    length: int
    codes: np.ndarray | None  # the code points, when the document was read whole
    start: ChunkStart | None = None  # where to decode it again (streamed)
    counts: tuple[np.ndarray, np.ndarray] | None = None  # streamed: its sparse character counts

    @property
    def end(self) -> int:
        return self.offset + self.length


# One stretch of a text built from the documents: (document, first, last + 1) in that document's
# cleaned characters, or SEPARATOR for one DOCUMENT_SEPARATOR between two documents.
Span = tuple[int, int, int]
SEPARATOR: Span = (-1, 0, 1)
_SEPARATOR_CODES = codepoints(DOCUMENT_SEPARATOR)


@dataclass
class CorpusText:
    """The cleaned text of a corpus, document by document: what data.py turns into ids.

    The training text is each document's training part in turn, separated as the module
    docstring says, cut to `--train-chars`; the held-out text is the documents' held-out parts.
    Each is given as pieces of code points (`train_pieces`, `valid_pieces`), never joined into one
    string, so a streamed corpus is decoded again piece by piece and never held whole.
    """

    config: DataConfig
    documents: list[Document]
    chunks: list[list[Chunk]]  # each document's, in order
    lengths: list[int]  # cleaned characters of each document
    chunk_bytes: int = CHUNK_BYTES

    @property
    def separators(self) -> str:
        """The characters this text adds between documents (none for a single document)."""
        return DOCUMENT_SEPARATOR if len(self.documents) > 1 else ""

    @cached_property
    def cuts(self) -> list[int]:
        """Where each document's held-out end begins: the last `valid_fraction` of each, rounded,
        at least 2 characters and leaving 2 (`split_point`); a document under 4 characters is
        training text whole."""
        f = self.config.valid_fraction
        if len(self.lengths) == 1:
            return [split_point(self.lengths[0], f)]
        cuts = [split_point(n, f) if n >= 4 else n for n in self.lengths]
        held = sum(self.lengths) - sum(cuts)
        if held < 2 or sum(cuts) < 2:
            raise UsageError(
                f"the {len(self.lengths)} documents are too short to hold out "
                f"--valid-fraction {f} of each: give longer texts or raise --valid-fraction"
            )
        return cuts

    @cached_property
    def train_spans(self) -> list[Span]:
        parts = [(d, 0, cut) for d, cut in enumerate(self.cuts)]
        n_train = sum(self.cuts) + max(sum(cut > 0 for cut in self.cuts) - 1, 0)
        return _joined(parts, train_end(n_train, self.config))

    @cached_property
    def valid_spans(self) -> list[Span]:
        cuts = zip(self.cuts, self.lengths, strict=True)
        return _joined([(d, cut, n) for d, (cut, n) in enumerate(cuts)])

    @property
    def whole_spans(self) -> list[Span]:
        """Every document whole, no split: the text `rnnlab evaluate --corpus` scores."""
        return _joined([(d, 0, n) for d, n in enumerate(self.lengths)])

    @property
    def n_train(self) -> int:
        return _length(self.train_spans)

    @property
    def n_valid(self) -> int:
        return _length(self.valid_spans)

    @property
    def n_chars(self) -> int:
        return _length(self.whole_spans)

    def train_pieces(self) -> Iterator[np.ndarray]:
        return self.pieces(self.train_spans)

    def valid_pieces(self) -> Iterator[np.ndarray]:
        return self.pieces(self.valid_spans)

    def pieces(self, spans: list[Span]) -> Iterator[np.ndarray]:
        """The code points of `spans` in order, a chunk (or a part of one) at a time."""
        for span in spans:
            if span == SEPARATOR:
                yield _SEPARATOR_CODES
                continue
            d, lo, hi = span
            for chunk, codes in self._read(d, lo, hi):
                yield codes[max(lo - chunk.offset, 0) : hi - chunk.offset]

    def train_counts(self) -> np.ndarray:
        """counts[code point]: how often each character occurs in the training text."""
        pieces = []
        for span in self.train_spans:
            if span == SEPARATOR:
                pieces.append(count_codepoints(_SEPARATOR_CODES))
                continue
            d, lo, hi = span
            for chunk in self._overlapping(d, lo, hi):
                if chunk.counts is not None and lo <= chunk.offset and chunk.end <= hi:
                    pieces.append(chunk.counts)  # counted while measuring: nothing to decode
                    continue
                _, codes = next(self._read(d, max(lo, chunk.offset), min(hi, chunk.end)))
                part = codes[max(lo - chunk.offset, 0) : hi - chunk.offset]
                pieces.append(count_codepoints(part))
        return dense_counts(pieces)

    def record(self) -> list[dict[str, Any]]:
        """Each document, JSON-ready for config.json: its name, bytes, cleaned characters and
        how many of them are training and held-out text."""
        out = []
        for doc, n, cut in zip(self.documents, self.lengths, self.cuts, strict=True):
            name = {"builtin" if doc.builtin else "path": doc.name}
            out.append(name | {"bytes": doc.size, "chars": n, "train": cut, "valid": n - cut})
        return out

    def _overlapping(self, d: int, lo: int, hi: int) -> list[Chunk]:
        """The run of document `d`'s chunks from the first to the last holding any of lo..hi-1
        (empty chunks between them included: a streamed file is decoded again in order)."""
        chunks = self.chunks[d]
        hit = [i for i, c in enumerate(chunks) if c.offset < hi and c.end > lo]
        return chunks[hit[0] : hit[-1] + 1] if hit else []

    def _read(self, d: int, lo: int, hi: int) -> Iterator[tuple[Chunk, np.ndarray]]:
        """The chunks of document `d` that hold its characters lo..hi-1, with their code points
        (decoded again from the first such chunk if the document was streamed)."""
        chunks = self._overlapping(d, lo, hi)
        if not chunks or chunks[0].codes is not None:
            yield from ((chunk, chunk.codes) for chunk in chunks if chunk.codes is not None)
            return
        doc = self.documents[d]
        with closing(stream_document(doc, self.config, self.chunk_bytes, chunks[0].start)) as f:
            for chunk, (start, codes) in zip(chunks, f, strict=False):  # f may run on
                if start.char_offset != chunk.offset or len(codes) != chunk.length:
                    raise _changed_error(doc)
                yield chunk, codes
                if chunk is chunks[-1]:
                    return
        raise _changed_error(doc)


def _changed_error(doc: Document) -> UsageError:
    return UsageError(f"corpus {doc.name!r} changed while it was being read: try again")


def _joined(parts: list[Span], limit: int | None = None) -> list[Span]:
    """The spans of `parts` with SEPARATOR between two non-empty ones, cut to `limit` chars."""
    spans: list[Span] = []
    room = limit if limit is not None else sum(hi - lo for _, lo, hi in parts) + len(parts)
    for d, lo, hi in parts:
        if hi == lo or room == 0:
            continue
        if spans:
            spans.append(SEPARATOR)
            room -= 1
        take = min(hi - lo, room)
        if take:
            spans.append((d, lo, lo + take))
            room -= take
    return spans


def _length(spans: list[Span]) -> int:
    return sum(hi - lo for _, lo, hi in spans)


def read_corpus(
    config: DataConfig, stream_over: int = STREAM_BYTES, chunk_bytes: int = CHUNK_BYTES
) -> CorpusText:
    """Read, clean and measure every document of the configured corpus, in order.

    A corpus whose files hold over `stream_over` bytes together is streamed: each file is
    decoded chunk by chunk and only each chunk's length, where it starts and its character
    counts are kept, so memory stays a few chunks; the pieces are decoded again when read. A
    smaller one is held as code points. Either way the text, the split and the counts are the
    same. Every check runs here, before any vocabulary is built: each file's (missing, empty,
    binary, wrong encoding, only whitespace), then the corpus's (no text left after cleaning; a
    document holding the separator).
    """
    docs = documents(config)
    streamed = sum(doc.size or 0 for doc in docs) > stream_over
    chunks: list[list[Chunk]] = []
    has_text = False
    for doc in docs:
        try:
            if streamed:
                mine, n = [], 0
                for start, codes in stream_document(doc, config, chunk_bytes):
                    _check_no_separator(doc, codes, len(docs))
                    has_text = has_text or bool((codes != 32).any())
                    mine.append(Chunk(n, len(codes), None, start, count_codepoints(codes)))
                    n += len(codes)
            else:
                codes = read_document(doc, config)
                _check_no_separator(doc, codes, len(docs))
                has_text = has_text or bool((codes != 32).any())
                mine = [Chunk(0, len(codes), codes)]
        except UsageError as e:
            if len(docs) == 1:
                raise
            raise UsageError(f"{e}; or leave the file out of the corpus") from None
        chunks.append(mine)
    if not has_text:
        raise UsageError(
            f"corpus {config.corpus!r} has no text left after '{config.resolved_cleaning}' "
            "cleaning: try --cleaning raw"
        )
    lengths = [sum(c.length for c in mine) for mine in chunks]
    return CorpusText(config, docs, chunks, lengths, chunk_bytes)


def _check_no_separator(doc: Document, codes: np.ndarray, n_docs: int) -> None:
    if n_docs > 1 and bool((codes == _SEPARATOR_CODES[0]).any()):
        raise UsageError(
            f"corpus file {doc.name!r} holds U+001C, the character rnnlab puts between "
            "documents: remove it from the file"
        )


def load_text(config: DataConfig) -> str:
    """The cleaned text of the configured corpus, documents joined by DOCUMENT_SEPARATOR."""
    text = read_corpus(config)
    return "".join(p.tobytes().decode("utf-32-le") for p in text.pieces(text.whole_spans))
