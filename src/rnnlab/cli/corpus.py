"""`rnnlab corpus pinyin IN OUT`: make a corpus file; flags in, the library, one line out."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rnnlab.checkpoint import write_atomic
from rnnlab.corpus import check_encoding, read_text_file
from rnnlab.errors import UsageError
from rnnlab.pinyin import to_pinyin

PINYIN_DESCRIPTION = """\
Convert a Chinese text file to a pinyin corpus with pypinyin (offline), in the format of the
built-in `pinyin` corpus: one output line per input line, lowercase tokens separated by single
spaces. Each hanzi becomes its syllable (toneless: zhong guo ren); each run of ASCII letters or
digits (full-width forms folded to ASCII) is kept, lower-cased, as one token (ABC 123 -> abc 123);
punctuation, spaces and other symbols are dropped. u-umlaut is written v (lv, nv).
Train on the result with `rnnlab train --corpus OUT`."""


def add_parsers(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add `corpus` with its `pinyin` subcommand to a subparsers action."""
    parser = subparsers.add_parser("corpus", help="make a corpus file: pinyin from Chinese text")
    sub = parser.add_subparsers(dest="corpus_command", required=True, parser_class=type(parser))
    p = sub.add_parser(
        "pinyin",
        help="convert a Chinese text file to a pinyin corpus",
        description=PINYIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="IN", help="Chinese text file to convert")
    p.add_argument("output", metavar="OUT", type=Path, help="pinyin corpus file to write")
    p.add_argument(
        "--tones",
        action="store_true",
        help="write the tone as a number after each syllable, 5 for the neutral tone "
        "(zhong1 guo2 ren2): easier for a character model than tone marks, which would "
        "double every vowel",
    )
    p.add_argument(
        "--encoding", default="utf-8", help="text encoding of IN (e.g. gb18030; default: utf-8)"
    )
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")


def check_output(path: Path, force: bool) -> None:
    """Refuse to replace a file unless asked, and a path that cannot be a file at all."""
    if path.is_dir():
        raise UsageError(f"output {str(path)!r} is a directory: give a file name")
    if path.exists() and not force:
        raise UsageError(
            f"output {str(path)!r} already exists: pass --force to overwrite it, or choose "
            "another OUT"
        )
    if not path.parent.is_dir():
        raise UsageError(
            f"cannot write {str(path)!r}: directory {str(path.parent)!r} does not exist"
        )


def run(args: argparse.Namespace) -> int:
    """Run the `corpus` subcommand named in `args`."""
    out: Path = args.output
    check_output(out, args.force)  # before the work, not after it
    check_encoding(args.encoding)
    text = read_text_file(args.input, args.encoding)
    result = to_pinyin(text, tones=args.tones)
    try:
        write_atomic(out, result.text.encode("utf-8"))
    except OSError as e:
        raise UsageError(f"cannot write {str(out)!r}: {e.strerror}") from None
    print(
        f"wrote {out}: {result.lines:,} lines, {result.syllables:,} syllables"
        f"{f' and {result.kept:,} letter/digit tokens' if result.kept else ''}, "
        f"{result.distinct_chars} distinct characters"
    )
    return 0


COMMANDS = {"corpus": run}
