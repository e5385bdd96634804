"""The example scripts run, deterministically, and reach their exact target strings."""

from __future__ import annotations

import runpy
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


def test_the_walkthrough_runs(tmp_path):
    main_fn = _main("walkthrough.py")
    result = main_fn(tmp_path)
    assert result["states_shape"] == (400, 1, 32)
    assert {c for c, _ in result["next"][:2]} == {"t", "i"}  # sat or said
    assert len(result["continuation"]) == 40
    assert abs(result["word_unit"].r) > 0.5  # a unit that follows the position in the word
    assert result["surprise"][1] > 1.0
