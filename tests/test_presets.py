"""Presets: the d2l configurations exactly, flags over presets, --train-chars truncation."""

from __future__ import annotations

import json

import pytest

from rnnlab.cli import main
from rnnlab.corpus import DataConfig
from rnnlab.data import prepare_data
from rnnlab.errors import UsageError
from rnnlab.model import ModelConfig
from rnnlab.presets import PRESETS, SMALL_TEXT_MAX_CHARS, budget_preset, get_preset
from rnnlab.training import TrainConfig

D2L_TRAIN = dict(optimizer="sgd", lr=1.0, clip=1.0, batch_size=32, num_steps=35)
D2L_TRAIN.update(sampling="sequential", lr_decay=1.0, epochs=500)


@pytest.mark.parametrize(
    "name, hidden, impl", [("d2l", 512, "scratch"), ("d2l-concise", 256, "torch")]
)
def test_d2l_presets_are_the_books_configuration(name, hidden, impl):
    p = get_preset(name)
    assert p.name == name and p.note and p.description
    assert p.data == {"corpus": "timemachine", "cleaning": "letters", "train_chars": 10_000}
    assert p.model == dict(cell="rnn", hidden=hidden, layers=1, dropout=0.0, embed=0, impl=impl)
    assert p.train == D2L_TRAIN


def test_every_preset_builds_valid_configs():
    for p in PRESETS.values():
        DataConfig(**p.data), ModelConfig(**p.model), TrainConfig(**p.train)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(UsageError, match="unknown preset 'nope': use one of d2l, d2l-concise"):
        get_preset("nope")


def test_train_chars_truncates_training_only():
    full = prepare_data(DataConfig(corpus="timemachine"))
    cut = prepare_data(DataConfig(corpus="timemachine", train_chars=10_000))
    assert len(cut.train_ids) == 10_000
    # The held-out text is the same characters; only their ids may differ (vocabularies).
    assert cut.vocab.decode(cut.valid_ids.tolist()) == full.vocab.decode(full.valid_ids.tolist())
    assert cut.vocab.decode(cut.train_ids.tolist()) == full.vocab.decode(
        full.train_ids[:10_000].tolist()
    )


def test_train_chars_vocabulary_comes_from_the_kept_characters():
    data = prepare_data(DataConfig(corpus="alphabet", train_chars=5))
    assert len(data.train_ids) == 5
    assert len(data.vocab) == 6  # a-e and <unk>
    assert (data.valid_ids == 0).sum() > 0  # unseen letters are honest <unk>s


def test_train_chars_is_validated():
    with pytest.raises(UsageError, match="--train-chars must be at least 1"):
        DataConfig(train_chars=0)


def run_train(tmp_path, capsys, *flags: str) -> tuple[int, dict, str]:
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--json", *flags])
    captured = capsys.readouterr()
    config = json.loads((out / "config.json").read_text()) if code == 0 else {}
    return code, config, captured.err


def test_preset_runs_end_to_end_and_records_resolved_values(tmp_path, capsys):
    flags = ["--preset", "d2l-concise", "--epochs", "1", "--max-steps", "2"]
    code, config, err = run_train(tmp_path, capsys, *flags)
    assert code == 0
    assert "preset d2l-concise:" in err and "training perplexity" in err
    assert config["data"]["train_chars"] == 10_000
    assert config["model"]["hidden"] == 256 and config["model"]["embed"] == 0
    assert config["train"]["optimizer"] == "sgd" and config["train"]["lr"] == 1.0
    assert config["train"]["epochs"] == 1  # the explicit flag wins over the preset's 500
    assert config["train"]["lr_decay"] == 1.0 and config["train"]["max_steps"] == 2


def test_explicit_flags_override_the_preset(tmp_path, capsys):
    flags = ["--preset", "d2l", "--epochs", "2", "--hidden", "8", "--max-steps", "1"]
    flags += ["--train-chars", "2000", "--quiet"]
    code, config, err = run_train(tmp_path, capsys, *flags)
    assert code == 0 and err == ""  # --quiet hides the note
    assert config["train"]["epochs"] == 2 and config["model"]["hidden"] == 8
    assert config["data"]["train_chars"] == 2000
    assert config["model"]["impl"] == "scratch" and config["train"]["num_steps"] == 35


