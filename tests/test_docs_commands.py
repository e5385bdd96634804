"""Every `rnnlab ...` command the README and the documentation pages show is one the CLI accepts.

The commands are read from the Markdown itself: each line of a fenced code block that runs
rnnlab (`rnnlab ...`, `python -m rnnlab ...`, `torchrun ... -m rnnlab ...`, a `$ ` prompt, a
`&&` chain, a `\\` continuation), and each inline code span that starts with `rnnlab `. Each is
checked against the parser the command itself builds (`rnnlab.cli.build_parser()`): the
subcommand exists, every `--flag` is one of that subcommand's own flags, spelled out (argparse
would accept an abbreviation; a page should not teach one), and a value given to a flag with
choices is one of them. A code-block command is also parsed whole, as the shell would pass it,
unless it is a synopsis (`[...]`, `A|B`, `...`). Nothing is run.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from rnnlab.cli import build_parser
from rnnlab.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(\s*)(```|~~~)")
SPAN = re.compile(r"`([^`]+)`")
SYNOPSIS = re.compile(r"[\[\]|]|\.\.\.")  # [optional], A|B, ...: a synopsis, not a command
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_:.-]*$")  # RUN, COMMAND, N, ...


@dataclass(frozen=True)
class Shown:
    """A command as a page shows it."""

    page: str
    line: int
    text: str
    in_block: bool  # from a code block (parsed whole) or an inline span (flags checked)

    def where(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def _rnnlab_part(tokens: list[str]) -> list[str] | None:
    """The arguments after the program, for a command line that runs rnnlab; None otherwise."""
    if not tokens:
        return None
    if tokens[0] == "rnnlab" and tokens[1:2] != ["torchrun"]:
        return tokens[1:]
    # `python -m rnnlab ...`, `torchrun ... -m rnnlab ...`, `rnnlab torchrun ... -m rnnlab ...`
    if tokens[0] in ("python", "python3", "torchrun", "rnnlab"):
        for i in range(len(tokens) - 1):
            if tokens[i] == "-m" and tokens[i + 1] == "rnnlab":
                return tokens[i + 2 :]
        if tokens[0] == "rnnlab":  # `rnnlab torchrun` shown without what it launches
            return ["torchrun"]
    return None


def _commands_in_block(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The command lines of one code block: after `$ ` where the block has prompts (the rest is
    output), else every line; continuations joined, `&&` chains split."""
    prompted = any(text.lstrip().startswith("$ ") for _, text in lines)
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, text in lines:
        if pending is not None:
            number, text = pending[0], pending[1] + " " + text.strip()
            pending = None
        if text.rstrip().endswith("\\"):
            pending = (number, text.rstrip()[:-1])
            continue
        stripped = text.strip()
        if prompted:
            if not stripped.startswith("$ "):
                continue
            stripped = stripped[2:]
        joined.append((number, stripped))
    out = []
    for number, text in joined:
        for part in text.split("&&"):
            out.append((number, part.strip()))
    return out


