"""The example scripts run, deterministically, and reach their exact target strings."""

from __future__ import annotations

import runpy
import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _main(name: str):
    # run_path does not execute the `if __name__ == "__main__":` block, only defines main().
    return runpy.run_path(str(EXAMPLES / name))["main"]


def test_hello_becomes_ohlol():
    result = _main("hello_ohlol.py")()
    assert result["predicted"] == "ohlol"


def test_sentence_is_recited_exactly_from_its_first_character():
    result = _main("memorize_sentence.py")()
    assert result["text"] == "Hello, how are you?"


def test_the_walkthrough_runs(tmp_path, monkeypatch):
    # Its cells are top-level code (each runs on its own in a notebook): running the file runs
    # them all, in a scratch folder under tmp_path, and leaves their variables behind.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cells = runpy.run_path(str(EXAMPLES / "walkthrough.py"))
    assert Path(cells["root"]).parent == tmp_path
    result = {
        "states_shape": tuple(cells["states"].shape),
        "next": cells["lm"].next("the cat sa", k=3),
        "continuation": cells["continuation"],
        "word_unit": cells["best"][0],
        "surprise": (cells["char"], cells["bits"]),
    }
    assert result["states_shape"] == (400, 1, 32)
    assert {c for c, _ in result["next"][:2]} == {"t", "i"}  # sat or said
    assert len(result["continuation"]) == 40
    assert abs(result["word_unit"].r) > 0.5  # a unit that follows the position in the word
    assert result["surprise"][1] > 1.0


def test_every_walkthrough_cell_is_top_level():
    """A `# %%` cell indented inside a function cannot run on its own in a notebook."""
    source = (EXAMPLES / "walkthrough.py").read_text(encoding="utf-8")
    cells = [line for line in source.splitlines() if line.lstrip().startswith("# %%")]
    assert len(cells) >= 4
    assert all(line.startswith("# %%") for line in cells)
    assert "def main(" not in source
