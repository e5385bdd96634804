"""The encoder-decoder: masking, teacher forcing, decoding, checkpoints and the CLI end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import pytest
import torch

from rnnlab import checkpoint as ckpt
from rnnlab import cli
from rnnlab.cli import main
from rnnlab.cli.flags import json_line
from rnnlab.cli.seq2seq import train_summary
from rnnlab.decoding import DecodeConfig, Hypothesis, greedy
from rnnlab.devices import available
from rnnlab.errors import UsageError
from rnnlab.seq2seq import evaluate as seq2seq_evaluate
from rnnlab.seq2seq import train as seq2seq_train
from rnnlab.seq2seq.evaluate import (
    EvalResult,
    beam_vs_greedy,
    decoder_advance,
    edit_distance,
    evaluate_pairs,
    translate,
    translate_batch,
)
from rnnlab.seq2seq.model import Seq2Seq, Seq2SeqConfig, masked_loss, masked_nll
from rnnlab.seq2seq.pairs import (
    ANTONYM_PAIRS,
    COURSE_PAIRS,
    Batch,
    PairData,
    PairsConfig,
    PairVocab,
    make_batch,
    prepare_pairs,
)
from rnnlab.seq2seq.runs import load_seq2seq, run_config
from rnnlab.seq2seq.train import EpochRecord, Seq2SeqFamily, Seq2SeqTrainConfig
from rnnlab.training import StopRequested, Trainer

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
        guesses = greedy(decoder_advance(model), state, start, max_len=T - 1)
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
    assert {"config.json", "heldout.tsv", "metrics.csv", "steps.csv", "manifest.json"} <= files
    # The weights are the newest checkpoint's: the last epoch's (30 epochs of one step each).
    [(step, newest)] = ckpt.list_checkpoints(course_run)
    assert step == 30 and run.checkpoint == newest
    checkpoint_files = {"model.safetensors", "state.safetensors", "trainer.json", "manifest.json"}
    assert set(os.listdir(newest)) == checkpoint_files
    rows = (course_run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,train_loss") and len(rows) == 31  # header + 30 epochs
    weights = ckpt.read_tensors(newest, ckpt.WEIGHTS)
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
    shutil.copytree(course_run, bad)
    weights = ckpt.list_checkpoints(bad)[-1][1] / ckpt.WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "translate", str(bad), "man")
    assert code == 3 and "checksum mismatch" in err


# -- resume, signals, strict JSON ------------------------------------------------------------------

# Dropout, teacher forcing below 1 and a decaying learning rate: every stream a resume restores.
SMALL = ["--pairs", "antonyms", "--hidden", "16", "--embed", "8", "--layers", "2"]
SMALL += ["--dropout", "0.2", "--teacher-forcing", "0.5", "--lr-decay", "0.9", "--quiet"]


def newest_weights(run_dir) -> dict[str, torch.Tensor]:
    return ckpt.read_tensors(ckpt.list_checkpoints(run_dir)[-1][1], ckpt.WEIGHTS)


def metrics_without_seconds(run_dir) -> list[list[str]]:
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    return [line.split(",")[:6] + line.split(",")[7:] for line in lines]


def assert_same_run(a, b) -> None:
    wa, wb = newest_weights(a), newest_weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert metrics_without_seconds(a) == metrics_without_seconds(b)
    assert (a / "steps.csv").read_text() == (b / "steps.csv").read_text()


def test_resume_continues_as_one_uninterrupted_run(tmp_path, capsys):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_cli(capsys, "train", *SMALL, "--epochs", "3", "--out", str(straight))[0] == 0
    assert run_cli(capsys, "train", *SMALL, "--epochs", "1", "--out", str(resumed))[0] == 0
    assert len(metrics_without_seconds(resumed)) == 2  # header + epoch 1
    # The very command that started the run, with --resume and more epochs: the same flags as
    # stored are no change.
    code, out, err = run_cli(
        capsys, "train", *SMALL, "--epochs", "3", "--out", str(resumed), "--resume", "--json",
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["epochs"] == 3 and summary["steps"] == 3 * 4  # 211 pairs in batches of 64
    assert_same_run(straight, resumed)
    assert load_seq2seq(resumed).checkpoint == ckpt.list_checkpoints(resumed)[-1][1]
    code, _, err = run_cli(capsys, "train", "--out", str(resumed), "--resume")
    assert code == 2 and "run already trained 3 epochs: pass a larger --epochs" in err


def test_resume_refuses_changed_pairs_or_model_flags_naming_both_values(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", *SMALL, "--epochs", "1", "--out", str(run))[0] == 0
    before = newest_weights(run)
    argv = ["train", "--out", str(run), "--resume", "--epochs", "2"]
    code, _, err = run_cli(capsys, *argv, "--hidden", "32", "--pairs", "course")
    assert code == 2
    assert "--pairs (the run has 'antonyms', given 'course')" in err
    assert "--hidden (the run has 16, given 32)" in err
    code, _, err = run_cli(capsys, *argv, "--cell", "lstm")
    assert code == 2 and "cannot change --cell (the run has 'gru', given 'lstm')" in err
    assert all(torch.equal(before[k], v) for k, v in newest_weights(run).items())  # untouched
    code, _, err = run_cli(capsys, "train", "--resume", "--pairs", "course")
    assert code == 2 and "--resume needs --out DIR" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(tmp_path / "empty"))
    assert code == 3 and "cannot resume: no checkpoint" in err


def test_resume_refuses_pairs_that_changed_since_the_run_began(tmp_path, capsys):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{s}\t{t}\n" for s, t in ANTONYM_PAIRS[:40]), encoding="utf-8")
    run = tmp_path / "run"
    argv = ["train", "--pairs", str(pairs), "--hidden", "8", "--out", str(run)]
    assert run_cli(capsys, *argv, "--epochs", "1")[0] == 0
    pairs.write_text("".join(f"{s}\t{t}\n" for s, t in ANTONYM_PAIRS[:41]), encoding="utf-8")
    code, _, err = run_cli(capsys, *argv, "--epochs", "2", "--resume")
    assert code == 2 and "the pairs changed since the run in" in err


def test_a_stop_inside_an_epoch_resumes_exactly(tmp_path, monkeypatch):
    """SIGTERM during step 10 (epoch 2 of 7-step epochs): the checkpoint holds the epoch in
    progress, and a resume from a differently initialised model ends where a straight run does."""
    pairs_cfg = PairsConfig(pairs="antonyms")
    model_cfg = Seq2SeqConfig(hidden=16, embed=8, layers=2, dropout=0.2)
    train_cfg = Seq2SeqTrainConfig(epochs=2, batch_size=32, teacher_forcing=0.5)
    data = prepare_pairs(pairs_cfg)

    def new_trainer(run_dir, seed):
        torch.manual_seed(seed)
        model = Seq2Seq(len(data.vocab), model_cfg)
        config = run_config(pairs_cfg, model_cfg, train_cfg, data)
        family = Seq2SeqFamily(model, data, train_cfg)
        return Trainer(family, train_cfg, run_dir, config, log=lambda s: None)

    straight = new_trainer(tmp_path / "straight", seed=0)
    straight.fit()

    stopped = new_trainer(tmp_path / "stopped", seed=0)
    real_step = seq2seq_train.train_step

    def step_then_signal(*args):
        out = real_step(*args)
        if stopped.step == 9:  # this is step 10
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(seq2seq_train, "train_step", step_then_signal)
    with pytest.raises(StopRequested):
        stopped.fit()
    monkeypatch.undo()
    # only the stop saved: epoch 1 ended well within SAVE_EVERY seconds
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "stopped")] == [10]

    resumed = new_trainer(tmp_path / "stopped", seed=1)  # the checkpoint replaces these weights
    resumed.resume()
    assert (resumed.epoch, resumed.step, resumed.current.pairs_done) == (1, 10, 3 * 32)
    last = resumed.fit()
    assert last.train_loss == straight.history[-1].train_loss
    assert_same_run(tmp_path / "straight", tmp_path / "stopped")


def test_sigterm_saves_then_exits_143_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "rnnlab", "seq2seq", "train", "--pairs", "course"]
    cmd += ["--epochs", "100000", "--threads", "1", "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not proc.stdout.readline().startswith("epoch"):  # training is under way
            assert proc.poll() is None and time.monotonic() < deadline
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert f"continue with `rnnlab seq2seq train --out {run} --resume`" in err
    path, _, skipped = ckpt.newest_complete(run)
    assert not skipped and not list(run.rglob("*.tmp"))
    epochs = len(metrics_without_seconds(run)) - 1
    assert ckpt.checkpoint_step(path) == epochs  # saved at the step it stopped (one per epoch)
    assert (
        main(["seq2seq", "train", "--out", str(run), "--resume", "--epochs", str(epochs + 1)]) == 0
    )
    steps = [int(line.split(",")[0]) for line in (run / "steps.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, epochs + 2))


# -- devices (CPU here; the meta device stands in for an accelerator: mixing it with a CPU tensor
# raises, as mixing CUDA and CPU tensors does) ---------------------------------------------------

META = torch.device("meta")


def test_device_cpu_on_every_subcommand_is_the_default_run(course_run, tmp_path, capsys):
    """`--device cpu` trains, translates and evaluates; auto is the CPU on this machine, so
    the run and every output are the default's to the last bit."""
    run = tmp_path / "cpu"
    code, _, err = run_cli(
        capsys, "train", "--pairs", "course", "--device", "cpu", "--out", str(run), "--json"
    )
    assert code == 0, err
    assert_same_run(course_run, run)
    for argv in (
        ["translate", str(run), "man", "king", "--json"],
        ["translate", str(run), "man", "up", "--strategy", "beam", "--json"],
        ["evaluate", str(run), "--strategy", "beam", "--beam", "3", "--json"],
    ):
        code, on_cpu, err = run_cli(capsys, *argv, "--device", "cpu")
        assert code == 0, err
        assert on_cpu == run_cli(capsys, *argv)[1]
    assert next(load_seq2seq(run, device="cpu").model.parameters()).device.type == "cpu"


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--pairs", "course", "--out", "NEW"],
        ["translate", "RUN", "man"],
        ["evaluate", "RUN"],
    ],
)
def test_a_missing_device_is_one_line_and_exit_2(course_run, tmp_path, capsys, argv):
    if "cuda" in available():
        pytest.skip("this machine has CUDA")
    new = tmp_path / "new"
    argv = [{"RUN": str(course_run), "NEW": str(new)}.get(a, a) for a in argv]
    code, out, err = run_cli(capsys, *argv, "--device", "cuda")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "error: --device cuda is not available on this machine: available: cpu"
    ]
    assert not new.exists()  # refused before the run directory was claimed


