"""Issue 17's schedules, budget, AdamW and weight average, in the one loop every family runs."""

from __future__ import annotations

import math
import os
import re
import signal

import pytest
import torch

from rnnlab import checkpoint as ckpt
from rnnlab.cli import main
from rnnlab.errors import UsageError
from rnnlab.model import RNNLM, ModelConfig
from rnnlab.seq2seq.train import Seq2SeqTrainConfig
from rnnlab.training import StopRequested, TrainConfig, lm_trainer
from rnnlab.training.config import UNLIMITED_EPOCHS
from rnnlab.training.schedule import WARMUP_START, lr_factor

V = 9


def make_trainer(run_dir, **train_kw):
    torch.manual_seed(0)
    ids = torch.randint(V, (1500,), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    model = RNNLM(V, ModelConfig(cell="gru", hidden=16, dropout=0.1))
    cfg = TrainConfig(batch_size=4, num_steps=10, **train_kw)
    return lm_trainer(
        model, cfg, ids[:1300], ids[1300:], run_dir, {}, progress=False, log=lambda s: None
    )


def step_lrs(run_dir) -> list[float]:
    rows = (run_dir / ckpt.STEPS).read_text().splitlines()
    assert rows[0].split(",")[-1] == "lr"
    return [float(r.split(",")[4]) for r in rows[1:]]


def test_the_factor_warms_up_then_reaches_the_floor_as_the_budget_ends():
    cos = TrainConfig(schedule="cosine", warmup=0.1, lr_floor=0.05)
    lin = TrainConfig(schedule="linear", warmup=0.0, lr_floor=0.0)
    assert lr_factor(cos, 0.0) == pytest.approx(WARMUP_START)
    assert lr_factor(cos, 0.05) == pytest.approx(WARMUP_START + (1 - WARMUP_START) * 0.5)
    assert lr_factor(cos, 0.1) == pytest.approx(1.0)
    assert lr_factor(cos, 1.0) == pytest.approx(0.05)
    assert lr_factor(cos, 0.55) == pytest.approx(0.05 + 0.95 * 0.5)
    assert lr_factor(lin, 0.25) == pytest.approx(0.75) and lr_factor(lin, 1.0) == 0.0
    assert lr_factor(TrainConfig(schedule="constant"), 0.7) == 1.0


def test_wsd_holds_the_rate_then_falls_to_the_floor_over_the_cooldown_only():
    wsd = TrainConfig(schedule="wsd", warmup=0.1, cooldown=0.25, lr_floor=0.1)
    assert lr_factor(wsd, 0.0) == pytest.approx(WARMUP_START)
    assert lr_factor(wsd, 0.1) == pytest.approx(1.0)
    assert lr_factor(wsd, 0.5) == 1.0 and lr_factor(wsd, 0.75) == 1.0  # stable to 1 - cooldown
    assert lr_factor(wsd, 0.875) == pytest.approx(0.1 + 0.9 * 0.5)  # half way down
    assert lr_factor(wsd, 1.0) == pytest.approx(0.1)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "wsd"])
def test_steps_csv_records_a_rate_that_decays_to_the_floor_at_max_steps(tmp_path, schedule):
    trainer = make_trainer(tmp_path / "r", schedule=schedule, max_steps=40, warmup=0.1)
    trainer.fit()
    lrs = step_lrs(tmp_path / "r")
    assert len(lrs) == 40 and trainer.epoch >= 1  # 40 steps run on: the budget is max_steps
    assert lrs[0] == pytest.approx(0.003 * WARMUP_START)
    peak = lrs.index(max(lrs))
    assert peak == 4  # the end of the warm-up (10% of 40 steps)
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :], strict=False))
    assert trainer.lr == pytest.approx(0.0, abs=1e-12)  # after the last step: the floor


def test_the_epochs_budget_sets_the_schedule_when_nothing_else_does(tmp_path):
    trainer = make_trainer(tmp_path / "r", schedule="linear", epochs=2, warmup=0.0)
    trainer.fit()
    lrs = step_lrs(tmp_path / "r")
    n = 2 * trainer.family.num_batches()
    assert len(lrs) == n and lrs[0] == pytest.approx(0.003)
    assert lrs[-1] == pytest.approx(0.003 / n)  # one step before the end of the budget


def test_a_time_budget_alone_is_the_budget():
    assert TrainConfig().epochs == 20 and Seq2SeqTrainConfig().epochs == 30
    assert TrainConfig(max_time=300).epochs == UNLIMITED_EPOCHS
    assert TrainConfig(max_steps=10).epochs == UNLIMITED_EPOCHS
    assert TrainConfig(max_time=300, epochs=3).epochs == 3


def test_max_time_counts_training_seconds_and_ends_the_run(tmp_path):
    trainer = make_trainer(tmp_path / "r", max_time=1.0, schedule="cosine")
    trainer.fit()
    assert trainer.epoch >= 1 and 1.0 <= trainer.elapsed() < 3.0
    assert trainer.budget_progress() == 1.0


