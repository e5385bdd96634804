"""Text in: built-in corpora, user files, cleaning modes and the contiguous train/valid split.

Small texts are read whole (`load_text`). A large file is streamed instead
(`stream_codepoints`): read in chunks, decoded incrementally (a multi-byte character split by a
chunk border is completed by the next chunk) and cleaned chunk by chunk, so memory stays bounded
whatever the file's size; the cleaned text is exactly the one `load_text` would give. The
user-facing checks (missing file, binary data, wrong encoding, empty text) live here so that
every command reports them the same way.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
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
STREAM_BYTES = 64 * 2**20  # files larger than this are streamed, not read whole
CHUNK_BYTES = 4 * 2**20  # bytes read at a time when streaming

_NON_LETTERS = re.compile("[^A-Za-z]+")


@dataclass
class DataConfig:
    """Which text to learn from and how to read it."""

    corpus: str = field(
        default="timemachine",
        metadata={
            "help": f"built-in corpus ({', '.join(BUILTINS)}) or a path to a text file; the "
            f"synthetic memory corpus takes parameters: {SPEC_FORMS}"
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
        default=0.1, metadata={"help": "fraction of the text (its end) held out for validation"}
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
        if is_memory(self.corpus):
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


def check_encoding(encoding: str) -> None:
    """Refuse an encoding name Python has no codec for, with examples of good ones."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UsageError(
            f"unknown encoding {encoding!r}: use a Python codec name such as "
            "utf-8, gb18030 or utf-16"
        ) from None


def builtin_name(corpus: str) -> str | None:
    """The built-in a corpus name refers to (`memory:16` -> `memory`), or None for a file."""
    if is_memory(corpus):
        return "memory"
    return corpus if corpus in BUILTINS else None


def corpus_label(corpus: str) -> str:
    """A short name for a corpus, safe in a file name: `memory-16`, `timemachine`, a file's stem."""
    if builtin_name(corpus):
        return corpus.replace(":", "-")
    return Path(corpus).stem or "corpus"


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


def corpus_file(path: str | Path) -> Path:
    """A user's corpus path, refused unless it names a readable, non-empty file."""
    p = Path(path)
    if not p.exists():
        known = ", ".join(BUILTINS)
        raise UsageError(
            f"corpus {str(path)!r} is neither a built-in ({known}) nor an existing file"
        )
    if p.is_dir():
        raise UsageError(f"corpus {str(path)!r} is a directory: give a text file")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise UsageError(f"cannot read corpus {str(path)!r}: {e.strerror}") from None
    if size == 0:
        raise UsageError(f"corpus {str(path)!r} is empty: give a file with text in it")
    return p


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


@dataclass(frozen=True)
class ChunkStart:
    """Where one chunk of a streamed file starts: enough to decode from there on its own."""

    byte_offset: int
    decoder_state: Any  # the incremental decoder's state: bytes of a character cut in two
    char_offset: int  # cleaned characters before this chunk
    in_gap: bool  # `letters`: the text before ended inside a run of non-letters
    at_start: bool  # no character decoded yet (a UTF-16/32 BOM may still come)


def stream_codepoints(
    config: DataConfig,
    chunk_bytes: int = CHUNK_BYTES,
    start: ChunkStart | None = None,
) -> Iterator[tuple[ChunkStart, np.ndarray]]:
    """The code points of a corpus file's cleaned text, chunk by chunk, each with where it starts.

    Joined, the chunks are exactly the code points of `load_text(config)`, and the same checks
    apply (binary, encoding with the byte offset, only whitespace, nothing left after cleaning).
    A multi-byte character cut by a chunk border is completed by the incremental decoder, a run
    of non-letters across a border still becomes one space. Memory is a few times `chunk_bytes`,
    whatever the file's size. `start` (a `ChunkStart` yielded earlier) decodes again from that
    chunk on, without reading the text before it.
    """
    path, encoding, mode = config.corpus, config.encoding, config.resolved_cleaning
    p = corpus_file(path)
    size = p.stat().st_size
    wide = _is_utf16_or_32(encoding)
    with p.open("rb") as f:
        codec = _codec(encoding, f.read(3))
        decoder = codecs.getincrementaldecoder(codec)("strict")
        here = start or ChunkStart(0, decoder.getstate(), 0, False, True)
        decoder.setstate(here.decoder_state)
        pos, chars = here.byte_offset, here.char_offset
        in_gap, at_start = here.in_gap, here.at_start
        seen_text = seen_clean = False  # meaningful only when streaming from the start
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
            seen_clean = seen_clean or bool((codes != 32).any())
            chars += len(codes)
            yield here, codes
            if final:
                break
    if start is None and not seen_text:
        raise _whitespace_error(path)
    if start is None and not seen_clean:
        raise _no_text_error(config)


def _no_text_error(config: DataConfig) -> UsageError:
    return UsageError(
        f"corpus {config.corpus!r} has no text left after '{config.resolved_cleaning}' "
        "cleaning: try --cleaning raw"
    )


def load_text(config: DataConfig) -> str:
    """The cleaned text of the configured corpus."""
    if builtin_name(config.corpus):
        raw = read_builtin(config.corpus)
    else:
        raw = read_text_file(config.corpus, config.encoding, config.allow_binary)
    text = clean(raw, config.resolved_cleaning)
    if not text.strip():
        raise _no_text_error(config)
    return text


def is_large(config: DataConfig, threshold: int = STREAM_BYTES) -> bool:
    """Whether the corpus is a file over `threshold` bytes: streamed rather than read whole."""
    if builtin_name(config.corpus):
        return False
    return corpus_file(config.corpus).stat().st_size > threshold


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
