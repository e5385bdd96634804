"""Dynamic evaluation (rnnlab.dynamic): scored before it learns, honest, and kept apart.

The promises of issue 17 item 5: every character's loss is added before any update that has seen
it; with eta = lambda = 0 it is the static carried-state figure; on text from a source of known
entropy it never beats the source itself; the loaded model (and the run on disk) never changes;
eta and lambda are tuned on training text only; the CLI prints it beside the static figure.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import rnnlab
import rnnlab.dynamic as dyn
from rnnlab.cli import main
from rnnlab.dynamic import (
    DynamicConfig,
    DynamicReport,
    RmsUpdate,
    dynamic_evaluate,
    gradient_rms,
    score_then_update,
    tune_and_evaluate,
    tuning_slices,
)
from rnnlab.metrics import evaluate
from rnnlab.model import RNNLM, ModelConfig, detach_state, eval_mode
from tinyrun import train_tiny

# Small settings for the tiny run: seconds, not minutes.
QUICK = DynamicConfig(tune_chars=400, stats_batches=5, stats_rows=4, segment=20, grid=2)
QUICK_FLAGS = [
    *("--tune-chars", "400", "--stats-batches", "5", "--stats-rows", "4", "--segment", "20"),
    *("--grid", "2"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> rnnlab.TrainedRun:
    return train_tiny(tmp_path_factory.mktemp("dynamic"))


def tiny_model(cell: str = "lstm", impl: str = "torch", vocab: int = 7) -> RNNLM:
    torch.manual_seed(0)
    return RNNLM(vocab, ModelConfig(cell=cell, hidden=12, layers=2, dropout=0.3, impl=impl))


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- scored before it learns ---------------------------------------------------------------------


def test_every_segment_is_scored_before_its_update():
    """A spy on the forward passes and the updates: forward k, update k, forward k+1, ..."""
    model = tiny_model()
    ids = torch.randint(7, (103,), generator=torch.Generator().manual_seed(1))
    events: list[tuple[str, int]] = []
    model.register_forward_hook(lambda m, inputs, out: events.append(("score", inputs[0].shape[1])))
    total, n = score_then_update(model, ids, 10, lambda m: events.append(("update", 0)))
    assert n == 102 and math.isfinite(total)
    assert [kind for kind, _ in events] == ["score", "update"] * 11  # 10 segments of 10, one of 2
    assert [t for kind, t in events if kind == "score"] == [10] * 10 + [2]


def runs_text(segment: int, segments: int) -> tuple[torch.Tensor, list[int]]:
    """ids whose k-th segment's targets are all one character c_k, with c_k != c_(k-1)."""
    chars = [k % 3 for k in range(segments)]
    ids = [0] + [c for c in chars for _ in range(segment)]
    return torch.tensor(ids), chars


def oracle(chars: list[int]) -> dyn.Update:
    """An update that makes the model certain of the characters of the segment it just saw."""
    seen = iter(chars)

    @torch.no_grad()
    def update(model: RNNLM) -> None:
        model.output.weight.zero_()
        model.output.bias.fill_(-50.0)
        model.output.bias[next(seen)] = 50.0

    return update


def test_an_update_that_knows_the_segment_cannot_help_score_it():
    # If any character were scored after the update that saw it, the oracle would make its loss
    # ~0; scored before, every segment after the first is predicted with the previous segment's
    # character, which is wrong, at ~100 nats.
    segment, segments = 8, 6
    ids, chars = runs_text(segment, segments)
    total, n = score_then_update(tiny_model(vocab=3), ids, segment, oracle(chars))
    assert n == segment * segments
    assert total / n > 0.8 * 100.0 * (segments - 1) / segments

    # The same oracle, applied before scoring (the order the walk must never use), looks perfect:
    # the test above can tell the two orders apart.
    model, cheat, cheat_total = tiny_model(vocab=3), oracle(chars), 0.0
    with torch.no_grad():
        state = model.begin_state(1)
        for start in range(0, n, segment):
            cheat(model)
            logits, state = model(ids[start : start + segment][None], state)
            cheat_total += F.cross_entropy(
                logits[0], ids[start + 1 : start + segment + 1], reduction="sum"
            ).item()
    assert cheat_total / n < 1e-6


