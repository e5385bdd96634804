"""The `rnnlab` command end to end on tiny corpora, and every user mistake the issue lists."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnlab import checkpoint as ckpt
from rnnlab.cli import main
from rnnlab.training import load_run

TEXT = "the cat sat on the mat. the dog sat on the log. " * 40
TINY = ["--hidden", "16", "--batch-size", "4", "--num-steps", "8", "--epochs", "2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("data") / "tiny.txt"
    f.write_text(TEXT, encoding="utf-8")
    return f


@pytest.fixture(scope="module")
def run(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--corpus", str(corpus), "--out", str(out), "--quiet", *TINY]) == 0
    return out


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_writes_a_complete_run(run):
    names = {p.name for p in run.iterdir()}
    assert {"checkpoints", "config.json", "metrics.csv", "steps.csv", "manifest.json"} <= names
    assert (load_run(run).checkpoint / "model.safetensors").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["vocab"][0] == "<unk>" and config["torch_version"]
    assert config["model"]["hidden"] == 16 and config["train"]["num_steps"] == 8
    assert len((run / "metrics.csv").read_text().splitlines()) == 3
    assert not any(p.name.endswith(".tmp") for p in run.rglob("*"))


def test_train_json_summary(tmp_path, corpus, capsys):
    out = tmp_path / "r"
    assert main(["train", "--corpus", str(corpus), "--out", str(out), "--json", *TINY]) == 0
    summary = last_json(capsys)
    for key in (
        "train_loss",
        "train_ppl",
        "valid_loss",
        "valid_ppl",
        "valid_bpc",
        "epochs",
        "seconds",
        "chars_per_sec",
        "run_dir",
    ):
        assert key in summary
    assert summary["epochs"] == 2 and summary["run_dir"] == str(out)


def test_same_command_same_metrics(tmp_path, corpus, capsys):
    results = []
    for name in ("a", "b"):
        main(["train", "--corpus", str(corpus), "--out", str(tmp_path / name), "--json", *TINY])
        s = last_json(capsys)
        results.append((s["train_loss"], s["valid_loss"], s["valid_ppl"]))
    assert results[0] == results[1]


def test_predict_and_json(run, capsys):
    assert main(["predict", str(run), "--prefix", "the ", "--steps", "10"]) == 0
    text = capsys.readouterr().out
    assert "next character" in text and "continuation" in text
    assert main(["predict", str(run), "--prefix", "the ", "--steps", "10", "--json"]) == 0
    result = last_json(capsys)
    assert result["prefix"] == "the " and len(result["continuation"]) == 10
    probs = [n["prob"] for n in result["next"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-9


def test_sampling_is_reproducible_with_seed(run, capsys):
    outs = []
    for seed in ("1", "1", "2"):
        main(
            [
                "predict",
                str(run),
                "--prefix",
                "t",
                "--steps",
                "40",
                "--temperature",
                "1.5",
                "--seed",
                seed,
                "--json",
            ]
        )
        outs.append(last_json(capsys)["continuation"])
    assert outs[0] == outs[1] != outs[2]


def test_evaluate_default_and_other_text(run, corpus, capsys):
    assert main(["evaluate", str(run), "--json"]) == 0
    m = last_json(capsys)
    assert m["chars"] == round(len(TEXT) * 0.1) - 1 and m["ppl"] > 1
    assert abs(m["bpc"] - m["loss"] / 0.6931471805599453) < 1e-9
    assert main(["evaluate", str(run), "--corpus", str(corpus), "--json"]) == 0
    assert last_json(capsys)["chars"] == len(TEXT) - 1


def test_check_command(corpus, capsys):
    assert (
        main(
            [
                "check",
                "--corpus",
                str(corpus),
                "--hidden",
                "8",
                "--batch-size",
                "2",
                "--num-steps",
                "5",
                "--cell",
                "lstm",
                "--layers",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "(2, 5, 15)" in out and "all zeros" in out and "check passed" in out


def test_existing_run_is_refused_then_forced_then_resumed(tmp_path, corpus, capsys):
    out = tmp_path / "r"
    args = ["train", "--corpus", str(corpus), "--out", str(out), "--quiet", *TINY]
    assert main(args) == 0
    best = load_run(out).checkpoint / "model.safetensors"
    before = best.read_bytes()
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert best.read_bytes() == before  # nothing lost
    assert main([*args, "--force"]) == 0
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3", "--json"]) == 0
    assert last_json(capsys)["epochs"] == 3
    assert main(["train", "--out", str(out), "--resume", "--hidden", "32"]) == 2
    err = capsys.readouterr().err
    assert "cannot change --hidden (the run has 16, given 32)" in err
    assert len(err.strip().splitlines()) == 1


def test_the_same_command_with_resume_appended_continues(tmp_path, corpus, capsys):
    """A crash after the first checkpoint: rerunning the command with --resume finishes the run
    exactly as if nothing had happened (same flags are not a change)."""
    args = ["train", "--corpus", str(corpus), "--quiet", "--save-every", "5", *TINY]
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    assert main([*args, "--out", str(straight)]) == 0
    assert main([*args, "--out", str(crashed)]) == 0
    checkpoints = ckpt.list_checkpoints(crashed)
    for _, path in checkpoints[1:]:  # as if the process died right after the first checkpoint
        shutil.rmtree(path)
    assert main([*args, "--out", str(crashed), "--resume"]) == 0
    capsys.readouterr()
    newest = [ckpt.list_checkpoints(run)[-1][1] for run in (straight, crashed)]
    assert newest[0].name == newest[1].name
    a, b = (ckpt.read_tensors(path, ckpt.WEIGHTS) for path in newest)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert main([*args, "--out", str(crashed), "--resume", "--cell", "lstm"]) == 2
    assert "cannot change --cell (the run has 'gru', given 'lstm')" in capsys.readouterr().err


def test_installed_command_runs(run):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "rnnlab", "predict", str(run), "--prefix", "the", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["prefix"] == "the"
    proc = subprocess.run(
        [sys.executable, "-m", "rnnlab", "train", "--hidden", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# -- bad input: one line, the right exit code, nothing written --------------------------------


def bad_file(tmp_path: Path, content: bytes) -> str:
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    return str(f)


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d: ["--corpus", str(d / "missing.txt")], "neither a built-in"),
        (lambda d: ["--corpus", str(d)], "is a directory"),
        (lambda d: ["--corpus", bad_file(d, b"")], "is empty"),
        (lambda d: ["--corpus", bad_file(d, b" \n \n")], "only whitespace"),
        (lambda d: ["--corpus", bad_file(d, b"\x7fELF\x00\x01\x02")], "binary"),
        (lambda d: ["--corpus", bad_file(d, "宋词".encode("gb18030") * 50)], "gb18030"),
        (lambda d: ["--corpus", bad_file(d, b"short text")], "--batch-size or --num-steps"),
        (lambda d: ["--num-steps", "0"], "--num-steps must be at least 1"),
        (lambda d: ["--batch-size", "-3"], "--batch-size must be at least 1"),
        (lambda d: ["--hidden", "0"], "--hidden must be at least 1"),
        (lambda d: ["--layers", "0"], "--layers must be at least 1"),
        (lambda d: ["--cell", "transformer"], "invalid choice"),
        (lambda d: ["--lr", "nan"], "--lr must be a positive number"),
        (lambda d: ["--epochs", "two"], "invalid int value"),
    ],
)
def test_bad_train_input(tmp_path, capsys, make_args, message):
    out = tmp_path / "out"
    assert main(["train", *make_args(tmp_path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_non_utf8_names_the_byte_offset(tmp_path, capsys):
    path = bad_file(tmp_path, b"abc" + "词".encode("gb18030"))
    assert main(["check", "--corpus", path]) == 2
    assert "offset 3" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prefix", ""], "prefix is empty"),
        (["--prefix", "thé€"], "'é' '€'"),
        (["--prefix", "the", "--steps", "-1"], "--steps must be between 0"),
        (["--prefix", "the", "--temperature", "-0.5"], "--temperature must be a finite"),
        (["--prefix", "the", "--temperature", "inf"], "--temperature must be a finite"),
        (["--prefix", "the", "--temperature", "nan"], "--temperature must be a finite"),
        (["--prefix", "the", "--show", "0"], "--show must be at least 1"),
    ],
)
def test_bad_predict_input(run, capsys, extra, message):
    assert main(["predict", str(run), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_missing_and_corrupt_checkpoints(tmp_path, run, capsys):
    assert main(["predict", str(tmp_path / "nowhere"), "--prefix", "a"]) == 3
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", str(empty)]) == 3
    assert "no checkpoint" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    best = load_run(broken).checkpoint / "model.safetensors"
    weights = bytearray(best.read_bytes())
    weights[-5] ^= 0x40  # one flipped bit in the last weight
    best.write_bytes(bytes(weights))
    assert main(["predict", str(broken), "--prefix", "a"]) == 3
    err = capsys.readouterr().err
    assert str(best) in err and "corrupt" in err
    best.write_bytes(bytes(weights[:100]))  # truncated
    assert main(["evaluate", str(broken)]) == 3


def test_usage_errors_are_one_line(capsys):
    assert main([]) == 2
    assert main(["fly"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def test_divergence_exits_4_and_keeps_nothing_bad(tmp_path, corpus, capsys):
    out = tmp_path / "nan"
    code = main(
        [
            "train",
            "--corpus",
            str(corpus),
            "--out",
            str(out),
            "--quiet",
            "--optimizer",
            "sgd",
            "--lr",
            "1e38",
            *TINY,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 4 and len(err.splitlines()) == 1
    assert "became inf" in err or "became nan" in err
    assert "lower --lr" in err and "no checkpoint had been written yet" in err
    assert not (out / "checkpoints").exists()


def test_huge_finite_loss_prints_inf_not_a_crash(tmp_path, corpus, capsys):
    out = tmp_path / "big"
    code = main(
        [
            "train",
            "--corpus",
            str(corpus),
            "--out",
            str(out),
            "--json",
            "--optimizer",
            "sgd",
            "--lr",
            "1e30",
            *TINY,
        ]
    )
    assert code == 0  # the loss is around 1e30: finite, so training goes on
    summary = last_json(capsys)
    assert summary["valid_ppl"] is None and summary["valid_loss"] > 1e6  # inf -> JSON null


def test_predict_several_prefixes_equals_one_at_a_time(run, capsys):
    singles = []
    for prefix in ("the c", "a", "the dog sat"):
        main(["predict", str(run), "--prefix", prefix, "--steps", "12", "--json"])
        singles.append(last_json(capsys))
    main(
        [
            "predict",
            str(run),
            "--prefix",
            "the c",
            "--prefix",
            "a",
            "--prefix",
            "the dog sat",
            "--steps",
            "12",
            "--json",
        ]
    )
    batched = last_json(capsys)["predictions"]
    for one, many in zip(singles, batched, strict=True):
        assert one["continuation"] == many["continuation"]
        assert [n["char"] for n in one["next"]] == [n["char"] for n in many["next"]]
        assert abs(one["next"][0]["prob"] - many["next"][0]["prob"]) < 1e-6


def test_predict_beam_is_at_least_as_likely_as_greedy(run, capsys):
    def predict_json(*extra: str) -> dict:
        main(["predict", str(run), "--prefix", "the", "--steps", "15", "--json", *extra])
        return last_json(capsys)

    greedy = predict_json()
    beam1 = predict_json("--strategy", "beam", "--beam", "1")
    assert beam1["continuation"] == greedy["continuation"]  # beam 1 is greedy
    assert (
        predict_json("--strategy", "beam", "--beam", "8")["log_prob"] >= greedy["log_prob"] - 1e-9
    )


def test_temperature_zero_is_greedy(run, capsys):
    main(["predict", str(run), "--prefix", "the", "--steps", "15", "--json"])
    greedy = last_json(capsys)["continuation"]
    main(["predict", str(run), "--prefix", "the", "--steps", "15", "--temperature", "0", "--json"])
    assert last_json(capsys)["continuation"] == greedy


def test_score_matches_evaluate(run, capsys):
    text = TEXT[:200]
    assert main(["score", str(run), text, "--json"]) == 0
    scored = last_json(capsys)
    assert len(scored["chars"]) == 199 and scored["chars"][0]["char"] == text[1]
    f = run.parent / "score.txt"
    f.write_text(text)
    main(["evaluate", str(run), "--corpus", str(f), "--json"])
    assert abs(last_json(capsys)["bpc"] - scored["mean_bits"]) < 1e-5
    assert main(["score", str(run), "t"]) == 2
    assert main(["score", str(run), "th€"]) == 2
    assert "'€'" in capsys.readouterr().err


def test_scratch_checkpoint_loads_into_torch_and_predicts_the_same(tmp_path, corpus, capsys):
    out = tmp_path / "scratch"
    args = ["train", "--corpus", str(corpus), "--out", str(out), "--quiet", "--impl", "scratch"]
    assert main([*args, *TINY, "--cell", "lstm"]) == 0
    from torch import nn

    from rnnlab import cells
    from rnnlab.training import load_run

    assert isinstance(load_run(out).model.rnn, cells.LSTM)  # trained with the scratch cells
    assert isinstance(load_run(out, impl="torch").model.rnn, nn.LSTM)
    results = {}
    for impl in ("scratch", "torch"):
        assert (
            main(
                [
                    "predict",
                    str(out),
                    "--prefix",
                    "the c",
                    "--steps",
                    "30",
                    "--impl",
                    impl,
                    "--json",
                ]
            )
            == 0
        )
        results[impl] = last_json(capsys)
    assert results["scratch"]["continuation"] == results["torch"]["continuation"]
    for a, b in zip(results["scratch"]["next"], results["torch"]["next"], strict=True):
        assert a["char"] == b["char"] and abs(a["prob"] - b["prob"]) < 1e-5
    main(["evaluate", str(out), "--json"])
    scratch_loss = last_json(capsys)["loss"]
    main(["evaluate", str(out), "--impl", "torch", "--json"])
    assert abs(last_json(capsys)["loss"] - scratch_loss) < 1e-5


@pytest.mark.slow
def test_alphabet_acceptance(tmp_path, capsys):
    """The issue's acceptance run, with the defaults: prefix abc predicts d, then defgh."""
    out = tmp_path / "alphabet"
    assert main(["train", "--corpus", "alphabet", "--out", str(out), "--quiet"]) == 0
    assert main(["predict", str(out), "--prefix", "abc", "--steps", "5", "--json"]) == 0
    result = last_json(capsys)
    assert result["next"][0]["char"] == "d"
    assert result["continuation"] == "defgh"
