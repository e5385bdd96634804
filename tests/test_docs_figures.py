"""A figure the README and the pages quote in several places is the same figure everywhere.

The main job (`rnnlab train --corpus timemachine --out runs/timemachine`) is quoted most: its
held-out perplexity and bits/char, the training loop's seconds on its `done:` line, its training
seconds and the whole command's time. The README's output block and its install sentence are
the reference; every other place must agree with them:

- every `done: ... saved to runs/timemachine` line, in any code block;
- every `rnnlab evaluate runs/timemachine` output (the same model, scored again);
- every table row that holds the main job's command;
- the prose of every section whose heading names the main job, and every sentence elsewhere
  that names it: a perplexity, bits/char, seconds or minutes it gives must be the main job's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md"))]
MAIN_JOB = "rnnlab train --corpus timemachine --out runs/timemachine"
DONE = re.compile(
    r"done: held-out perplexity (?P<ppl>\d+\.\d+) \((?P<bpc>\d+\.\d+) bits/char\), "
    r"best [^,]+, (?P<loop_s>\d+) s; saved to runs/timemachine"
)
TIMES = re.compile(r"took (?P<wall>\d+ min \d+ s) in all, (?P<train_s>\d+) s of it training")
EVALUATE = re.compile(
    r"held-out split: loss [\d.]+ nats/char, perplexity (?P<ppl>\d+\.\d+), "
    r"(?P<bpc>\d+\.\d+) bits/char"
)
# How prose quotes each figure.
QUOTED = {
    "ppl": [r"perplexity (\d+\.\d{3})\b", r"main job's (\d+\.\d{3})\b"],
    "bpc": [r"(\d+\.\d{3}) bits"],
    "loop_s": [r"(\d+) s on the `done:` line", r"`done:` line's (\d+) s"],
    "train_s": [r"(\d+) s of (?:it )?(?:is )?training", r"training (\d+) s\b"],
    "wall": [r"(\d+ min \d+ s)"],
}


@dataclass(frozen=True)
class Quote:
    page: str
    line: int
    figure: str
    value: str


def _reference() -> dict[str, str]:
    """The main job's figures as the README states them: its output block and install line."""
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    done, times = DONE.search(text), TIMES.search(text)
    assert done and times, "the README must show the main job's done: line and its times"
    return {**done.groupdict(), **times.groupdict()}


def _blocks_and_prose(lines: list[str]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    code, prose, fenced = [], [], False
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        (code if fenced else prose).append((number, line))
    return code, prose


def _sentences(prose: list[tuple[int, str]]) -> list[tuple[int, str, str]]:
    """(line, heading, sentence) for the prose of a page; table rows are their own sentences."""
    out: list[tuple[int, str, str]] = []
    heading, paragraph, start = "", [], 0

    def flush() -> None:
        text = " ".join(" ".join(paragraph).split())
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z*`(\[])", text):
            out.append((start, heading, sentence))
        paragraph.clear()

    for number, line in prose:
        if line.startswith("#"):
            flush()
            heading = line.lower()
        elif line.startswith("|"):
            flush()
            out.append((number, heading, line))
        elif not line.strip():
            flush()
        else:
            if not paragraph:
                start = number
            paragraph.append(line)
    flush()
    return out


def quotes(path: Path) -> list[Quote]:
    """Every place a page quotes one of the main job's figures."""
    name = str(path.relative_to(ROOT))
    code, prose = _blocks_and_prose(path.read_text(encoding="utf-8").splitlines())
    found: list[Quote] = []
    for i, (number, line) in enumerate(code):
        if m := DONE.search(line):
            found += [Quote(name, number, k, v) for k, v in m.groupdict().items()]
        if "$ rnnlab evaluate runs/timemachine" in line and "--" not in line and i + 1 < len(code):
            m = EVALUATE.search(code[i + 1][1])
            assert m, f"{name}:{number}: the evaluate output does not follow its command"
            found += [Quote(name, code[i + 1][0], k, v) for k, v in m.groupdict().items()]
    for number, heading, sentence in _sentences(prose):
        if sentence.startswith("|"):  # a table row counts when it holds the main job's command
            if f"`{MAIN_JOB}`" not in sentence:
                continue
        elif "main job" not in heading and "main job" not in sentence.lower():
            continue
        if sentence.startswith("|"):
            for value in re.findall(r"(?<![\d.])(\d\.\d{3})(?![\d])", sentence):
                found.append(Quote(name, number, "ppl_or_bpc", value))
            for value in re.findall(r"(\d+) s\b", sentence):
                found.append(Quote(name, number, "train_s", value))
            continue
        for figure, patterns in QUOTED.items():
            for pattern in patterns:
                found += [Quote(name, number, figure, v) for v in re.findall(pattern, sentence)]
    return found


def test_the_main_job_is_quoted_the_same_everywhere():
    ref = _reference()
    allowed = {**{k: {v} for k, v in ref.items()}, "ppl_or_bpc": {ref["ppl"], ref["bpc"]}}
    found = [q for page in PAGES for q in quotes(page)]
    wrong = [q for q in found if q.value not in allowed[q.figure]]
    assert not wrong, "\n".join(
        f"{q.page}:{q.line}: {q.figure} {q.value}, but the README says "
        f"{' or '.join(sorted(allowed[q.figure]))}"
        for q in wrong
    )
    # Not vacuous: the figures are quoted in the README and on the pages, more than once each.
    pages = {q.page for q in found}
    assert {"README.md", "docs/getting-started.md", "docs/commands.md"} <= pages
    for figure in ("ppl", "bpc", "loop_s", "train_s", "wall"):
        assert sum(q.figure == figure for q in found) >= 2, figure


def test_a_disagreeing_quote_is_caught(tmp_path, monkeypatch):
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text(
        "## The main job\n\nIt reaches held-out perplexity 3.865 (1.947 bits per character).\n"
        "\n```\n$ rnnlab evaluate runs/timemachine\n"
        "timemachine held-out split: loss 1.3497 nats/char, perplexity 3.856, 1.974 bits/char\n"
        "```\n\n| the defaults | `rnnlab train --corpus timemachine --out runs/timemachine` | "
        "124 s | 3.856 (1.947) |\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(__import__("sys").modules[__name__], "ROOT", tmp_path)
    found = {(q.figure, q.value) for q in quotes(page)}
    assert {("ppl", "3.865"), ("bpc", "1.974"), ("train_s", "124")} <= found
