"""Issue 7, "never lose work, never run untrusted code": one test (or more) per promise.

Real processes (`python -m rnnlab`) where the promise is about processes: resuming in a new one,
signals, SIGKILL. Each spawned process gets one thread (OMP_NUM_THREADS=1, --threads 1).
docs/reliability.md ("What rnnlab guarantees") lists every promise with the test that checks it.
"""

from __future__ import annotations

import codecs
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rnnlab import checkpoint as ckpt
from rnnlab.cli import main
from rnnlab.corpus import DataConfig
from rnnlab.data import prepare_data
from rnnlab.errors import CheckpointError, NumericalError, UsageError
from rnnlab.model import RNNLM, ModelConfig
from rnnlab.training import LanguageModelFamily, TrainConfig, Trainer, lm_trainer, load_run

pytestmark = pytest.mark.reliability

TEXT = "the cat sat on the mat. the dog sat on the log. " * 40  # 53 steps an epoch with TINY
TINY = ["--hidden", "16", "--batch-size", "4", "--num-steps", "8", "--threads", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("data") / "tiny.txt"
    f.write_text(TEXT, encoding="utf-8")
    return f


def rnnlab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real command in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "rnnlab", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rnnlab", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def steps(run: Path) -> list[tuple[int, int, float, float]]:
    """steps.csv as numbers; losses compare exactly (written with repr)."""
    lines = (run / "steps.csv").read_text().splitlines()
    assert lines[0] == "step,epoch,loss,grad_norm,lr"  # issue 17: each step's rate
    rows = [line.split(",") for line in lines[1:]]
    return [(int(s), int(e), float(loss), float(g)) for s, e, loss, g, _lr in rows]


def newest_weights(run: Path) -> dict[str, torch.Tensor]:
    path, files, skipped = ckpt.newest_complete(run)
    assert not skipped
    return ckpt.parse_tensors(files[ckpt.WEIGHTS], path / ckpt.WEIGHTS)


def same_weights(run: Path, other: Path) -> bool:
    """The newest checkpoints of two runs hold the same weights, to the last bit."""
    a, b = newest_weights(run), newest_weights(other)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def metrics_rows(run: Path) -> list[list[str]]:
    """metrics.csv without the timing columns (seconds, chars_per_sec)."""
    lines = (run / "metrics.csv").read_text().splitlines()
    return [line.split(",")[:8] + line.split(",")[10:] for line in lines]


def wait_for(condition, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("timed out waiting")


def newest_step(run: Path) -> int:
    found = ckpt.list_checkpoints(run)
    return found[-1][0] if found else 0


# -- 1. exact resume in a new process -------------------------------------------------------------


@pytest.fixture(scope="module")
def split_run(tmp_path_factory, corpus) -> tuple[Path, Path]:
    """The same 80 steps (into epoch 2, dropout on) straight, and as 30 + a resume in a new
    process."""
    root = tmp_path_factory.mktemp("resume")
    train = ["train", "--corpus", str(corpus), *TINY, "--epochs", "3", "--quiet"]
    straight, split = root / "straight", root / "split"
    assert rnnlab(*train, "--out", str(straight), "--max-steps", "80").returncode == 0
    assert rnnlab(*train, "--out", str(split), "--max-steps", "30").returncode == 0
    assert newest_step(split) == 30
    proc = rnnlab("train", "--out", str(split), "--resume", "--max-steps", "80", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "resuming" in proc.stdout and "warning" not in proc.stdout + proc.stderr
    return straight, split


def test_resume_in_a_new_process_is_exact(split_run):
    straight, split = split_run
    assert [s for s, *_ in steps(straight)] == list(range(1, 81))
    assert steps(split) == steps(straight)  # every step's loss and gradient norm, with ==
    assert newest_step(straight) == newest_step(split) == 80
    assert same_weights(split, straight)
    assert metrics_rows(split) == metrics_rows(straight)  # the epoch finished in the resumed run


def test_resume_with_other_threads_warns(split_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(split_run[1], run)
    proc = rnnlab("train", "--out", str(run), "--resume", "--max-steps", "85", "--threads", "2")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "written with threads 1, resuming with 2" in out and "bit for bit" in out


def test_max_steps_stops_and_refuses_to_go_backwards(split_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(split_run[1], run)
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "80"]) == 2
    assert "already took 80 steps: pass a larger --max-steps" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "x"), "--max-steps", "0"]) == 2
    assert "--max-steps must be at least 1" in capsys.readouterr().err


