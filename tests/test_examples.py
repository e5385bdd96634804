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