@pytest.mark.parametrize(
    "cell,impl", [("lstm", "torch"), ("gru", "torch"), ("gru", "fast"), ("rnn", "scratch")]
)
def test_eta_and_lambda_zero_is_the_static_figure(cell, impl):
    model = tiny_model(cell, impl)
    ids = torch.randint(7, (517,), generator=torch.Generator().manual_seed(2))
    config = DynamicConfig(eta=0.0, decay=0.0, grid=1, segment=37, stats_batches=3, stats_rows=2)
    rms = gradient_rms(model, ids, config)
    static = evaluate(model, ids, rows=1)
    dynamic = dynamic_evaluate(model, ids, rms, config)
    assert dynamic.chars == static.chars == 516
    assert abs(dynamic.loss - static.loss) < 1e-6
    # ... and through the tuning front door, with the same training text.
    report = tune_and_evaluate(model, ids[:300], ids, config, static_rows=1)
    assert abs(report.dynamic.loss - report.static.loss) < 1e-6
    assert report.static == static


def test_it_adapts():
    """A text that repeats: the static model never learns it; the dynamic one does."""
    torch.manual_seed(0)
    model = RNNLM(5, ModelConfig(cell="lstm", hidden=12, layers=1))
    ids = torch.tensor([0, 1, 2, 3, 4, 2, 1, 0, 3] * 60)
    config = DynamicConfig(eta=1e-2, decay=0.0, grid=1, segment=9, stats_batches=5, stats_rows=2)
    rms = gradient_rms(model, ids[:200], config)
    assert dynamic_evaluate(model, ids, rms, config).loss < evaluate(model, ids, rows=1).loss - 1.0


# -- honest on a source of known entropy ---------------------------------------------------------

P = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=torch.float64)  # an i.i.d. source
ENTROPY = float(-(P * P.log()).sum())  # 1.3331 nats/char


def source_text(n: int, seed: int) -> torch.Tensor:
    return torch.multinomial(P, n, replacement=True, generator=torch.Generator().manual_seed(seed))


def source_nll(ids: torch.Tensor) -> float:
    """What the source itself loses on this exact text: the floor for this text."""
    return float(-P.log()[ids[1:]].sum())


def knows_the_source(seed: int) -> RNNLM:
    """A model that already predicts the source's distribution (almost) exactly."""
    torch.manual_seed(seed)
    model = RNNLM(5, ModelConfig(cell="lstm", hidden=16, layers=1, dropout=0.0))
    with torch.no_grad():
        model.output.weight.mul_(0.05)
        model.output.bias.copy_(P.log())
    return model


def score_after_update(model: RNNLM, ids: torch.Tensor, segment: int, update: dyn.Update) -> float:
    """The wrong order: learn from a segment, then score it. Only here to show the test bites."""
    total, n = 0.0, len(ids) - 1
    with eval_mode(model):
        state = model.begin_state(1)
        for start in range(0, n, segment):
            end = min(start + segment, n)
            X, Y = ids[start:end][None], ids[start + 1 : end + 1]
            model.zero_grad()
            logits, _ = model(X, state)
            F.cross_entropy(logits[0], Y).backward()
            update(model)
            with torch.no_grad():
                logits, state = model(X, state)
            total += F.cross_entropy(logits[0], Y, reduction="sum").item()
            state = detach_state(state)
    return total


# The entropy is the floor in expectation; on one finite text the floor is what the source itself
# loses on it (source_nll), which a lucky text puts below the entropy. No sequential predictor
# beats the source on a text by t nats with probability above exp(-t) (Markov's inequality on the
# likelihood ratio, whose expectation is 1), so SLACK = 10 nats fails by chance once in 22,000.
SLACK = 10.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_never_below_the_source_even_with_a_large_learning_rate(seed):
    model = knows_the_source(seed)
    ids, train_ids = source_text(1500, seed), source_text(1500, 100 + seed)
    floor = source_nll(ids)
    assert abs(floor / (len(ids) - 1) - ENTROPY) < 0.08  # 5 standard errors: a typical text
    config = DynamicConfig(segment=5, stats_batches=20, stats_rows=8, grid=1, decay=0.0)
    rms = gradient_rms(model, train_ids, config)
    for eta in (1e-2, 1e-1):
        m = dynamic_evaluate(model, ids, rms, DynamicConfig(eta=eta, decay=0.0, grid=1, segment=5))
        assert m.loss * m.chars >= floor - SLACK, eta
    # The same update in the wrong order beats the source by far more: the bound above bites.
    cheat = copy.deepcopy(model)
    assert score_after_update(cheat, ids, 5, RmsUpdate(cheat, rms, 1e-2, 0.0, 2e-5)) < floor - 40


def test_tuned_figure_never_below_the_source():
    model = knows_the_source(3)
    ids, train_ids = source_text(1500, 3), source_text(1500, 103)
    config = DynamicConfig(segment=10, tune_chars=500, stats_batches=10, stats_rows=8, grid=2)
    report = tune_and_evaluate(model, train_ids, ids, config)
    assert report.dynamic.loss * report.dynamic.chars >= source_nll(ids) - SLACK
    assert report.dynamic.loss >= ENTROPY - 0.05


