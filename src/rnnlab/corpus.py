"""Text in: built-in corpora, user files, cleaning modes and the contiguous train/valid split.

Everything downstream sees one string per split; the user-facing checks (missing file, binary data,
wrong encoding, empty text) live here so that every command reports them the same way.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from rnnlab.errors import UsageError

CLEANINGS = ("letters", "raw")

# name -> (file under rnnlab/data, default cleaning). `alphabet` is generated, not shipped.
BUILTINS: dict[str, tuple[str | None, str]] = {
    "timemachine": ("timemachine.txt", "letters"),
    "alphabet": (None, "raw"),
    "pinyin": ("pinyin.txt", "raw"),
    "songci": ("songci.txt", "raw"),
    "shakespeare": ("tinyshakespeare.txt", "raw"),
}

ALPHABET_REPEATS = 400  # 10,400 characters: enough for a few dozen minibatches of 32 x 35

_NON_LETTERS = re.compile("[^A-Za-z]+")


@dataclass
class DataConfig:
    """Which text to learn from and how to read it."""

    corpus: str = field(
        default="timemachine",
        metadata={"help": f"built-in corpus ({', '.join(BUILTINS)}) or a path to a text file"},
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
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise UsageError(
                f"unknown encoding {self.encoding!r}: use a Python codec name such as "
                "utf-8, gb18030 or utf-16"
            ) from None

    @property
    def resolved_cleaning(self) -> str:
        if self.cleaning is not None:
            return self.cleaning
        return BUILTINS[self.corpus][1] if self.corpus in BUILTINS else "raw"


def clean(text: str, mode: str) -> str:
    """Apply a cleaning mode; `letters` reproduces d2l 1.0's whole-text preprocessing."""
    if mode == "letters":
        return _NON_LETTERS.sub(" ", text).lower()
    if mode == "raw":
        return text
    raise UsageError(f"unknown cleaning {mode!r}: use one of {', '.join(CLEANINGS)}")


def read_builtin(name: str) -> str:
    """The raw text of a built-in corpus (before cleaning)."""
    filename, _ = BUILTINS[name]
    if filename is None:  # alphabet
        return "abcdefghijklmnopqrstuvwxyz" * ALPHABET_REPEATS
    return resources.files("rnnlab").joinpath("data", filename).read_text(encoding="utf-8")


def read_text_file(path: str | Path, encoding: str = "utf-8") -> str:
    """Read a user's corpus strictly: refuse what is not text rather than learn from garbage."""
    p = Path(path)
    if not p.exists():
        known = ", ".join(BUILTINS)
        raise UsageError(
            f"corpus {str(path)!r} is neither a built-in ({known}) nor an existing file"
        )
    if p.is_dir():
        raise UsageError(f"corpus {str(path)!r} is a directory: give a text file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read corpus {str(path)!r}: {e.strerror}") from None
    if not data:
        raise UsageError(f"corpus {str(path)!r} is empty: give a file with text in it")
    is_utf16_or_32 = encoding.lower().replace("_", "-").startswith(("utf-16", "utf-32", "utf16"))
    if b"\x00" in data and not is_utf16_or_32:
        offset = data.index(b"\x00")
        raise UsageError(
            f"corpus {str(path)!r} looks binary (NUL byte at offset {offset}): give a text file"
        )
    codec = codecs.lookup(encoding).name
    if codec == "utf-8" and data.startswith(codecs.BOM_UTF8):
        codec = "utf-8-sig"  # a BOM marks the encoding; it is never part of the text
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as e:
        hint = " (for Chinese text try --encoding gb18030)" if codec.startswith("utf-8") else ""
        raise UsageError(
            f"corpus {str(path)!r} is not valid {encoding}: bad byte at offset {e.start}; "
            f"pass the right --encoding{hint}"
        ) from None
    if codec.startswith("utf-16") or codec.startswith("utf-32"):
        text = text.removeprefix("\ufeff")
    if not text.strip():
        raise UsageError(f"corpus {str(path)!r} holds only whitespace: give a file with text in it")
    return text


def load_text(config: DataConfig) -> str:
    """The cleaned text of the configured corpus."""
    if config.corpus in BUILTINS:
        raw = read_builtin(config.corpus)
    else:
        raw = read_text_file(config.corpus, config.encoding)
    text = clean(raw, config.resolved_cleaning)
    if not text.strip():
        raise UsageError(
            f"corpus {config.corpus!r} has no text left after '{config.resolved_cleaning}' "
            "cleaning: try --cleaning raw"
        )
    return text


def split(text: str, valid_fraction: float) -> tuple[str, str]:
    """Hold out the end of the text, contiguous, so validation measures continuation of unseen text."""
    n_valid = int(round(len(text) * valid_fraction))
    n_valid = min(max(n_valid, 2), len(text) - 2)  # both sides need an input and a target
    if n_valid < 2:
        raise UsageError(f"text of {len(text)} characters is too short to split into train/valid")
    return text[: len(text) - n_valid], text[len(text) - n_valid :]
