"""The encoder-decoder: masking, teacher forcing, decoding, checkpoints and the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from rnnlab import checkpoint as ckpt
from rnnlab.cli import main
from rnnlab.decoding import DecodeConfig, greedy
from rnnlab.errors import UsageError
from rnnlab.pairs import ANTONYM_PAIRS, COURSE_PAIRS, Batch, PairVocab, make_batch
from rnnlab.seq2seq import (
    Seq2Seq,
    Seq2SeqConfig,
    Seq2SeqTrainConfig,
    beam_vs_greedy,
    decoder_step_fn,
    edit_distance,
    evaluate_pairs,
    load_seq2seq,
    masked_loss,
    masked_nll,
    translate,
    translate_batch,
)

PAIRS = ANTONYM_PAIRS[:24]


def make_model(cell: str = "gru", layers: int = 1, seed: int = 0) -> tuple[Seq2Seq, PairVocab]:
    vocab = PairVocab.build(ANTONYM_PAIRS)
    torch.manual_seed(seed)
    cfg = Seq2SeqConfig(cell=cell, hidden=24, layers=layers, embed=8)
    return Seq2Seq(len(vocab), cfg), vocab


def scramble_padding(batch, seed: int = 0):
    """The same batch with random ids wherever padding sits (source, decoder input, target)."""
    gen = torch.Generator().manual_seed(seed)
    out = Batch(**{k: v.clone() for k, v in vars(batch).items()})
    S, T = batch.src.shape[1], batch.tgt_in.shape[1]
    src_pad = torch.arange(S)[None] >= batch.src_len[:, None]
    tgt_pad = ~batch.mask
    for name, where in (("src", src_pad), ("tgt_in", tgt_pad), ("tgt_out", tgt_pad)):
        t = getattr(out, name)
        t[where] = torch.randint(4, 30, (int(where.sum()),), generator=gen)
    assert T > 1 and src_pad.any() and tgt_pad.any()
    return out


# -- masking ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell, layers", [("gru", 1), ("lstm", 2), ("rnn", 1)])
@pytest.mark.parametrize("forcing", [1.0, 0.5])
def test_changing_pad_content_never_changes_the_loss_or_its_gradient(cell, layers, forcing):
    model, vocab = make_model(cell, layers)
    batch = make_batch(vocab, PAIRS)
    scrambled = scramble_padding(batch)
    assert not torch.equal(batch.src, scrambled.src)

    def loss_and_grads(b):
        model.zero_grad()
        loss = masked_loss(model, b, forcing, torch.Generator().manual_seed(5))
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss_a, grads_a = loss_and_grads(batch)
    loss_b, grads_b = loss_and_grads(scrambled)
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=1e-6)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=0, atol=1e-6)


def test_masked_loss_is_the_mean_over_real_symbols_of_unpadded_pairs():
    model, vocab = make_model()
    with torch.no_grad():
        batched = masked_loss(model, make_batch(vocab, PAIRS))
        total, symbols = 0.0, 0
        for pair in PAIRS:  # one pair per batch: nothing is padded
            b = make_batch(vocab, [pair])
            assert b.mask.all()
            total += masked_nll(model(b), b.tgt_out, b.mask).item()
            symbols += len(pair[1]) + 1  # the target and its <eos>
    assert batched.item() == pytest.approx(total / symbols, rel=1e-5)


def test_teacher_forcing_one_equals_a_step_by_step_run_and_zero_feeds_back_guesses():
    model, vocab = make_model("lstm")
    model.eval()
    batch = make_batch(vocab, PAIRS[:6])
    with torch.no_grad():
        forced = model(batch, 1.0)  # one decoder call
        stepwise = model(batch, 1.0 - 1e-12, torch.Generator().manual_seed(0))  # T calls
        torch.testing.assert_close(forced, stepwise)
        free = model(batch, 0.0, torch.Generator().manual_seed(0))
        state = model.encoder(batch.src, batch.src_len)
        start = torch.full((6,), vocab.bos)
        T = batch.tgt_in.shape[1]
        guesses = greedy(decoder_step_fn(model), state, start, max_len=T - 1)
        fed = batch.tgt_in.clone()
        fed[:, 1:] = torch.tensor([h.ids for h in guesses])
        batch.tgt_in = fed
        torch.testing.assert_close(free, model(batch, 1.0))


def test_encoder_state_ignores_the_padding_after_each_source():
    model, vocab = make_model("gru", layers=2)
    batch = make_batch(vocab, PAIRS)
    with torch.no_grad():
        together = model.encoder(batch.src, batch.src_len)  # (L, B, H)
        for i, pair in enumerate(PAIRS):
            alone = make_batch(vocab, [pair])
            torch.testing.assert_close(
                together[:, i : i + 1], model.encoder(alone.src, alone.src_len)
            )


# -- decoding --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_beam_of_one_is_greedy_for_the_decoder(cell):
    model, vocab = make_model(cell, seed=1)
    batch = make_batch(vocab, PAIRS)
    g = translate_batch(model, batch, DecodeConfig(strategy="greedy"), max_len=12)
    b = translate_batch(model, batch, DecodeConfig(strategy="beam", beam=1), max_len=12)
    assert [(h.ids, h.ended) for h in g] == [(h.ids, h.ended) for h in b]
    assert [h.log_prob for h in g] == pytest.approx([h.log_prob for h in b], abs=1e-9)


def test_beam_log_likelihood_is_at_least_greedy_on_average():
    model, vocab = make_model(seed=2)
    cmp = beam_vs_greedy(model, vocab, ANTONYM_PAIRS, beam=5, max_target_len=12)
    assert cmp["beam_mean_log_prob"] >= cmp["greedy_mean_log_prob"]
    assert cmp["beam_higher"] > 0
    assert cmp["beam_higher"] + cmp["same_output"] + cmp["beam_lower"] == len(ANTONYM_PAIRS)


def test_unknown_characters_at_translate_time_are_usage_errors():
    model, vocab = make_model()
    with pytest.raises(UsageError, match=r"'KING' has characters not in the model's vocabulary"):
        translate(model, vocab, ["man", "KING"])
    with pytest.raises(UsageError, match="empty"):
        translate(model, vocab, [""])


def test_edit_distance_and_the_evaluation_figures():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "abc") == 0
    model, vocab = make_model()
    r = evaluate_pairs(model, vocab, PAIRS, max_len=8)
    refs = [t for _, t in PAIRS]
    assert r.exact == sum(o == t for o, t in zip(r.texts, refs, strict=True)) / len(PAIRS)
    errors = sum(edit_distance(o, t) for o, t in zip(r.texts, refs, strict=True))
    assert r.cer == pytest.approx(errors / sum(map(len, refs)))
    assert r.cer > 0  # an untrained model is wrong somewhere
    with torch.no_grad():
        assert r.loss == pytest.approx(masked_loss(model, make_batch(vocab, PAIRS)).item())


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (Seq2SeqConfig, {"cell": "tcn"}, "unknown cell 'tcn'"),
        (Seq2SeqConfig, {"hidden": 0}, "--hidden must be at least 1"),
        (Seq2SeqTrainConfig, {"teacher_forcing": 1.5}, r"--teacher-forcing must be in \[0, 1\]"),
        (Seq2SeqTrainConfig, {"lr": -1.0}, "--lr must be a positive number"),
        (Seq2SeqTrainConfig, {"batch_size": 0}, "--batch-size must be at least 1"),
    ],
)
def test_bad_configs(cls, kwargs, message):
    with pytest.raises(UsageError, match=message):
        cls(**kwargs)


# -- the command line end to end -------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["seq2seq", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def course_run(tmp_path_factory):
    """A model trained on the course's six pairs (about a second)."""
    run_dir = tmp_path_factory.mktemp("runs") / "course"
    code = main(["seq2seq", "train", "--pairs", "course", "--out", str(run_dir), "--json"])
    assert code == 0
    return run_dir