# -- the model and the reported text are left alone ----------------------------------------------


def test_the_model_is_not_changed(trained):
    lm = trained.model
    before, mode = weights(lm.model), lm.model.training
    report = lm.evaluate(dynamic=QUICK)
    assert isinstance(report, DynamicReport)
    after = lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    assert all(p.grad is None for p in lm.model.parameters())
    assert lm.model.training == mode
    assert report.static == lm.evaluate()  # the static figure is the one evaluate gives


def test_tuning_reads_only_the_end_of_the_training_text(monkeypatch):
    model = tiny_model()
    g = torch.Generator().manual_seed(4)
    train_ids, reported = (
        torch.randint(7, (900,), generator=g),
        torch.randint(7, (300,), generator=g),
    )
    config = DynamicConfig(tune_chars=250, stats_batches=4, stats_rows=3, segment=25, grid=2)
    walked: list[torch.Tensor] = []
    measured: list[torch.Tensor] = []
    real_walk, real_rms = dyn.score_then_update, dyn.gradient_rms
    monkeypatch.setattr(
        dyn, "score_then_update", lambda m, ids, *a: walked.append(ids) or real_walk(m, ids, *a)
    )
    monkeypatch.setattr(
        dyn, "gradient_rms", lambda m, ids, *a: measured.append(ids) or real_rms(m, ids, *a)
    )
    report = tune_and_evaluate(model, train_ids, reported, config)
    assert tuning_slices(900, config) == ((650, 900), (0, 650))
    assert report.tuned_on == (650, 900) and report.stats_on == (0, 650)
    assert len(walked) == 4 + 1  # the 2 x 2 grid, then the reported text once
    assert all(torch.equal(ids, train_ids[650:]) for ids in walked[:-1])
    assert torch.equal(walked[-1], reported)
    assert len(measured) == 1 and torch.equal(measured[0], train_ids[:650])
    # Another reported text: the same settings are chosen.
    other = tune_and_evaluate(model, train_ids, reported.flip(0), config)
    assert (other.eta, other.decay, other.grid) == (report.eta, report.decay, report.grid)


def test_a_short_training_text_is_both_slices():
    config = DynamicConfig(tune_chars=1000)
    assert tuning_slices(800, config) == ((0, 800), (0, 800))
    assert tuning_slices(1001, config) == ((1, 1001), (0, 1001))
    assert tuning_slices(1500, config) == ((500, 1500), (0, 500))


def test_the_grid_is_centred_on_eta_and_lambda():
    grid = DynamicConfig(eta=3e-4, decay=5e-3, grid=3).candidates()
    assert len(grid) == 9 and grid[4] == pytest.approx((3e-4, 5e-3))
    assert grid[0] == pytest.approx((1e-4, 5e-3 / 3)) and grid[-1] == pytest.approx((9e-4, 1.5e-2))
    assert DynamicConfig(eta=0.0, decay=0.0, grid=1).candidates() == [(0.0, 0.0)]


def test_a_diverging_setting_is_inf_not_an_error():
    model = tiny_model()
    ids = torch.randint(7, (400,), generator=torch.Generator().manual_seed(5))
    config = DynamicConfig(eta=1e6, decay=0.0, grid=1, segment=10, stats_batches=2, stats_rows=2)
    m = dynamic_evaluate(model, ids, gradient_rms(model, ids, config), config)
    assert m.loss > 50 or math.isinf(m.loss)


# -- the front doors -----------------------------------------------------------------------------


def test_cli_prints_the_dynamic_figure_beside_the_static_one(trained, capsys):
    run = str(trained.run_dir)
    code, static_out, _ = cli(capsys, "evaluate", run)
    assert code == 0
    code, out, err = cli(capsys, "evaluate", run, "--dynamic", *QUICK_FLAGS)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == static_out.strip()  # the static line, unchanged
    what = static_out.split(": loss")[0]  # "<corpus> held-out split"
    assert lines[1].startswith(f"{what}, dynamic evaluation*: loss ")
    assert "every character scored before the model learns from it" in lines[2]
    n = len(dyn.training_ids(trained.model.run.data, trained.model.vocab))
    assert f"chosen on training characters {n - 400:,}-{n:,}" in lines[2]


