"""README.zh-CN.md, the Chinese guide: its commands are the English docs', its links resolve.

A command in the Chinese guide is a line of a shell code block, a `$ ` line of any other code
block, or an inline `rnnlab ...`/`python ...` span; each must be, character for character, a
command the English documentation shows (README.md, its front page, or a page of docs/ that the
README's command table links to: a code-block line or an inline span), so the guide can never
tell a reader to run something the English docs do not document. The set-up commands must be the
README's own.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ZH = ROOT / "README.zh-CN.md"
EN = ROOT / "README.md"

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
SHELL = {"bash", "sh", "shell", "console"}


def blocks(text: str) -> list[tuple[str, list[str]]]:
    return [(lang, body.splitlines()) for lang, body in FENCE.findall(text)]


def prose(text: str) -> str:
    return FENCE.sub("", text)


def english_text() -> str:
    pages = [EN, *sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)


def english_commands() -> set[str]:
    text = english_text()
    lines = {line.strip().removeprefix("$ ") for _, body in blocks(text) for line in body}
    # `rnnlab serve RUN      # then open ...`: the command without its comment is the same command
    lines |= {re.sub(r"\s{2,}#.*$", "", line) for line in lines}
    spans = {span.strip() for span in INLINE.findall(prose(text))}
    return {c for c in lines | spans if c}


def chinese_commands() -> list[str]:
    text = ZH.read_text(encoding="utf-8")
    found = []
    for lang, body in blocks(text):
        for line in body:
            line = line.strip()
            if line.startswith("$ "):
                found.append(line[2:])
            elif lang in SHELL and line and not line.startswith("#"):
                found.append(line)
    spans = [s.strip() for s in INLINE.findall(prose(text))]
    found += [s for s in spans if s.startswith(("rnnlab ", "python "))]
    return found


def test_every_command_of_the_chinese_guide_is_the_english_readmes():
    commands = chinese_commands()
    assert len(commands) >= 20  # the set-up, the table, the figures
    missing = [c for c in commands if c not in english_commands()]
    assert missing == []


def test_the_chinese_guide_sets_up_with_the_same_two_commands():
    def setup(path: Path) -> list[list[str]]:
        return [body for lang, body in blocks(path.read_text(encoding="utf-8")) if lang == "bash"][
            :2
        ]

    zh, en = setup(ZH), setup(EN)
    assert zh == en and len(zh) == 2
    assert "pip install torch==2.13.0" in zh[0][0] and 'pip install -e ".[test]"' in zh[1][0]


def test_the_guide_is_linked_from_the_top_of_the_readme():
    assert "(README.zh-CN.md)" in EN.read_text(encoding="utf-8").splitlines()[2]


def test_every_link_and_figure_of_the_guide_exists():
    text = ZH.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)", text)
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert len(local) >= 10
    assert [t for t in local if not (ROOT / t).exists()] == []
    english = english_text().replace("](img/", "](docs/img/")  # docs pages link docs/img/
    for figure in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):  # only figures the docs show
        assert f"]({figure})" in english, figure


def test_every_notebook_is_in_the_course_table():
    text = ZH.read_text(encoding="utf-8")
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")):
        assert f"(notebooks/{notebook.name})" in text, notebook.name