def test_course_pairs_are_reproduced_after_training(course_run, capsys):
    sources = [s for s, _ in COURSE_PAIRS]
    code, out, _ = run_cli(capsys, "translate", str(course_run), *sources, "--json")
    assert code == 0
    result = json.loads(out.splitlines()[-1])
    assert [(t["source"], t["output"]) for t in result["translations"]] == COURSE_PAIRS
    code, out, _ = run_cli(capsys, "translate", str(course_run), "man", "--strategy", "beam")
    assert code == 0 and out.startswith("man -> women")
    code, out, _ = run_cli(capsys, "evaluate", str(course_run), "--json")
    summary = json.loads(out.splitlines()[-1])
    assert summary["split"] == "train" and summary["exact"] == 1.0 and summary["cer"] == 0.0
    code, out, _ = run_cli(capsys, "evaluate", str(course_run))
    assert "memorisation" in out


def test_checkpoint_round_trip_gives_the_same_model(course_run):
    run = load_seq2seq(course_run)
    assert run.heldout == [] and run.max_target_len == 5
    files = set(os.listdir(course_run))
    assert {"config.json", "model.safetensors", "metrics.csv", "manifest.json"} <= files
    rows = (course_run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,train_loss") and len(rows) == 31  # header + 30 epochs
    weights = ckpt.read_tensors(course_run, ckpt.WEIGHTS)
    assert all(torch.equal(weights[k], v) for k, v in run.model.state_dict().items())


def test_heldout_pairs_are_saved_and_evaluated(tmp_path, capsys):
    out_dir = tmp_path / "ant"
    code, out, _ = run_cli(
        capsys,
        "train",
        "--pairs",
        "antonyms",
        "--epochs",
        "2",
        "--hidden",
        "16",
        "--out",
        str(out_dir),
        "--json",
    )
    assert code == 0
    summary = json.loads(out.splitlines()[-1])
    assert summary["eval_split"] == "heldout" and summary["heldout_pairs"] > 0
    run = load_seq2seq(out_dir)
    assert len(run.heldout) == summary["heldout_pairs"]
    train_sources = {s for s, _ in ANTONYM_PAIRS} - {s for s, _ in run.heldout}
    assert len(train_sources) == summary["train_pairs"]
    code, out, _ = run_cli(
        capsys, "evaluate", str(out_dir), "--strategy", "beam", "--beam", "3", "--json"
    )
    result = json.loads(out.splitlines()[-1])
    assert code == 0 and result["split"] == "heldout" and result["pairs"] == len(run.heldout)
    assert result["beam_vs_greedy"]["beam"] == 3


def test_unknown_characters_at_translate_time_exit_2(course_run, capsys):
    code, _, err = run_cli(capsys, "translate", str(course_run), "man", "Queen!")
    assert code == 2
    assert "error: 'Queen!' has characters not in the model's vocabulary: 'Q' '!'" in err


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty: give source<TAB>target lines"),
        ("man\twomen\nking queen\n", "line 2 has no tab"),
    ],
)
def test_bad_pair_files_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "pairs.tsv"
    path.write_text(content, encoding="utf-8")
    code, _, err = run_cli(capsys, "train", "--pairs", str(path), "--out", str(tmp_path / "r"))
    assert code == 2 and message in err and err.startswith("error: ")
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_run_directory_rules(course_run, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--pairs", "course", "--out", str(course_run))
    assert code == 2 and "is not empty: pass --force" in err
    code, _, err = run_cli(capsys, "translate", str(tmp_path / "nothing"), "man")
    assert code == 3 and "does not exist" in err
    lm_like = tmp_path / "lm"
    ckpt.save_files(lm_like, {ckpt.CONFIG: ckpt.json_bytes({"model": {}})})
    code, _, err = run_cli(capsys, "evaluate", str(lm_like))
    assert code == 3 and "is not a seq2seq run" in err
    bad = tmp_path / "tampered"
    bad.mkdir()
    for name in os.listdir(course_run):
        (bad / name).write_bytes((course_run / name).read_bytes())
    data = bytearray((bad / ckpt.WEIGHTS).read_bytes())
    data[-1] ^= 1
    (bad / ckpt.WEIGHTS).write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "translate", str(bad), "man")
    assert code == 3 and "checksum mismatch" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["translate", "RUN", "man", "--beam", "0", "--strategy", "beam"], "--beam must be"),
        (["translate", "RUN", "man", "--top-p", "0"], r"--top-p must be in (0, 1]"),
        (["translate", "RUN", "man", "--max-len", "-1"], "--max-len must be 0"),
        (["evaluate", "RUN", "--num-pairs", "10"], "give --pairs too"),
        (["train", "--teacher-forcing", "2"], "--teacher-forcing must be in [0, 1]"),
        (["translate", "RUN"], "the following arguments are required: words"),
        (["evaluate", "RUN", "--threads", "-1"], "--threads must be 0"),
    ],
)
def test_bad_flags_exit_2(course_run, capsys, argv, message):
    argv = [str(course_run) if a == "RUN" else a for a in argv]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and message in err


def test_the_module_runs_as_a_command(course_run):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rnnlab", "seq2seq", "translate", str(course_run)]
    ok = subprocess.run([*cmd, "king", "--json"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0
    assert json.loads(ok.stdout.splitlines()[-1])["translations"][0]["output"] == "queen"
    bad = subprocess.run([*cmd, "KING"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "not in the model's vocabulary: 'K' 'I' 'N' 'G'" in bad.stderr


def test_seq2seq_is_a_command_of_rnnlab(course_run, capsys):
    from rnnlab import cli

    assert cli.main(["seq2seq", "translate", str(course_run), "up", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out["translations"][0]["output"] == "down"
    assert cli.main(["seq2seq", "translate", str(course_run), "UP"]) == 2
    assert "not in the model's vocabulary" in capsys.readouterr().err
    assert cli.main(["seq2seq", "evaluate", str(course_run), "--bogus"]) == 2