def test_cli_json_keeps_the_static_keys_and_adds_dynamic(trained, capsys):
    run = str(trained.run_dir)
    _, plain, _ = cli(capsys, "evaluate", run, "--json")
    code, out, _ = cli(capsys, "evaluate", run, "--dynamic", "--json", *QUICK_FLAGS)
    assert code == 0
    static, both = json.loads(plain), json.loads(out.strip().splitlines()[-1])
    assert {k: both[k] for k in static} == static
    d = both["dynamic"]
    assert set(d) >= {"loss", "ppl", "bpc", "chars", "eta", "lambda", "tuned_on", "grid"}
    n = len(dyn.training_ids(trained.model.run.data, trained.model.vocab))
    assert d["tuned_on"] == {"text": "train", "start": n - 400, "end": n}
    assert d["chars"] == static["chars"] and len(d["grid"]) == 4
    assert abs(d["bpc"] - d["loss"] / math.log(2)) < 1e-12
    # The API gives the same figures.
    report = trained.model.evaluate(dynamic=QUICK).to_dict()
    report["dynamic"].pop("seconds"), d.pop("seconds")
    assert report == both


def test_cli_dynamic_on_another_text(trained, tmp_path, capsys):
    f = tmp_path / "other.txt"
    f.write_text("the cat sat on the log. " * 10, encoding="utf-8")
    code, out, _ = cli(
        capsys,
        "evaluate",
        str(trained.run_dir),
        "--corpus",
        str(f),
        "--dynamic",
        "--json",
        *QUICK_FLAGS,
    )
    assert code == 0
    both = json.loads(out.strip().splitlines()[-1])
    assert both["chars"] == both["dynamic"]["chars"] == 239
    n = len(dyn.training_ids(trained.model.run.data, trained.model.vocab))
    assert both["dynamic"]["tuned_on"]["end"] == n  # still the run's training text


def test_the_run_on_disk_is_not_changed(trained, capsys):
    def digest(run: Path) -> dict[str, str]:
        return {
            str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*"))
            if p.is_file()
        }

    before = digest(trained.run_dir)
    assert cli(capsys, "evaluate", str(trained.run_dir), "--dynamic", *QUICK_FLAGS)[0] == 0
    assert digest(trained.run_dir) == before


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--eta", "-1"], "--eta must be a number of 0 or more, got -1.0"),
        (["--decay", "2"], "--decay (lambda) must be between 0 and 1, got 2.0"),
        (["--segment", "0"], "--segment must be at least 1 character, got 0"),
        (["--eps", "0"], "--eps must be a number above 0, got 0.0"),
        (["--stats-batches", "0"], "--stats-batches must be at least 1, got 0"),
        (["--stats-rows", "0"], "--stats-rows must be at least 1, got 0"),
        (["--tune-chars", "1"], "--tune-chars must be at least 2, got 1"),
        (["--grid", "0"], "--grid must be at least 1, got 0"),
        (["--eta", "0"], "--grid scales --eta and --decay, so both must be above 0"),
        (["--eta", "nan"], "--eta must be a number of 0 or more, got nan"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(trained, capsys, extra, message):
    code, _, err = cli(capsys, "evaluate", str(trained.run_dir), "--dynamic", *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_settings_without_dynamic_are_refused(trained, capsys):
    code, _, err = cli(capsys, "evaluate", str(trained.run_dir), "--eta", "1e-3", "--grid", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--eta, --grid set dynamic evaluation: add --dynamic" in err


def test_a_missing_training_text_is_one_line_and_exit_2(tmp_path, capsys):
    trained = train_tiny(tmp_path)
    corpus = tmp_path / "quotes.txt"
    other = tmp_path / "other.txt"
    corpus.rename(other)
    code, _, err = cli(
        capsys, "evaluate", str(trained.run_dir), "--corpus", str(other), "--dynamic"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "dynamic evaluation tunes on the run's training text, which cannot be read" in err
    assert "quotes.txt" in err
    # Without --dynamic the same evaluation needs no training text.
    assert cli(capsys, "evaluate", str(trained.run_dir), "--corpus", str(other))[0] == 0


def test_api_errors(trained):
    with pytest.raises(rnnlab.UsageError, match="dynamic must be True, False or a DynamicConfig"):
        trained.model.evaluate(dynamic="yes")  # type: ignore[arg-type]
    model = RNNLM(7, ModelConfig(hidden=8, layers=1, bidirectional=True))
    ids = torch.randint(7, (100,))
    with pytest.raises(rnnlab.UsageError, match="needs a left-to-right model"):
        tune_and_evaluate(model, ids, ids, QUICK)
    with pytest.raises(rnnlab.UsageError, match="too short to evaluate"):
        tune_and_evaluate(tiny_model(), ids, ids[:1], QUICK)
