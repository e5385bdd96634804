"""A tiny trained run for the API, server and browser tests: seconds to train, one thread.

The text has quotes, brackets, words and lines, so every unit pattern varies on it.
"""

from __future__ import annotations

from pathlib import Path

import rnnlab

TEXT = (
    'she said "the cat sat on the mat." (and the dog sat on the log.)\n'
    'he said "no, the dog sat on the mat." [the cat sat on the log.]\n'
) * 20
# The flags `rnnlab train` takes for the same run (tests compare the two doors).
FLAGS = {"hidden": 24, "layers": 2, "batch_size": 4, "num_steps": 16, "epochs": 3}
CLI_FLAGS = [
    *("--hidden", "24", "--layers", "2", "--batch-size", "4", "--num-steps", "16"),
    *("--epochs", "3"),
]


def write_corpus(directory: Path) -> Path:
    path = directory / "quotes.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def train_tiny(directory: Path, name: str = "tiny") -> rnnlab.TrainedRun:
    """Train the tiny run into directory/name (its corpus beside it) and load it."""
    corpus = write_corpus(directory)
    return rnnlab.train(corpus=str(corpus), out=directory / name, **FLAGS)