def test_adamw_decays_the_weights_and_adam_without_decay_is_unchanged(tmp_path):
    runs = {"a": {}, "b": {"optimizer": "adam", "weight_decay": 0.0}}
    runs["w"] = {"optimizer": "adamw", "weight_decay": 0.5}
    trained = {}
    for k, kw in runs.items():  # each made (seeded) then trained before the next is made
        trained[k] = make_trainer(tmp_path / k, max_steps=5, **kw)
        trained[k].fit()
    a, b, w = trained.values()
    assert isinstance(w.optimizer, torch.optim.AdamW)
    assert w.optimizer.param_groups[0]["weight_decay"] == 0.5
    same = [
        torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True)
    ]
    assert all(same)
    norm = [sum(float(p.detach().norm()) for p in t.model.parameters()) for t in (a, w)]
    assert norm[1] < norm[0]


def test_the_average_is_evaluated_and_saved_the_raw_weights_resume(tmp_path):
    trainer = make_trainer(tmp_path / "r", ema=0.9, epochs=1)
    result = trainer.fit()
    newest = ckpt.list_checkpoints(tmp_path / "r")[-1][1]
    saved = ckpt.read_tensors(newest, ckpt.WEIGHTS)
    state = ckpt.read_tensors(newest, ckpt.STATE)
    average = trainer.ema.module.state_dict()
    assert all(torch.equal(saved[k], average[k].cpu()) for k in saved)
    raw = trainer.model.state_dict()
    assert all(torch.equal(state[f"raw.{k}"], raw[k].cpu()) for k in raw)
    assert not all(torch.equal(saved[k], raw[k]) for k in saved)  # they really differ
    with trainer.averaged():
        assert trainer.family.evaluate() == result.valid  # the figure is the average's


# The test wraps optimizer.step to send the signal, which LambdaLR notices and warns about.
@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_a_stop_and_resume_continue_the_schedule_and_the_average_exactly(tmp_path):
    opts = dict(schedule="cosine", max_steps=60, ema=0.9, optimizer="adamw", weight_decay=0.01)
    straight = make_trainer(tmp_path / "s", **opts)
    straight.fit()
    first = make_trainer(tmp_path / "r", **opts)
    real_step = first.optimizer.step
    calls = []

    def step_then_signal(*a, **k):
        out = real_step(*a, **k)
        calls.append(1)
        if len(calls) == 37:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    first.optimizer.step = step_then_signal
    with pytest.raises(StopRequested):
        first.fit()
    resumed = make_trainer(tmp_path / "r", **opts)
    torch.manual_seed(5)
    resumed.resume()
    assert resumed.step == 37
    resumed.fit()
    assert step_lrs(tmp_path / "r") == step_lrs(tmp_path / "s")
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(a, b)
    ea, eb = resumed.ema.module.state_dict(), straight.ema.module.state_dict()
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


def test_seq2seq_gets_the_schedule_from_the_same_loop(tmp_path, capsys):
    out = tmp_path / "s2s"
    argv = ["seq2seq", "train", "--pairs", "antonyms", "--hidden", "8", "--embed", "4"]
    argv += ["--schedule", "linear", "--max-steps", "12", "--warmup", "0", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    lrs = step_lrs(out)
    assert len(lrs) == 12 and lrs[0] == pytest.approx(0.003) and lrs == sorted(lrs, reverse=True)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"schedule": "step"}, "unknown schedule 'step'"),
        ({"warmup": 1.0}, "--warmup must be in [0, 1)"),
        ({"lr_floor": 2.0}, "--lr-floor must be in [0, 1]"),
        ({"cooldown": 0.0}, "--cooldown must be in (0, 1]"),
        ({"schedule": "wsd", "warmup": 0.5, "cooldown": 0.6}, "add up to more than the budget"),
        ({"weight_decay": -1.0}, "--weight-decay must be 0 or more"),
        ({"ema": 1.0}, "--ema must be in [0, 1)"),
        ({"ema": math.nan}, "--ema must be in [0, 1)"),
    ],
)
def test_bad_schedule_options_are_refused_in_one_line(kw, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        TrainConfig(**kw)


def test_the_cli_refuses_a_bad_schedule_with_exit_2(capsys):
    assert main(["train", "--corpus", "alphabet", "--warmup", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--warmup must be in [0, 1)" in err[0]


def test_exponential_decay_multiplies_the_rate_after_every_epoch(tmp_path):
    trainer = make_trainer(tmp_path / "r", schedule="exponential", lr_decay=0.5, epochs=3)
    trainer.fit()
    lrs = step_lrs(tmp_path / "r")
    n = trainer.family.num_batches()
    assert lrs[0] == lrs[n - 1] == pytest.approx(0.003)
    assert lrs[n] == pytest.approx(0.0015) and lrs[-1] == pytest.approx(0.00075)
    assert trainer.lr == pytest.approx(0.000375)
