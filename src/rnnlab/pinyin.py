"""Chinese text -> a pinyin corpus a character model can learn from (`rnnlab corpus pinyin`).

The output has the shape of the shipped `pinyin` corpus: one line per input line, each a list of
lowercase tokens separated by single spaces, no leading or trailing space. What becomes a token:

- each hanzi: its pinyin syllable from pypinyin (offline; it ships its dictionaries), toneless
  by default (`zhong guo ren`) or with the tone as a trailing digit 1-4, 5 for the neutral tone
  (`zhong1 guo2 ren2`); ü is written `v` (`lv`, `nv3`), pypinyin's default;
- each run of ASCII letters and digits, after folding full-width forms to ASCII (NFKC) and
  lower-casing: kept as one token as it is (`ABC 123` -> `abc 123`, `Ｗｉｆｉ` -> `wifi`);
- anything else (punctuation, spaces, symbols, hanzi pypinyin has no reading for): dropped.

Tone numbers rather than tone marks keep the alphabet to a-z, 1-5 and the space, so a character
model sees a tone as one more symbol instead of a second copy of every vowel.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from rnnlab.errors import UsageError

_ASCII_WORD = re.compile("[a-z0-9]+")


@dataclass
class Conversion:
    """The converted text and what it holds: the one-line summary the CLI prints."""

    text: str  # one line per input line, each ending in "\n"
    lines: int
    syllables: int  # tokens read from hanzi
    kept: int  # ASCII letter/digit tokens kept as they were
    distinct_chars: int  # distinct characters of `text`, the newline included


def ascii_words(chunk: str) -> list[str]:
    """The runs of ASCII letters and digits in a non-Chinese chunk, folded and lower-cased."""
    return _ASCII_WORD.findall(unicodedata.normalize("NFKC", chunk).lower())


def to_pinyin(text: str, tones: bool = False) -> Conversion:
    """Convert Chinese text line by line (see the module docstring for what becomes a token).

    Lines are split at "\\n" ("\\r\\n" counts as one break); a final newline ends the last line
    rather than starting an empty one, so a file of N lines gives N lines.
    """
    try:
        from pypinyin import Style, lazy_pinyin
    except ImportError:  # pragma: no cover - pypinyin is a dependency
        raise UsageError("rnnlab corpus pinyin needs pypinyin: pip install pypinyin") from None

    kept = 0

    def non_chinese(chunk: str) -> list[str]:
        nonlocal kept
        words = ascii_words(chunk)
        kept += len(words)
        return words

    style = Style.TONE3 if tones else Style.NORMAL
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the text ended with a newline
    out, tokens = [], 0
    for line in lines:
        words = lazy_pinyin(line, style=style, errors=non_chinese, neutral_tone_with_five=True)
        words = [w for w in words if w]  # a chunk with no letters or digits gives nothing
        tokens += len(words)
        out.append(" ".join(words))
    if tokens == 0:
        raise UsageError(
            "no Chinese characters, letters or digits found: nothing to convert to pinyin"
        )
    result = "".join(line + "\n" for line in out)
    return Conversion(result, len(out), tokens - kept, kept, len(set(result)))
