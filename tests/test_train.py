"""The training loop: truncated BPTT (detach), epoch reset, clipping, numerical faults, resume."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.errors import NumericalError
from rnnlab.model import RNNLM, ModelConfig
from rnnlab.training import TrainConfig, lm_trainer

V = 11


def make_trainer(tmp_path, sampling="sequential", epochs=2, cell="gru", **train_kw):
    torch.manual_seed(0)
    ids = torch.randint(V, (1500,), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    model = RNNLM(V, ModelConfig(cell=cell, hidden=16, dropout=0.0))
    cfg = TrainConfig(batch_size=4, num_steps=10, sampling=sampling, epochs=epochs, **train_kw)
    return lm_trainer(
        model, cfg, ids[:1300], ids[1300:], tmp_path / "run", {}, progress=False, log=lambda s: None
    )


def spy_on_states(model):
    """Record (is zero, has graph) of the state each training forward call receives."""
    seen = []
    original = model.forward

    def forward(X, state=None):
        if model.training:
            states = state if isinstance(state, tuple) else (state,)
            seen.append(
                (all(not s.any() for s in states), any(s.grad_fn is not None for s in states))
            )
        return original(X, state)

    model.forward = forward
    return seen


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_sequential_carries_detached_state_and_resets_each_epoch(tmp_path, cell):
    trainer = make_trainer(tmp_path, "sequential", epochs=2, cell=cell)
    seen = spy_on_states(trainer.model)
    trainer.fit()
    per_epoch = len(seen) // 2
    assert per_epoch > 3
    first_of_epoch = [seen[0], seen[per_epoch]]
    assert all(zero for zero, _ in first_of_epoch)  # reset at every epoch start
    assert not any(zero for zero, _ in seen[1:per_epoch])  # carried within the epoch
    assert not any(graph for _, graph in seen)  # detached: no graph into the previous batch


def test_random_sampling_starts_every_minibatch_from_zero(tmp_path):
    trainer = make_trainer(tmp_path, "random", epochs=1)
    seen = spy_on_states(trainer.model)
    trainer.fit()
    assert seen and all(zero for zero, _ in seen)


def test_gradient_is_clipped_to_the_global_norm(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, epochs=1, clip=1e-3)
    norms = []
    real_step = trainer.optimizer.step

    def step(*a, **k):
        norms.append(torch.sqrt(sum((p.grad**2).sum() for p in trainer.model.parameters())))
        return real_step(*a, **k)

    monkeypatch.setattr(trainer.optimizer, "step", step)
    result = trainer.fit()
    assert result.clipped == 1.0  # every step's gradient was above 1e-3
    assert all(abs(float(n) - 1e-3) < 1e-6 for n in norms)


def test_loss_decreases(tmp_path):
    ids = torch.tensor([i % 7 for i in range(2000)], dtype=torch.uint8)
    torch.manual_seed(0)
    model = RNNLM(7, ModelConfig(hidden=32, dropout=0.0))
    trainer = lm_trainer(
        model,
        TrainConfig(batch_size=8, num_steps=16, epochs=3, lr=0.01),
        ids[:1800],
        ids[1800:],
        tmp_path / "r",
        {},
        progress=False,
        log=lambda s: None,
    )
    result = trainer.fit()
    assert result.valid.ppl < 1.5 < trainer.history[0].train.ppl


def test_non_finite_loss_stops_before_the_step_and_keeps_the_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, epochs=3)
    trainer.fit()  # two good epochs saved
    checkpoints = sorted((tmp_path / "run" / "checkpoints").iterdir())
    saved = [(p / "model.safetensors").read_bytes() for p in checkpoints]
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with torch.no_grad():
        trainer.model.output.bias[0] = math.inf
    trainer.config.epochs = 4
    with pytest.raises(NumericalError, match=r"step \d+ .*intact.*--lr"):
        trainer.fit()
    after = list(trainer.model.parameters())
    assert all(
        torch.equal(a, b) for a, b in zip(after[:-1], before[:-1], strict=True)
    )  # no step taken
    assert sorted((tmp_path / "run" / "checkpoints").iterdir()) == checkpoints
    assert [(p / "model.safetensors").read_bytes() for p in checkpoints] == saved


def test_same_seed_same_metrics(tmp_path):
    a = make_trainer(tmp_path / "a").fit()
    b = make_trainer(tmp_path / "b").fit()
    assert a.train == b.train and a.valid == b.valid


def test_resume_continues_exactly(tmp_path):
    straight = make_trainer(tmp_path / "s", epochs=3)
    straight.fit()
    first = make_trainer(tmp_path / "r", epochs=2)
    first.fit()
    resumed = make_trainer(tmp_path / "r", epochs=3)
    torch.manual_seed(123)  # resume must restore every RNG, whatever happened in between
    resumed.resume()
    resumed.fit()
    assert resumed.history[-1].valid == straight.history[-1].valid
    for p, q in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(p, q)

    def rows(run):  # metrics.csv without the timing columns (seconds, chars_per_sec)
        lines = (tmp_path / run / "run" / "metrics.csv").read_text().splitlines()
        return [line.split(",")[:8] + line.split(",")[10:] for line in lines]

    assert len(rows("r")) == 4  # header + the two first epochs kept + the resumed one
    assert rows("r") == rows("s")


@pytest.mark.parametrize("sampling, cell", [("sequential", "lstm"), ("random", "gru")])
def test_interrupt_mid_epoch_then_resume_is_exact(tmp_path, sampling, cell):
    import os
    import signal

    from rnnlab.training import StopRequested

    straight = make_trainer(tmp_path / "s", sampling=sampling, epochs=2, cell=cell)
    straight.fit()

    first = make_trainer(tmp_path / "r", sampling=sampling, epochs=2, cell=cell)
    real_step = first.optimizer.step
    calls = []

    def step_then_signal(*a, **k):
        out = real_step(*a, **k)
        calls.append(1)
        if len(calls) == 45:  # mid-way through the second epoch
            os.kill(os.getpid(), signal.SIGINT)
        return out

    first.optimizer.step = step_then_signal
    with pytest.raises(StopRequested) as stop:
        first.fit()
    assert stop.value.exit_code == 130
    assert first.step == 45 and first.current is not None and first.current.batches_done > 0

    resumed = make_trainer(tmp_path / "r", sampling=sampling, epochs=2, cell=cell)
    torch.manual_seed(99)
    resumed.resume()
    assert resumed.step == 45
    resumed.fit()
    assert resumed.history[-1].train == straight.history[-1].train
    assert resumed.history[-1].valid == straight.history[-1].valid
    for p, q in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_run_stopped_inside_an_epoch_reports_its_real_figures(tmp_path, capsys):
    """--max-steps inside the first epoch: the summary has the held-out figure of the weights
    it saved, the part of an epoch done, and the speed of the steps taken."""
    import json

    from rnnlab.cli import main
    from tinyrun import write_corpus

    corpus = write_corpus(tmp_path)
    flags = ["--hidden", "16", "--batch-size", "4", "--num-steps", "16", "--max-steps", "5"]
    assert (
        main(["train", "--corpus", str(corpus), *flags, "--out", str(tmp_path / "r"), "--json"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 5 and 0 < summary["epochs"] < 1
    assert summary["best_valid_ppl"] == pytest.approx(summary["valid_ppl"])
    assert summary["chars_per_sec"] > 0 and summary["best_epoch"] == 0


def test_train_step_detaches_through_the_tested_function(tmp_path, monkeypatch):
    """The detach the tests check (`model.detach_state`) is the one training runs."""
    from rnnlab.training import loop

    calls = []
    real = loop.detach_state
    monkeypatch.setattr(loop, "detach_state", lambda s: calls.append(1) or real(s))
    make_trainer(tmp_path, epochs=1).fit()
    assert len(calls) > 0