def make_trainer(run_dir: Path, **train_kw) -> Trainer:
    torch.manual_seed(0)
    ids = torch.randint(11, (1500,), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    model = RNNLM(11, ModelConfig(hidden=16, dropout=0.2))
    cfg = TrainConfig(batch_size=4, num_steps=10, **train_kw)
    return lm_trainer(
        model, cfg, ids[:1300], ids[1300:], run_dir, {}, progress=False, log=lambda s: None
    )


def test_python_and_numpy_rng_states_are_restored_without_pickle(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path / "r", epochs=1, max_steps=5)
    random.seed(7)
    np.random.seed(7)
    trainer.fit()
    expected = (random.random(), np.random.rand())
    random.seed(1)
    np.random.seed(1)

    def no_pickle(*a, **k):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    make_trainer(tmp_path / "r", epochs=1).resume()
    assert (random.random(), np.random.rand()) == expected
    trainer_json = json.loads(next((tmp_path / "r").glob("checkpoints/*/trainer.json")).read_text())
    assert len(trainer_json["rng_python"][1]) == 625 and len(trainer_json["rng_numpy"][1]) == 624


def test_steps_log_is_cut_back_to_the_checkpoint_on_resume(tmp_path):
    run = tmp_path / "r"
    make_trainer(run, epochs=1, max_steps=12, save_every=5).fit()
    with open(run / "steps.csv", "a") as f:  # rows of steps a crash lost: run ahead, then torn
        f.write("13,1,9.0,1.0\n14,1,9.0,1.0\n15,1,9.")
    shutil.rmtree(ckpt.checkpoint_dir(run, 12))  # the crash also lost the newest checkpoint
    resumed = make_trainer(run, epochs=1, max_steps=14, save_every=5)
    resumed.resume()
    assert resumed.step == 10
    resumed.fit()
    straight = tmp_path / "s"
    make_trainer(straight, epochs=1, max_steps=14).fit()
    assert steps(run) == steps(straight)
    assert [s for s, *_ in steps(run)] == list(range(1, 15))


# -- 2. checkpoint directories, best, pruning, fallback ------------------------------------------


def test_run_layout_and_pruning(tmp_path, corpus):
    run = tmp_path / "r"
    args = ["train", "--corpus", str(corpus), *TINY, "--epochs", "2", "--quiet"]
    assert main([*args, "--out", str(run), "--save-every", "10", "--keep", "2"]) == 0
    assert {p.name for p in run.iterdir()} == {
        "config.json",
        "manifest.json",
        "metrics.csv",
        "steps.csv",
        "checkpoints",
    }
    found = ckpt.list_checkpoints(run)
    # The 2 newest, and step 53 (epoch 1's end): step 100 names it as the best it knew of.
    assert [s for s, _ in found] == [53, 100, 106]
    for _, path in found:
        assert sorted(p.name for p in path.iterdir()) == [
            "manifest.json",
            "model.safetensors",
            "state.safetensors",
            "trainer.json",
        ]
        ckpt.read_checkpoint(path)  # every file matches its manifest
    assert not list(run.rglob("*.tmp"))
    assert load_run(run).checkpoint == ckpt.checkpoint_dir(run, 106)
    assert main([*args, "--out", str(run), "--save-every", "-1", "--force"]) == 2
    assert main([*args, "--out", str(run), "--keep", "0", "--force"]) == 2


def test_the_best_checkpoint_is_never_pruned(tmp_path, monkeypatch):
    from rnnlab.metrics import metrics_from_nll

    losses = iter([2.0, 2.5, 3.0, 3.5])  # held-out loss gets worse after epoch 1

    def fake_evaluate(self):
        return metrics_from_nll(next(losses) * 100, 100)

    monkeypatch.setattr(LanguageModelFamily, "evaluate", fake_evaluate)  # the LM family's figures
    run = tmp_path / "r"
    trainer = make_trainer(run, epochs=4, save_every=7, keep=1)
    trainer.fit()
    first_epoch = trainer.history[0]
    best = ckpt.checkpoint_dir(run, first_epoch.steps)
    assert trainer.best_step == first_epoch.steps and best.is_dir()
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [first_epoch.steps, trainer.step]
    assert ckpt.best_checkpoint(run, warn=print) == best


def damage(path: Path, how: str) -> None:
    if how == "truncated":
        f = path / "model.safetensors"
        f.write_bytes(f.read_bytes()[:100])
    elif how == "bit flip":
        f = path / "state.safetensors"
        data = bytearray(f.read_bytes())
        data[-3] ^= 0x10
        f.write_bytes(bytes(data))
    elif how == "no manifest":
        (path / "manifest.json").unlink()
    elif how == "bad manifest":
        (path / "manifest.json").write_text("{not json")
    elif how == "missing file":
        (path / "trainer.json").unlink()


@pytest.mark.parametrize(
    "how", ["truncated", "bit flip", "no manifest", "bad manifest", "missing file"]
)
def test_resume_falls_back_past_a_damaged_checkpoint_and_says_so(tmp_path, corpus, capsys, how):
    train = ["train", "--corpus", str(corpus), *TINY, "--epochs", "1", "--save-every", "10"]
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert main([*train, "--out", str(straight), "--max-steps", "40", "--quiet"]) == 0
    assert main([*train, "--out", str(run), "--max-steps", "30", "--quiet"]) == 0
    damage(ckpt.checkpoint_dir(run, 30), how)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "40"]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err  # warnings: stdout now, stderr once cli passes `warn`
    warnings = [line for line in out.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1
    assert "step-00000030 is damaged" in warnings[0] and "resuming from step-00000020" in out
    assert "after epoch 0 (step 20)" in out
    assert steps(run) == steps(straight)  # redone from step 20, exactly
    assert same_weights(run, straight)


def test_a_damaged_checkpoint_asked_for_is_refused_with_its_name(tmp_path, corpus, capsys):
    run = tmp_path / "r"
    train = ["train", "--corpus", str(corpus), *TINY, "--epochs", "1", "--quiet"]
    assert main([*train, "--out", str(run), "--save-every", "10"]) == 0
    explicit = ckpt.checkpoint_dir(run, 50)
    assert main(["predict", str(explicit), "--prefix", "the"]) == 0
    damage(explicit, "truncated")
    assert main(["predict", str(explicit), "--prefix", "the"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(explicit / "model.safetensors") in err and "corrupt" in err
    best = ckpt.checkpoint_dir(run, 53)  # epoch 1's end, the best
    damage(best, "truncated")
    assert main(["evaluate", str(run)]) == 3  # the best is damaged: refused, not replaced
    assert str(best / "model.safetensors") in capsys.readouterr().err
    assert main(["evaluate", str(ckpt.checkpoint_dir(run, 40))]) == 0  # another still loads
    assert main(["evaluate", str(ckpt.checkpoint_dir(run, 7))]) == 3
    assert "does not exist" in capsys.readouterr().err


def test_no_complete_checkpoint_is_a_checkpoint_error(tmp_path, corpus, capsys):
    run = tmp_path / "r"
    train = ["train", "--corpus", str(corpus), *TINY, "--epochs", "1", "--quiet"]
    assert main([*train, "--out", str(run), "--max-steps", "5"]) == 0
    damage(ckpt.checkpoint_dir(run, 5), "bit flip")
    assert main(["train", "--out", str(run), "--resume"]) == 3
    err = capsys.readouterr().err
    assert "no complete checkpoint" in err and "step-00000005 is damaged" in err


def test_a_crash_inside_a_checkpoint_save_leaves_the_previous_one(tmp_path, monkeypatch):
    run = tmp_path / "r"
    trainer = make_trainer(run, epochs=1, max_steps=4)
    trainer.fit()
    real = ckpt._write_new

    def crash_at_manifest(path, data):
        if path.name == "manifest.json":
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(ckpt, "_write_new", crash_at_manifest)
    trainer.config.max_steps = 6
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [4]
    assert not list((run / "checkpoints").glob(".*"))
    # A SIGKILL gives no chance to clean up: the half-written directory just does not count.
    leftover = run / "checkpoints" / ".step-00000006.dead.tmp"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    assert ckpt.newest_complete(run)[0] == ckpt.checkpoint_dir(run, 4)


def test_rewriting_run_files_is_safe_at_every_moment(tmp_path, monkeypatch):
    """save_files (config.json at a run's root; seq2seq's runs) replaces several files: a crash
    between any two renames leaves every file matching the manifest."""
    run = tmp_path / "flat"
    old = {"config.json": b'{"v": 1}', "model.safetensors": b"old weights"}
    new = {"config.json": b'{"v": 2}', "model.safetensors": b"new weights"}
    real = ckpt.write_atomic
    for crash_at in range(1, 5):  # before: the first manifest, each file, the last manifest
        ckpt.save_files(run, old)
        calls = []

        def flaky(path, data, crash_at=crash_at, calls=calls):
            calls.append(path)
            if len(calls) == crash_at:
                raise KeyboardInterrupt
            real(path, data)

        monkeypatch.setattr(ckpt, "write_atomic", flaky)
        with pytest.raises(KeyboardInterrupt):
            ckpt.save_files(run, new)
        monkeypatch.setattr(ckpt, "write_atomic", real)
        for name in new:
            assert ckpt.read_verified(run, name) in (old[name], new[name])
    ckpt.save_files(run, new)
    (run / "config.json").write_bytes(b'{"v": 1}')  # the old version, once the save completed
    with pytest.raises(CheckpointError, match="config.json.*checksum"):
        ckpt.read_verified(run, "config.json")


# -- 3. signals and SIGKILL -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "signals, code",
    [
        ((signal.SIGINT,), 130),
        ((signal.SIGTERM, signal.SIGTERM), 143),
        ((signal.SIGINT, signal.SIGTERM), 130),  # the first signal decides the exit code
    ],
)
def test_signals_save_then_exit_and_a_second_one_does_no_harm(tmp_path, corpus, signals, code):
    run = tmp_path / "r"
    proc = spawn(
        "train",
        "--corpus",
        str(corpus),
        *TINY,
        "--epochs",
        "1000",
        "--out",
        str(run),
        "--save-every",
        "10",
        "--quiet",
    )
    try:
        wait_for(lambda: newest_step(run) >= 10, proc=proc)
        for i, sig in enumerate(signals):
            if i:
                time.sleep(0.002 * i)  # while the first signal's checkpoint is being written
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert f"continue with `rnnlab train --out {run} --resume`" in err
    path, _, skipped = ckpt.newest_complete(run)
    assert not skipped and not list(run.rglob("*.tmp"))
    assert ckpt.checkpoint_step(path) == len(steps(run))  # saved at the step it stopped
    assert main(["evaluate", str(run)]) == 0


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_the_run(tmp_path, corpus):
    """15 SIGKILLs while training and saving every step; after each the newest checkpoint
    loads and a resume continues; in the end the run equals one never interrupted."""
    total = 300
    train = ["train", "--corpus", str(corpus), *TINY, "--epochs", "20", "--quiet"]
    reference = tmp_path / "reference"
    assert rnnlab(*train, "--out", str(reference), "--max-steps", str(total)).returncode == 0

    run = tmp_path / "run"
    rng = random.Random(0)
    kills = 0
    while kills < 15:
        if newest_step(run):
            proc = spawn("train", "--out", str(run), "--resume", "--threads", "1", "--quiet")
        else:
            proc = spawn(
                *train, "--out", str(run), "--max-steps", str(total), "--save-every", "1", "--force"
            )
        before = newest_step(run)
        try:
            if not wait_for(lambda before=before: newest_step(run) > before, proc=proc):
                break  # it finished the run before we could kill it
            time.sleep(rng.uniform(0.0, 0.1))
            proc.kill()
            proc.communicate(timeout=30)
        finally:
            proc.kill()
        if proc.returncode != -signal.SIGKILL:
            break
        kills += 1
        path, _, skipped = ckpt.newest_complete(run)
        assert not skipped, skipped  # a kill can only ever leave a complete checkpoint
        assert main(["evaluate", str(run), "--threads", "1"]) == 0
    assert kills >= 12
    if newest_step(run) < total:
        proc = rnnlab("train", "--out", str(run), "--resume", "--threads", "1", "--quiet")
        assert proc.returncode == 0, proc.stderr
    assert steps(run) == steps(reference)
    assert same_weights(run, reference)


# -- 4. numerical faults --------------------------------------------------------------------------


def test_no_checkpoint_ever_holds_non_finite_weights(tmp_path):
    run = tmp_path / "r"
    trainer = make_trainer(run, epochs=1, max_steps=3)
    trainer.fit()
    with torch.no_grad():
        trainer.model.output.weight[0, 0] = float("inf")
    with pytest.raises(NumericalError, match=r"output.weight became non-finite.*step 3\) .*intact"):
        trainer.save(best=False)
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [3]


def test_no_checkpoint_of_an_exploding_run_holds_non_finite_values(tmp_path, corpus, capsys):
    run = tmp_path / "r"
    code = main(
        [
            "train",
            "--corpus",
            str(corpus),
            *TINY,
            "--out",
            str(run),
            "--quiet",
            "--optimizer",
            "sgd",
            "--lr",
            "3e38",
            "--save-every",
            "1",
            "--epochs",
            "1",
        ]
    )
    assert code == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lower --lr" in err
    assert "the last good checkpoint (step 1)" in err
    assert main([*"train --corpus x --lr 1e39".split(), "--out", str(tmp_path / "y")]) == 2
    assert "--lr must be a positive number" in capsys.readouterr().err

    trainer = make_trainer(tmp_path / "x", epochs=1, max_steps=10, save_every=1)
    real_step = trainer.optimizer.step

    def overflowing_step(*a, **k):  # the fifth update overflows a weight
        out = real_step(*a, **k)
        if trainer.step == 4:
            with torch.no_grad():
                trainer.model.output.bias[0] = float("inf")
        return out

    trainer.optimizer.step = overflowing_step
    with pytest.raises(NumericalError, match=r"non-finite at step 5 .*step 4\) .*intact"):
        trainer.fit()
    assert newest_step(tmp_path / "x") == 4
    for r in (run, tmp_path / "x"):
        for _, path in ckpt.list_checkpoints(r):
            for name in ("model.safetensors", "state.safetensors"):
                tensors = load_file(path / name)  # read raw: read_tensors would refuse them
                assert all(
                    torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()
                )


def test_divergence_guard_warns_once(tmp_path, monkeypatch):
    import torch.nn.functional as F

    cross_entropy = F.cross_entropy
    calls = []

    def climbing(logits, targets, reduction="mean", **kwargs):  # a training loss that keeps rising
        loss = cross_entropy(logits, targets, reduction=reduction, **kwargs)
        if reduction == "mean":
            calls.append(1)
            loss = loss * (1 + len(calls) / 10)
        return loss

    monkeypatch.setattr(F, "cross_entropy", climbing)
    for factor, expected in ((3.0, 1), (0.0, 0)):
        lines: list[str] = []
        calls.clear()
        trainer = make_trainer(tmp_path / str(factor), epochs=2, divergence_factor=factor)
        trainer.log = trainer.warn = lines.append
        trainer.fit()
        warned = [line for line in lines if "diverging" in line]
        assert len(warned) == expected  # once, though the loss stays above 3x for many steps
        if expected:
            assert "over 3 times the first step's" in warned[0] and "--lr" in warned[0]
            step = int(warned[0].split(" at step ")[1].split()[0])
            rows = steps(tmp_path / str(factor))
            assert rows[step - 1][2] > 3 * rows[0][2] >= rows[step - 2][2]
    with pytest.raises(UsageError, match=r"--divergence-factor must be 0 \(off\) or above 1"):
        TrainConfig(divergence_factor=0.5)


# -- 5. hostile corpora ---------------------------------------------------------------------------


def test_binary_files_are_refused_unless_allowed(tmp_path, capsys):
    f = tmp_path / "prog.bin"
    f.write_bytes(bytes(range(256)) * 40)
    assert main(["check", "--corpus", str(f), "--hidden", "8"]) == 2
    err = capsys.readouterr().err
    assert "looks binary (NUL byte at offset 0)" in err and "--allow-binary" in err
    assert len(err.strip().splitlines()) == 1
    data = prepare_data(DataConfig(corpus=str(f), allow_binary=True, encoding="latin-1"))
    assert len(data.vocab) == 257 and data.train_ids.dtype == torch.int16
    streamed = prepare_data(
        DataConfig(corpus=str(f), allow_binary=True, encoding="latin-1"),
        stream_over=0,
        chunk_bytes=1000,
    )
    assert torch.equal(streamed.train_ids, data.train_ids)
    assert main(
        [
            "check",
            "--corpus",
            str(f),
            "--allow-binary",
            "--encoding",
            "latin-1",
            "--hidden",
            "8",
            "--embed",
            "8",
        ]
    ) in (0, 1)  # it trains; the check ran


_rng = random.Random(0)
HOSTILE = (
    "  ,;"
    + "".join(_rng.choice(list("abcXYZ  ,.!\n\t") + ["é", "词", "😀", "ß"]) for _ in range(3000))
    + " ...\n"
)


@pytest.mark.parametrize(
    "encoding, bom",
    [
        ("utf-8", b""),
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16", b""),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("gb18030", b""),
        ("utf-32", b""),
    ],
)
@pytest.mark.parametrize("cleaning", ["raw", "letters"])
def test_a_streamed_file_gives_exactly_the_ids_of_a_whole_one(tmp_path, encoding, bom, cleaning):
    f = tmp_path / "t.txt"
    f.write_bytes(bom + HOSTILE.encode(encoding))
    for min_freq in (1, 20):
        cfg = DataConfig(corpus=str(f), encoding=encoding, cleaning=cleaning, min_freq=min_freq)
        whole = prepare_data(cfg)
        for chunk in (1, 3, 7, 4096):  # borders inside every multi-byte character and gap
            part = prepare_data(cfg, stream_over=0, chunk_bytes=chunk)
            assert part.vocab.idx_to_token == whole.vocab.idx_to_token
            assert part.train_ids.dtype == whole.train_ids.dtype
            assert torch.equal(part.train_ids, whole.train_ids)  # the same split, by characters
            assert torch.equal(part.valid_ids, whole.valid_ids)


def test_letters_cleaning_across_chunk_borders(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("ab,, \n\n ,cd!! E" + "." * 50 + "f" * 40, encoding="utf-8")
    cfg = DataConfig(corpus=str(f), cleaning="letters", valid_fraction=0.1)
    data = prepare_data(cfg, stream_over=0, chunk_bytes=2)
    text = data.vocab.decode(torch.cat([data.train_ids, data.valid_ids]))
    assert text == "ab cd e " + "f" * 40  # each run of non-letters, however cut, is one space


@pytest.mark.parametrize(
    "content, encoding, message",
    [
        (b"abc" + "词".encode("gb18030") + b"xyz" * 10, "utf-8", "offset 3"),
        (b"abcdefgh" * 3 + "词".encode()[:2], "utf-8", "offset 24"),
        (b"abcdefgh" * 3 + b"\x00abc", "utf-8", "NUL byte at offset 24"),
        (b" \n\t " * 10, "utf-8", "only whitespace"),
        (b"1234, 5678! " * 10, "utf-8", "no text left after 'letters'"),
        (codecs.BOM_UTF8, "utf-8", "only whitespace"),
        (b"ab\xff" + "词".encode("gb18030"), "gb18030", "offset 2"),
    ],
)
def test_a_streamed_file_fails_exactly_like_a_whole_one(tmp_path, content, encoding, message):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    cleaning = "letters" if message.startswith("no text") else None
    cfg = DataConfig(corpus=str(f), encoding=encoding, cleaning=cleaning)
    errors = []
    for kw in ({}, {"stream_over": 0, "chunk_bytes": 1}, {"stream_over": 0, "chunk_bytes": 5}):
        with pytest.raises(UsageError) as e:
            prepare_data(cfg, **kw)
        errors.append(str(e.value))
    assert len(set(errors)) == 1 and message in errors[0]


def test_streamed_ids_past_65535_symbols_stay_exact(tmp_path):
    chars = "".join(chr(0x20000 + i) for i in range(70_000))
    f = tmp_path / "cjk.txt"
    f.write_text(chars + chars[:8000], encoding="utf-8")
    data = prepare_data(DataConfig(corpus=str(f)), stream_over=0, chunk_bytes=10_000)
    assert data.train_ids.dtype == torch.int32 and int(data.train_ids.max()) == 70_000
    assert data.vocab.decode(data.train_ids[:70_000]) == chars


def test_a_large_file_loads_with_bounded_memory(tmp_path):
    """40 MB streamed: the peak is the ids array plus a few chunks, not several copies of the
    text (reading it whole costs about 6 bytes a character: bytes, str, UTF-32 code points)."""
    f = tmp_path / "big.txt"
    block = ("The quick brown fox jumps over the lazy dog; naïve café 宋词.\n" * 1000).encode()
    with f.open("wb") as out:
        for _ in range(40_000_000 // len(block)):
            out.write(block)
    # VmHWM, not ru_maxrss: the latter also counts the (large) pytest parent's pages from before
    # the child's exec, which would hide the child's own peak.
    child = (
        "import sys; from rnnlab.corpus import DataConfig; "
        "from rnnlab.data import prepare_data; "
        "hwm = lambda: next(int(l.split()[1]) for l in open('/proc/self/status') "
        "if l.startswith('VmHWM:')); "
        "base = hwm(); "
        "d = prepare_data(DataConfig(corpus=sys.argv[1]), stream_over=2**20, chunk_bytes=2**20); "
        "peak = hwm(); "
        "print(base, peak, d.train_ids.numel() + d.valid_ids.numel(), d.train_ids.dtype)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", child, str(f)], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    base_kb, peak_kb, chars, dtype = proc.stdout.split()
    assert dtype == "torch.uint8" and int(chars) > 30_000_000
    grown_mb = (int(peak_kb) - int(base_kb)) / 1024
    assert grown_mb < int(chars) / 2**20 + 40, grown_mb


# -- 6. generation inputs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus) -> Path:
    run = tmp_path_factory.mktemp("gen") / "r"
    assert (
        main(
            ["train", "--corpus", str(corpus), *TINY, "--epochs", "1", "--quiet", "--out", str(run)]
        )
        == 0
    )
    return run


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prefix", "the", "--steps", "1000001"], "--steps must be between 0 and 1,000,000"),
        (["--prefix", "the", "--top-k", "-1"], "--top-k must be 0 (no limit) or more"),
        (["--prefix", "the", "--show", "-2"], "--show must be at least 1"),
        (["--prefix", "x\x00"], "not in the model's vocabulary"),
        (["--prefix", "the", "--temperature", "1e400"], "--temperature must be a finite"),
    ],
)
def test_bad_generation_input_is_one_line_exit_2(trained, capsys, extra, message):
    assert main(["predict", str(trained), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_very_long_prefix_streams(trained, capsys):
    assert main(["predict", str(trained), "--prefix", "the cat " * 5_000, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["next"]


def test_undecodable_prefix_bytes_from_the_shell(trained):
    proc = subprocess.run(
        [
            sys.executable.encode(),
            b"-m",
            b"rnnlab",
            b"predict",
            str(trained).encode(),
            b"--prefix",
            b"the \xff\xfe",
        ],
        capture_output=True,
        env=ENV,
        timeout=60,
    )
    err = proc.stderr.decode("utf-8", "replace").strip()
    assert proc.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert "vocabulary" in err
