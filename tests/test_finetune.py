"""Fine-tuning (`rnnlab train --init-from RUN --corpus NEW`): the trained rows are kept."""

from __future__ import annotations

import json

import pytest
import torch

import rnnlab
from rnnlab import checkpoint as ckpt
from rnnlab.cli import main
from rnnlab.model import RNNLM, ModelConfig, load_with_new_rows
from rnnlab.training.config import RuntimeConfig
from rnnlab.training.lm import start_lm_run
from tinyrun import train_tiny  # hidden 24, 2 layers: what the messages name

NEW_TEXT = "the cat sat on the mat. zebras quack! " * 40  # z, b, q, k, ! are new; no quotes


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("base")).run_dir


def new_corpus(tmp_path):
    path = tmp_path / "new.txt"
    path.write_text(NEW_TEXT, encoding="utf-8")
    return path


def test_shared_characters_keep_their_trained_rows_before_the_first_update(base, tmp_path):
    trained = rnnlab.load(base)
    lines = []
    trainer = start_lm_run(
        None, {"corpus": str(new_corpus(tmp_path))}, {}, {"init_from": str(base), "epochs": 1},
        RuntimeConfig(device="cpu"), tmp_path / "ft", log=lines.append,
    )  # fmt: skip
    old_v = len(trained.vocab)
    new_state, old_state = trainer.model.state_dict(), trained.run.model.state_dict()
    added = trainer.run_config["init_from"]["added"]  # what config.json will record
    assert sorted(added) == sorted(set(NEW_TEXT) - set(trained.vocab.idx_to_token))
    assert {"z", "q", "k", "!"} <= set(added)
    for name, old in old_state.items():
        new = new_state[name]
        if old.shape == new.shape:
            assert torch.equal(new, old), name
        else:  # the vocabulary dimension grew: the first old_v slices are the trained ones
            dim = next(d for d in range(new.dim()) if new.shape[d] != old.shape[d])
            assert new.shape[dim] == old_v + len(added)
            assert torch.equal(new.narrow(dim, 0, old_v), old), name
    assert trainer.model.output.out_features == old_v + len(added)
    assert f"{len(added)} character(s) new to it get fresh rows" in lines[0]


def test_fine_tuning_from_the_cli_records_where_it_started(base, tmp_path, capsys):
    out = tmp_path / "ft"
    argv = ["train", "--corpus", str(new_corpus(tmp_path)), "--init-from", str(base)]
    argv += ["--epochs", "1", "--batch-size", "4", "--num-steps", "16", "--out", str(out)]
    assert main(argv) == 0
    config = json.loads((out / ckpt.CONFIG).read_text())
    assert config["train"]["init_from"] == str(base)
    assert config["init_from"]["run"] == str(base) and config["model"]["hidden"] == 24
    lm = rnnlab.load(out)
    old = rnnlab.load(base)
    assert set(old.vocab.idx_to_token) <= set(lm.vocab.idx_to_token)  # old ones stay known
    assert '"' in lm.vocab.idx_to_token and "z" in lm.vocab.idx_to_token
    assert len(lm.generate("zebras ", 10)) == 10
    # the same command with --resume continues it
    assert main([*argv, "--epochs", "2", "--resume"]) == 0


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--hidden", "32"], "--hidden 32 (it has 24)"),
        (["--cell", "lstm"], "--cell 'lstm' (it has 'gru')"),
        (["--layers", "1"], "--layers 1 (it has 2)"),
    ],
)
def test_an_incompatible_model_is_refused_in_one_line(base, tmp_path, capsys, flags, message):
    argv = ["train", "--corpus", str(new_corpus(tmp_path)), "--init-from", str(base), *flags]
    assert main([*argv, "--out", str(tmp_path / "ft")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "cannot fine-tune" in err[0]
    assert not (tmp_path / "ft").exists()


def test_a_missing_run_to_start_from_exits_3(tmp_path, capsys):
    argv = ["train", "--corpus", str(new_corpus(tmp_path)), "--init-from", str(tmp_path / "nope")]
    assert main([*argv, "--out", str(tmp_path / "ft")]) == 3
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_dropout_may_change_and_the_api_takes_init_from(base, tmp_path):
    run = rnnlab.train(
        corpus=str(new_corpus(tmp_path)), init_from=str(base), dropout=0.0, epochs=1,
        batch_size=4, num_steps=16, out=tmp_path / "ft",
    )  # fmt: skip
    assert run.model.run.model_config.dropout == 0.0
    assert run.model.run.model_config.hidden == 24


def test_rows_grow_along_the_vocabulary_only():
    old = RNNLM(5, ModelConfig(hidden=4, layers=1, embed=0))  # one-hot: W_ih has V columns
    new = RNNLM(7, ModelConfig(hidden=4, layers=1, embed=0))
    assert load_with_new_rows(new, old.state_dict(), 5) == 3  # W_ih, output weight and bias
    assert torch.equal(new.rnn.weight_ih_l0[:, :5], old.rnn.weight_ih_l0)
    with pytest.raises(ValueError, match="does not grow"):
        load_with_new_rows(RNNLM(7, ModelConfig(hidden=6, layers=1)), old.state_dict(), 5)
