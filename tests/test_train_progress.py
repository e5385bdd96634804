"""`rnnlab.train` shows its progress by default (a notebook-friendly bar), quiet on request; the
command line keeps its own rule (a bar only on a terminal)."""

from __future__ import annotations

import tqdm.auto
import tqdm.std

import rnnlab
from rnnlab.cli import main
from rnnlab.training import loop
from tinyrun import write_corpus

FLAGS = {"hidden": 8, "layers": 1, "batch_size": 4, "num_steps": 8, "epochs": 2}
BAR = "epoch 1/2"  # the bar's description; the per-epoch lines read "epoch   1  train ppl"


def test_the_bar_is_the_notebook_friendly_one(monkeypatch):
    # tqdm.auto is a widget under Jupyter and the text bar elsewhere; it needs ipywidgets to draw
    # a widget, and without them the plain text bar is used (tqdm.auto would only warn).
    bar = loop.progress_bar(range(2), disable=False)
    assert isinstance(bar, tqdm.auto.tqdm)
    bar.close()
    monkeypatch.setattr(loop.importlib.util, "find_spec", lambda name: None)
    bar = loop.progress_bar(range(2), disable=False)
    assert type(bar) is tqdm.std.tqdm
    bar.close()


def test_train_from_python_shows_a_bar_and_the_epoch_lines_by_default(tmp_path, capsys):
    rnnlab.train(corpus=str(write_corpus(tmp_path)), out=tmp_path / "run", **FLAGS)
    out, err = capsys.readouterr()
    assert BAR in err  # the bar, on stderr
    assert "epoch   1  train ppl" in out and "epoch   2  train ppl" in out


def test_quiet_silences_the_bar_and_the_lines(tmp_path, capsys):
    rnnlab.train(corpus=str(write_corpus(tmp_path)), out=tmp_path / "run", quiet=True, **FLAGS)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_progress_false_keeps_the_lines_without_the_bar(tmp_path, capsys):
    corpus = str(write_corpus(tmp_path))
    rnnlab.train(corpus=corpus, out=tmp_path / "run", progress=False, **FLAGS)
    out, err = capsys.readouterr()
    assert BAR not in err
    assert "epoch   2  train ppl" in out


def test_the_command_line_draws_no_bar_off_a_terminal(tmp_path, capsys):
    # Under pytest stderr is not a terminal: logs and pipes get plain lines, no bar.
    corpus = str(write_corpus(tmp_path))
    flags = ["--hidden", "8", "--layers", "1", "--batch-size", "4", "--num-steps", "8"]
    code = main(["train", "--corpus", corpus, "--out", str(tmp_path / "cli"), *flags, "--epochs=2"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "epoch 1/2" not in err
    assert "epoch   2  train ppl" in out