def test_a_batch_moves_in_one_piece_but_its_source_lengths_stay_on_the_cpu():
    batch = make_batch(PairVocab.build(PAIRS), PAIRS[:5])
    moved = batch.to(META)
    for name in ("src", "tgt_in", "tgt_out", "tgt_len"):
        assert getattr(moved, name).device == META
    assert moved.src_len is batch.src_len  # what pack_padded_sequence reads, on the CPU
    assert moved.mask.device == META and moved.mask.shape == batch.mask.shape
    same = batch.to(torch.device("cpu"))
    assert all(torch.equal(getattr(same, k), v) for k, v in vars(batch).items())


@pytest.mark.parametrize("forcing", [1.0, 0.5])
def test_the_training_loss_is_computed_on_the_models_device(forcing):
    """Teacher forcing below 1 draws its coins on the CPU generator, then moves them once."""
    model, vocab = make_model("lstm", layers=2)
    model.to(META)
    assert model.device == META
    batch = make_batch(vocab, PAIRS[:8])
    loss = masked_loss(model, batch.to(META), forcing, torch.Generator().manual_seed(0))
    assert loss.device == META and loss.shape == ()
    with pytest.raises(RuntimeError, match="meta"):  # the guard: a CPU batch is refused
        masked_loss(model, batch, forcing)