def shown_commands(path: Path, root: Path = ROOT) -> list[Shown]:
    """Every rnnlab command a Markdown page shows, in code blocks and inline spans."""
    name = str(path.relative_to(root))
    found: list[Shown] = []
    block: list[tuple[int, str]] | None = None
    language = ""
    prose: list[tuple[int, str]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = FENCE.match(line)
        if fence and block is None:
            block, language = [], line.strip()[3:].strip()
            continue
        if fence and block is not None:
            if language not in ("python", "py", "json", "toml", "yaml"):
                for n, text in _commands_in_block(block):
                    found.append(Shown(name, n, text, in_block=True))
            block = None
            continue
        if block is not None:
            block.append((number, line))
        else:
            prose.append((number, line))
    # Inline spans may wrap onto the next line: read the prose as one text, keeping line numbers.
    text = "\n".join(line for _, line in prose)
    starts = [n for n, _ in prose]
    offsets = [0]
    for _, line in prose:
        offsets.append(offsets[-1] + len(line) + 1)
    for m in SPAN.finditer(text):
        span = " ".join(m.group(1).split())
        if span.startswith("rnnlab ") or span.startswith("python -m rnnlab "):
            index = max(i for i, o in enumerate(offsets[:-1]) if o <= m.start())
            found.append(Shown(name, starts[index], span, in_block=False))
    return [s for s in found if _is_rnnlab(s.text)]


def _is_rnnlab(text: str) -> bool:
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:
        return text.startswith("rnnlab ")  # unbalanced quotes: reported by the check
    return _rnnlab_part(tokens) is not None


def _no_abbreviations(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The parser and every subparser, refusing `--temp` for `--temperature`."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _no_abbreviations(sub)
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _clean(token: str) -> str:
    return token.strip("[]{}(),.;").rstrip(":")


def problems(shown: Shown, parser: argparse.ArgumentParser) -> list[str]:
    """What is wrong with one shown command (an empty list when nothing is)."""
    try:
        tokens = shlex.split(shown.text, comments=True)
    except ValueError as e:
        return [f"cannot be split as the shell would: {e}"]
    args = _rnnlab_part(tokens)
    assert args is not None
    if not args or args[0] == "torchrun":  # torchrun's own flags are PyTorch's, not rnnlab's
        return []
    current, path, rest = parser, [], list(args)
    while rest and (subs := _subparsers(current)):
        word = _clean(rest[0])
        if not word or PLACEHOLDER.match(word):  # `rnnlab COMMAND --help`, `rnnlab ...`
            return []
        if word not in subs:
            return [f"`rnnlab {' '.join(path + [word])}`: no such command"]
        current, path, rest = subs[word], [*path, word], rest[1:]
    if _subparsers(current) and not rest and not shown.in_block:
        return []  # `rnnlab seq2seq` named as a group in prose
    found = []
    options = current._option_string_actions
    for i, raw in enumerate(rest):
        for piece in raw.split("|"):
            token = _clean(piece)
            if not token.startswith("--"):
                continue
            name, _, value = token.partition("=")
            if name not in options:
                found.append(f"`rnnlab {' '.join(path)}` has no flag {name}")
                continue
            action = options[name]
            if action.choices is None or action.nargs == 0:
                continue
            if not value and i + 1 < len(rest) and not rest[i + 1].startswith("-"):
                value = rest[i + 1]
            for choice in filter(None, (_clean(v) for v in value.split("|"))):
                if PLACEHOLDER.match(choice) or choice in action.choices:
                    continue
                # A comma-separated sweep axis is validated by the sweep; argparse sees one value.
                found.append(f"{name} {choice!r} is not one of {sorted(action.choices)}")
    if found or not shown.in_block or SYNOPSIS.search(shown.text) or "-h" in rest:
        return found
    try:
        parser.parse_args([*path, *rest])
    except UsageError as e:
        return [f"does not parse: {e}"]
    return []


def all_shown() -> list[Shown]:
    return [s for page in PAGES for s in shown_commands(page)]


def test_the_pages_show_many_commands_and_the_readme_set_up_ones():
    shown = all_shown()
    assert len(shown) > 100
    pages = {s.page for s in shown}
    assert {"README.md", "docs/commands.md", "docs/getting-started.md"} <= pages
    readme = [s.text for s in shown if s.page == "README.md" and s.in_block]
    assert "rnnlab train --corpus timemachine --out runs/timemachine" in readme  # the set-up chain


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_a_page_shows_is_one_the_cli_accepts(page):
    parser = _no_abbreviations(build_parser())
    bad = [f"{s.where()}\n    {p}" for s in shown_commands(page) for p in problems(s, parser)]
    assert not bad, "commands the CLI would refuse:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("markdown", "complaint"),
    [
        ("```\nrnnlab trian --corpus x\n```", "no such command"),
        ("```\nrnnlab train --corpus x --no-such-flag 3\n```", "has no flag --no-such-flag"),
        ("```\nrnnlab predict RUN --prefix a --temp 0.7\n```", "has no flag --temp"),  # abbreviated
        ("```\nrnnlab train --cell transformer\n```", "is not one of"),
        ("```\n$ rnnlab predict RUN --prefix a --strategy nucleus\nout\n```", "is not one of"),
        ("Use `rnnlab evaluate RUN --dinamic` here.", "has no flag --dinamic"),
        ("```\npython3 -m venv v && rnnlab train --epochs many\n```", "does not parse"),
        ("```\ntorchrun --nproc-per-node 2 -m rnnlab train --batchsize 8\n```", "has no flag"),
        ("```\nrnnlab train --sampling random|shuffled\n```", "is not one of"),
    ],
)
def test_the_check_catches_a_wrong_command(tmp_path, markdown, complaint):
    page = tmp_path / "page.md"
    page.write_text(markdown + "\n", encoding="utf-8")
    parser = _no_abbreviations(build_parser())
    shown = shown_commands(page, tmp_path)
    assert shown, markdown
    assert any(complaint in p for s in shown for p in problems(s, parser)), markdown


def test_output_lines_and_other_programs_are_not_commands(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```\n$ rnnlab check\nrnnlab says hello --not-a-flag\n```\n"
        "```\npip install -e . && python -m pytest -n 2\n```\n"
        "```python\nrnnlab.train(corpus='x')\n```\n"
        "In prose, `rnnlab seq2seq` and `rnnlab.load(run)`.\n",
        encoding="utf-8",
    )
    assert [s.text for s in shown_commands(page, tmp_path)] == ["rnnlab check", "rnnlab seq2seq"]