def test_unknown_preset_on_the_command_line(tmp_path, capsys):
    assert main(["train", "--preset", "nope", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'d2l', 'd2l-concise'" in err


def test_train_chars_too_short_for_a_minibatch(tmp_path, capsys):
    out = str(tmp_path / "r")
    flags = ["--train-chars", "500", "--max-steps", "1", "--epochs", "1"]  # bounded if it trains
    assert main(["train", "--preset", "d2l", *flags, "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: training text cut to --train-chars 500 has 500 characters")
    assert "needs at least 1155" in err[-1]


def test_the_preset_command_with_resume_appended_continues(tmp_path, capsys):
    out = str(tmp_path / "r")
    flags = ["--train-chars", "2000", "--hidden", "32", "--epochs", "2", "--quiet"]
    assert main(["train", "--preset", "d2l", *flags, "--max-steps", "1", "--out", out]) == 0
    capsys.readouterr()
    cmd = ["train", "--preset", "d2l", *flags, "--max-steps", "2", "--out", out, "--resume"]
    assert main([*cmd, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
    assert main(["train", "--preset", "d2l-concise", *flags, "--out", out, "--resume"]) == 2
    assert "cannot change --impl (the run has 'scratch', given 'torch')" in capsys.readouterr().err


def test_train_chars_streamed_equals_read_whole(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("".join(chr(97 + (i * i) % 26) for i in range(3000)), encoding="utf-8")
    config = DataConfig(corpus=str(f), train_chars=1000)
    whole = prepare_data(config)
    streamed = prepare_data(config, stream_over=0, chunk_bytes=700)  # the cut inside a chunk
    assert whole.vocab.to_json() == streamed.vocab.to_json()
    assert whole.train_ids.tolist() == streamed.train_ids.tolist() and len(whole.train_ids) == 1000
    assert whole.valid_ids.tolist() == streamed.valid_ids.tolist()


def test_the_small_text_preset_is_recorded_and_flags_win(tmp_path, capsys):
    flags = ["--preset", "small-text", "--corpus", "alphabet", "--max-time", "0.5"]
    code, config, err = run_train(tmp_path, capsys, *flags, "--hidden", "16")
    assert code == 0 and config["preset"] == "small-text" and "preset small-text:" in err
    small = get_preset("small-text")
    for name, value in small.model.items():
        expected = 16 if name == "hidden" else value  # the flag given wins
        assert config["model"][name] == expected, name
    assert config["train"]["schedule"] == small.train["schedule"]


def test_the_budget_rule_is_a_size_threshold_on_the_training_text():
    small, rule = budget_preset(SMALL_TEXT_MAX_CHARS - 1)
    assert small is get_preset("small-text") and "the small-text recipe" in rule
    assert budget_preset(SMALL_TEXT_MAX_CHARS) == (
        None,
        f"--max-time alone on {SMALL_TEXT_MAX_CHARS:,} training characters "
        f"({SMALL_TEXT_MAX_CHARS:,} or more): the defaults",
    )


def test_a_time_budget_alone_on_a_small_text_trains_the_small_text_recipe(tmp_path, capsys):
    """BENCHMARKS.md: at equal time the small-text recipe beat the defaults on small texts and
    lost on a million characters, so `--max-time` alone picks by the training text's size."""
    flags = ["--corpus", "alphabet", "--max-time", "0.5", "--hidden", "16"]
    code, config, _ = run_train(tmp_path, capsys, *flags)
    n_train = prepare_data(DataConfig(corpus="alphabet")).train_ids.numel()
    assert code == 0 and config["preset"] == "small-text"
    assert config["preset_rule"] == budget_preset(n_train)[1]
    assert f"{n_train:,} training characters" in config["preset_rule"]
    assert config["model"]["hidden"] == 16  # the flag given wins
    for name, value in get_preset("small-text").model.items():
        assert name == "hidden" or config["model"][name] == value, name


def test_a_time_budget_alone_on_a_large_text_keeps_the_defaults(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("rnnlab.presets.SMALL_TEXT_MAX_CHARS", 100)  # alphabet is larger
    code, config, _ = run_train(tmp_path, capsys, "--corpus", "alphabet", "--max-time", "0.5")
    assert code == 0 and "preset" not in config
    assert config["preset_rule"].endswith("(100 or more): the defaults")
    assert config["model"]["cell"] == ModelConfig().cell
    assert config["train"]["schedule"] == TrainConfig().schedule


@pytest.mark.parametrize(
    "other", [["--epochs", "1"], ["--max-steps", "3"], ["--preset", "d2l-concise"]]
)
def test_a_time_budget_with_another_budget_or_a_preset_follows_no_rule(tmp_path, capsys, other):
    flags = ["--corpus", "alphabet", "--max-time", "0.5", "--hidden", "16", *other]
    code, config, _ = run_train(tmp_path, capsys, *flags)
    assert code == 0 and "preset_rule" not in config
    assert config.get("preset") == (other[1] if other[0] == "--preset" else None)
    if other[0] != "--preset":
        assert config["model"]["cell"] == ModelConfig().cell
        assert config["model"]["weight_drop"] == ModelConfig().weight_drop


def test_the_python_api_takes_the_preset(tmp_path):
    import rnnlab

    run = rnnlab.train(
        corpus="alphabet", preset="small-text", max_time=0.5, hidden=16, out=tmp_path / "r",
        quiet=True,
    )  # fmt: skip
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["preset"] == "small-text" and config["model"]["cell"] == "lstm"
    assert run.model.describe()["model"]["cell"] == "lstm"


def test_the_python_api_follows_the_same_budget_rule(tmp_path):
    import rnnlab

    rnnlab.train(corpus="alphabet", max_time=0.5, hidden=16, out=tmp_path / "r", quiet=True)
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["preset"] == "small-text" and "preset_rule" in config