def test_decoding_starts_on_the_models_device(monkeypatch):
    """Translation and beam-vs-greedy hand `rnnlab.decoding` a state and <bos> ids on the
    model's device (the batch moved there), whatever device the batch was built on."""
    model, vocab = make_model("gru")
    model.to(META)
    read = []  # the device of every source batch the encoder reads
    model.encoder.register_forward_pre_hook(lambda module, args: read.append(args[0].device))
    seen = []

    def fake(step_fn, state, start, *args, **kwargs):
        seen.append((state.device, start.device, start.dtype))
        return [Hypothesis([], 0.0, True) for _ in range(len(start))]

    monkeypatch.setattr(seq2seq_evaluate, "decode", fake)
    monkeypatch.setattr(seq2seq_evaluate, "greedy", fake)
    monkeypatch.setattr(
        seq2seq_evaluate, "beam_search", lambda *a, **k: [[h] for h in fake(*a[:3])]
    )
    out = translate(model, vocab, ["man", "king"])
    assert [t.output for t in out] == ["", ""]
    beam_vs_greedy(model, vocab, PAIRS[:3], beam=2)
    assert seen == [(META, META, torch.long)] * 3 and read == [META] * 2


def test_a_diverged_figure_prints_null_never_nan():
    nan, inf = float("nan"), float("inf")
    result = EvalResult(
        pairs=2, exact=0.0, cer=nan, loss=inf, mean_log_prob=nan, outputs=[], texts=[]
    )
    record = EpochRecord(epoch=1, step=4, train_loss=nan, eval=result, seconds=0.5, lr=0.003)
    trainer = types.SimpleNamespace(epoch=1, step=4, run_dir="runs/x")
    data = PairData(train=[("ab", "ba")], heldout=[], vocab=PairVocab.build([("ab", "ba")]))
    line = json_line(train_summary(record, trainer, data, seconds=1.0))
    assert "NaN" not in line and "Infinity" not in line
    summary = json.loads(line)
    assert summary["train_loss"] is None and summary["cer"] is None and summary["eval_loss"] is None
    assert summary["exact"] == 0.0 and summary["epochs"] == 1
    nested = {"beam_vs_greedy": {"beam_mean_log_prob": -inf}, "rows": [{"log_prob": nan}, 1.5]}
    assert json.loads(json_line(nested)) == {
        "beam_vs_greedy": {"beam_mean_log_prob": None},
        "rows": [{"log_prob": None}, 1.5],
    }
    assert math.isnan(nan)  # (the inputs really were non-finite)


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
    assert cli.main(["seq2seq", "translate", str(course_run), "up", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out["translations"][0]["output"] == "down"
    assert cli.main(["seq2seq", "translate", str(course_run), "UP"]) == 2
    assert "not in the model's vocabulary" in capsys.readouterr().err
    assert cli.main(["seq2seq", "evaluate", str(course_run), "--bogus"]) == 2


def test_the_same_seed_twice_gives_identical_runs(tmp_path, capsys):
    """The start every run shares seeds torch, random and numpy: two runs of one command
    write the same weights, metrics (bar the seconds) and steps."""
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert run_cli(capsys, "train", *SMALL, "--epochs", "2", "--out", str(out))[0] == 0
    assert_same_run(a, b)


def test_lr_decay_means_what_it_means_for_the_language_model():
    from rnnlab.training import TrainConfig

    help_of = {
        cls: next(f for f in dataclasses.fields(cls) if f.name == "lr_decay").metadata["help"]
        for cls in (TrainConfig, Seq2SeqTrainConfig)
    }
    assert help_of[TrainConfig] == help_of[Seq2SeqTrainConfig]
    assert "did not improve the held-out loss" in help_of[TrainConfig]
