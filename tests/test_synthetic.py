"""The synthetic memory corpus: its definition, its floor, the window floor, corpus names."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rnnlab.cli import main
from rnnlab.corpus import DataConfig, corpus_label, load_text, split
from rnnlab.data import prepare_data
from rnnlab.errors import UsageError
from rnnlab.model import ModelConfig
from rnnlab.synthetic import MemoryTask, is_memory
from rnnlab.training import default_run_dir


def conditional_entropy(codes: np.ndarray, k: int, lag: int) -> float:
    """H(x_t | x_{t-lag}) in nats, estimated from the counts of (x_{t-lag}, x_t) pairs."""
    pairs = np.bincount(codes[:-lag] * k + codes[lag:], minlength=k * k).reshape(k, k)
    p = pairs / pairs.sum()
    p_prev = p.sum(axis=1, keepdims=True)
    nz = p > 0
    return float(-(p[nz] * np.log((p / p_prev)[nz])).sum())


def test_default_floor_and_no_memory():
    task = MemoryTask()
    assert task.floor() == pytest.approx(0.8042607, abs=1e-6)
    assert task.no_memory() == pytest.approx(math.log(8))


@pytest.mark.parametrize("k", [2, 5, 26])
def test_floor_at_the_noise_extremes(k):
    assert MemoryTask(alphabet=k, noise=0.0).floor() == 0.0  # a pure copy is predictable
    assert MemoryTask(alphabet=k, noise=1.0).floor() == pytest.approx(math.log(k))  # pure noise


@pytest.mark.parametrize(
    "task",
    [MemoryTask(), MemoryTask(distance=16), MemoryTask(distance=3, alphabet=4, noise=0.5)],
)
def test_empirical_conditional_entropy_matches_the_floor(task):
    codes = task.codes()
    assert len(codes) == 2_000_000 and codes.min() == 0 and codes.max() == task.alphabet - 1
    assert conditional_entropy(codes, task.alphabet, task.distance) == pytest.approx(
        task.floor(), rel=0.01
    )


def test_only_distance_d_carries_information():
    task = MemoryTask(distance=8)
    codes, k = task.codes(), task.alphabet
    for lag in (1, 4, 7, 9):  # other residues mod D are independent chains; lag 9 too
        assert conditional_entropy(codes, k, lag) == pytest.approx(math.log(k), rel=0.002)
    # Lag 16 is two copies: informative, but less than lag 8.
    assert task.floor() < conditional_entropy(codes, k, 16) < math.log(k) - 0.1
    counts = np.bincount(codes, minlength=k) / len(codes)
    assert np.abs(counts - 1 / k).max() < 0.005  # the marginal is uniform


def test_copy_rate_is_one_minus_eps_plus_chance():
    task = MemoryTask(distance=5, alphabet=4, noise=0.4)
    codes = task.codes()
    same = float((codes[5:] == codes[:-5]).mean())
    assert same == pytest.approx(1 - 0.4 + 0.4 / 4, abs=0.005)


def test_text_is_letters_without_newlines_and_deterministic():
    task = MemoryTask(alphabet=3, length=1000)
    text = task.text()
    assert len(text) == 1000 and set(text) == {"a", "b", "c"}
    assert text == MemoryTask(alphabet=3, length=1000).text()
    assert text != MemoryTask(alphabet=3, length=1000, seed=1).text()


def best_window_loss(task: MemoryTask, num_steps: int, windows: int = 4000) -> float:
    """The loss of the true conditional distribution on windows read from a zero state.

    Position j of a window starting at s predicts x[s+j+1]; it knows x[s+j+1-D] only if that
    index is inside the window, at s or later.
    """
    codes, D, k, eps = task.codes(), task.distance, task.alphabet, task.noise
    q, r = 1 - eps + eps / k, eps / k
    starts = np.arange(windows)[:, None] * (num_steps + 1) + D  # (N, 1)
    j = np.arange(num_steps)[None, :]  # (1, T)
    target, source = starts + j + 1, starts + j + 1 - D  # (N, T)
    copied = codes[target] == codes[source]
    loss = np.where(source >= starts, -np.log(np.where(copied, q, r)), math.log(k))
    return float(loss.mean())


@pytest.mark.parametrize("num_steps", [1, 7, 8, 9, 10, 35])
def test_window_floor_is_what_the_true_model_achieves(num_steps):
    task = MemoryTask(distance=8)
    assert task.window_floor(num_steps) == pytest.approx(
        best_window_loss(task, num_steps), abs=0.02
    )


def test_window_floor_exact_values():
    task = MemoryTask(distance=8)
    ln_k, floor = task.no_memory(), task.floor()
    assert task.window_floor(7) == pytest.approx(ln_k)  # x_{t+1-D} never in the window
    assert task.window_floor(8) == pytest.approx((floor + 7 * ln_k) / 8)  # only the last position
    assert task.window_floor(32) == pytest.approx((25 * floor + 7 * ln_k) / 32)
    assert MemoryTask(distance=1).window_floor(5) == pytest.approx(MemoryTask(distance=1).floor())
    with pytest.raises(UsageError, match="num_steps must be at least 1"):
        task.window_floor(0)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("memory", MemoryTask()),
        ("memory:16", MemoryTask(distance=16)),
        ("memory:16:4", MemoryTask(distance=16, alphabet=4)),
        ("memory:3:5:0.05", MemoryTask(distance=3, alphabet=5, noise=0.05)),
    ],
)
def test_parse(spec, expected):
    assert MemoryTask.parse(spec) == expected
    assert MemoryTask.parse(expected.spec) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("memory:", "bad memory corpus 'memory:': use memory, memory:D"),
        ("memory:x", "bad memory corpus"),
        ("memory:8:8:0.2:9", "bad memory corpus"),
        ("memory:2.5", "bad memory corpus"),
        ("memory:0", "distance D must be at least 1, got 0"),
        ("memory:8:1", "alphabet k must be 2 to 26, got 1"),
        ("memory:8:27", "alphabet k must be 2 to 26, got 27"),
        ("memory:8:8:1.5", "noise eps must be in [0, 1], got 1.5"),
        ("memory:8:8:nan", "noise eps must be in [0, 1]"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        MemoryTask.parse(spec)
    with pytest.raises(UsageError):  # checked as soon as the config is built
        DataConfig(corpus=spec)


def test_is_memory():
    assert is_memory("memory") and is_memory("memory:16")
    assert not is_memory("memoryfile.txt") and not is_memory("timemachine")


def test_memory_is_a_corpus_like_the_others():
    config = DataConfig(corpus="memory:16")
    assert config.resolved_cleaning == "raw"
    text = load_text(config)
    assert text == MemoryTask(distance=16).text()
    data = prepare_data(config)
    train, valid = split(text, 0.1)
    assert len(data.train_ids) == len(train) == 1_800_000 and len(data.valid_ids) == len(valid)
    assert len(data.vocab) == 9  # 8 letters and <unk>


def test_run_directory_name_has_no_colon():
    assert corpus_label("memory:16:4:0.1") == "memory-16-4-0.1"
    assert corpus_label("timemachine") == "timemachine"
    assert corpus_label("/data/my.book.txt") == "my.book"
    run = default_run_dir(DataConfig(corpus="memory:16"), ModelConfig())
    assert run.parent == Path("runs") and run.name.startswith("memory-16-gru-")


def test_train_on_memory_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "m"
    flags = ["--hidden", "8", "--layers", "1", "--batch-size", "4", "--num-steps", "8"]
    assert (
        main(["train", "--corpus", "memory:4", "--out", str(out), "--max-steps", "3", *flags]) == 0
    )
    assert "on memory:4:" in capsys.readouterr().out
    assert main(["train", "--corpus", "memory:4:x", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad memory corpus 'memory:4:x'" in err
