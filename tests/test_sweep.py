"""`rnnlab sweep`: the grid, fair budgets, the measurements, resume, refusals, determinism.

Most sweeps here run `--in-process` on `alphabet` with hidden 8 (about a second a setting);
one slow test runs the real command with spawned workers and stops it with SIGTERM.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rnnlab.cli import build_parser, main
from rnnlab.cli.sweep import spec_from_args
from rnnlab.devices import available
from rnnlab.errors import UsageError
from rnnlab.experiments import measure, runner, store
from rnnlab.experiments.spec import (
    CHECKPOINTS_PER_SETTING,
    DEFAULT_AMOUNTS,
    Budget,
    Grid,
    SweepSpec,
    base_configs,
)
from rnnlab.gradflow import gradflow_windows, hidden_grad_norms
from rnnlab.metrics import evaluate
from rnnlab.model import RNNLM, ModelConfig
from rnnlab.training import Trainer

# Two settings of ~2 epochs each (alphabet: 9,360 training characters; 20,480 per setting).
TINY = [
    "--corpus", "alphabet", "--num-steps", "4,8", "--sampling", "sequential", "--hidden", "8",
    "--batch-size", "4", "--budget", "chars:20480", "--threads", "1", "--in-process", "--quiet",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def sweep(out: Path, *extra: str) -> int:
    return main(["sweep", *TINY, "--out", str(out), *extra])


def rows(out: Path) -> list[dict]:
    return store.read_results(out / store.RESULTS_FILE)


def exact(out: Path) -> list[dict]:
    """results.csv without the columns that may vary between runs (time_*, mem_*)."""
    return [{k: r[k] for k in store.SETTING_COLUMNS + store.EXACT_COLUMNS} for r in rows(out)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "a"
    assert sweep(out) == 0
    return out


# -- the finished sweep ---------------------------------------------------------------------------


def test_a_finished_sweep_holds_every_table_plot_and_run(finished):
    table = rows(finished)
    assert [r["num_steps"] for r in table] == [4, 8]
    assert list(table[0]) == list(store.RESULT_COLUMNS)
    assert {r["chars_trained"] for r in table} == {20_480}  # the same characters for every T
    assert [r["steps"] for r in table] == [1280, 640]
    for r in table:
        assert r["status"] == "ok" and r["threads"] == 1 and r["epochs"] > 2
        assert r["heldout_chars"] == 1039 and 1 < r["heldout_carried_ppl"] < 27
        assert r["heldout_carried_bpc"] == pytest.approx(r["heldout_carried_loss"] / math.log(2))
        assert 0 <= r["clip_fraction"] <= 1 and r["grad_norm"] > 0
        assert r["time_chars_per_s"] > 0 and math.isnan(r["mem_peak_rss_mib"])  # in-process
        assert (finished / "runs" / r["key"] / "checkpoints").is_dir()
    positions = store.read_results(finished / store.POSITIONS_FILE)
    assert len(positions) == 4 + 8
    flows = store.read_results(finished / store.GRADFLOW_FILE)
    assert {f["key"] for f in flows} == {table[1]["key"]} and len(flows) == 7  # T = 8 only
    text = (finished / "report.md").read_text()
    assert f"rnnlab sweep {' '.join(TINY)} --out {finished}" in text
    for name in ("heldout.png", "position_loss_sequential.png", "gradflow.png", "cost.png"):
        assert (finished / name).read_bytes()[:4] == b"\x89PNG"
    assert not list(finished.rglob("*.tmp"))


def test_the_training_figures_come_from_the_run_logs(finished):
    """steps, grad norm, clipping and final training loss agree with the run's steps.csv."""
    r = rows(finished)[0]
    lines = (finished / "runs" / r["key"] / "steps.csv").read_text().splitlines()[1:]
    losses = [float(line.split(",")[2]) for line in lines]
    norms = [float(line.split(",")[3]) for line in lines]
    assert len(lines) == r["steps"]
    assert r["grad_norm"] == pytest.approx(sum(norms) / len(norms), rel=1e-12)
    assert r["clip_fraction"] == sum(n > 1.0 for n in norms) / len(norms)
    per_epoch = 9359 // (4 * 4)  # the last epoch's worth of steps
    assert r["train_final_loss"] == pytest.approx(sum(losses[-per_epoch:]) / per_epoch)


def test_same_command_same_numbers(finished, tmp_path):
    assert sweep(tmp_path / "b") == 0
    assert exact(tmp_path / "b") == [
        {**r, "key": r["key"]} for r in exact(finished)
    ]  # every column but time_* and mem_*, to the last bit (floats are written with repr)


def test_an_interrupted_sweep_continues_where_it_stopped(finished, tmp_path, monkeypatch, capsys):
    """SIGTERM after the first epoch of the second setting: exit 143 with the first setting
    saved; the same command then skips the first and resumes the second from its checkpoint,
    ending with exactly the numbers of a sweep never interrupted."""
    out = tmp_path / "c"
    original = Trainer.finish_epoch
    second = rows(finished)[1]["key"]

    def finish_then_signal(self, ep):
        original(self, ep)
        if self.run_dir.name == second and self.epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Trainer, "finish_epoch", finish_then_signal)
    assert main(["sweep", *TINY, "--out", str(out)]) == 143
    assert [r["key"] for r in rows(out)] == [rows(finished)[0]["key"]]
    assert not (out / "report.md").exists()
    monkeypatch.setattr(Trainer, "finish_epoch", original)

    trained = []
    run_setting = runner.run_setting
    monkeypatch.setattr(
        runner, "run_setting", lambda job, stop: trained.append(job.key) or run_setting(job, stop)
    )
    assert main(["sweep", *TINY[:-1], "--out", str(out)]) == 0  # not --quiet: it says so
    assert "continuing: 1 of 2 settings already done" in capsys.readouterr().out
    assert trained == [second]
    assert exact(out) == exact(finished)


def test_device_cpu_trains_every_setting_there_with_the_same_numbers(
    finished, tmp_path, monkeypatch
):
    """`--device cpu` reaches every setting's Job (resolved, as a string a spawned worker can
    take) and changes no number: the default (auto) is the CPU on this machine."""
    devices = []
    run_setting = runner.run_setting
    monkeypatch.setattr(
        runner,
        "run_setting",
        lambda job, stop: devices.append(job.device) or run_setting(job, stop),
    )
    out = tmp_path / "cpu"
    assert sweep(out, "--device", "cpu") == 0
    assert devices == ["cpu", "cpu"]
    assert exact(out) == exact(finished)


def test_the_device_is_not_part_of_the_sweep(finished, capsys):
    """A sweep continues on another device: --device is not in sweep.json's spec, so a rerun
    with another one meets the sweep's own state (here: finished), not "another configuration"."""
    state = store.read_state(finished)
    assert state is not None and "device" not in json.dumps(state["spec"])
    assert sweep(finished, "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "holds a finished sweep" in err and "another configuration" not in err


def test_a_missing_device_is_one_line_and_exit_2_before_any_work(tmp_path, capsys):
    if "cuda" in available():
        pytest.skip("this machine has CUDA")
    assert sweep(tmp_path / "x", "--device", "cuda") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --device cuda is not available on this machine: available: cpu"]
    assert not (tmp_path / "x").exists()


def test_a_finished_sweep_is_not_overwritten(finished, capsys):
    before = (finished / "results.csv").read_bytes()
    assert sweep(finished) == 2
    err = capsys.readouterr().err.strip()
    assert "holds a finished sweep: pass --force to run it again, --report-only" in err
    assert len(err.splitlines()) == 1
    assert (finished / "results.csv").read_bytes() == before


def test_a_changed_grid_is_refused_with_the_difference(finished, capsys):
    assert main(["sweep", *TINY, "--out", str(finished), "--num-steps", "4,16"]) == 2
    err = capsys.readouterr().err
    assert "holds a sweep with another configuration (grid.num_steps: [4, 8] -> [4, 16])" in err
    assert main(["sweep", *TINY, "--out", str(finished), "--lr", "0.01"]) == 2
    assert "train.lr: 0.003 -> 0.01" in capsys.readouterr().err


def test_report_only_rewrites_the_report(finished, capsys):
    (finished / "report.md").unlink()
    assert main(["sweep", "--out", str(finished), "--report-only"]) == 0
    assert "rnnlab sweep --corpus alphabet" in (finished / "report.md").read_text()


def test_force_starts_over(tmp_path, capsys):
    out = tmp_path / "d"
    args = ["--num-steps", "4", "--budget", "chars:2048"]
    assert sweep(out, *args) == 0
    (out / "mine.txt").write_text("not the sweep's")
    assert sweep(out, "--num-steps", "8", "--budget", "chars:2048") == 2
    assert sweep(out, "--num-steps", "8", "--budget", "chars:2048", "--force") == 0
    assert [r["num_steps"] for r in rows(out)] == [8]
    assert [p.name for p in (out / "runs").iterdir()] == [rows(out)[0]["key"]]
    assert (out / "mine.txt").exists()  # --force removes the sweep's files only


def test_a_directory_holding_something_else_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert sweep(tmp_path) == 2
    assert "is not empty and holds no sweep" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert sweep(tmp_path / "file") == 2
    assert "is a file: give a directory" in capsys.readouterr().err


def test_a_diverging_setting_is_recorded_not_fatal(tmp_path, capsys):
    out = tmp_path / "e"
    code = sweep(
        out, "--num-steps", "4", "--budget", "chars:2048", "--optimizer", "sgd", "--lr", "3e38"
    )
    assert code == 0
    (r,) = rows(out)
    assert r["status"] == "diverged" and math.isnan(r["heldout_carried_loss"])
    assert "Diverged (NaN/inf; left out of the means)" in (out / "report.md").read_text()


# -- user mistakes: one line, exit 2, before any training ------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cells", "gru,grux"], "--cells: unknown value 'grux': use rnn, gru, lstm"),
        (["--num-steps", "4,x"], "--num-steps '4,x': give comma-separated whole numbers"),
        (["--num-steps", "4,,8"], "--num-steps '4,,8': give comma-separated values"),
        (["--num-steps", "0,4"], "--num-steps values must be at least 1, got 0"),
        (["--num-steps", "4,4"], "--num-steps lists a value twice"),
        (["--sampling", "shuffled"], "--sampling: unknown value 'shuffled'"),
        (["--embeds", "-2"], "--embeds values are -1 (auto), 0 (one-hot) or a size"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--budget", "bytes"], "unknown --budget 'bytes': use chars, seconds or epochs"),
        (["--budget", "chars:lots"], "'lots' is not a number"),
        (["--budget", "epochs:1.5"], "--budget epochs needs a whole number above 0"),
        (["--budget", "seconds:0"], "--budget seconds needs a number above 0"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--lr", "-1"], "--lr must be a positive number"),
        (["--num-steps", "4000"], "--num-steps 4000 needs at least"),
        (["--corpus", "no-such-file.txt"], "is neither a built-in"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(tmp_path, capsys, flags, message):
    assert sweep(tmp_path / "x", *flags) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x" / "runs").exists()


def test_report_only_needs_a_finished_sweep(tmp_path, capsys):
    assert main(["sweep", "--out", str(tmp_path), "--report-only"]) == 2
    assert "holds no sweep: run one there first" in capsys.readouterr().err


# -- the pieces -----------------------------------------------------------------------------------


def test_budget_parsing():
    assert Budget.parse("chars") == Budget("chars", 2_000_000)
    assert Budget.parse("chars:2M") == Budget("chars", 2_000_000)
    assert Budget.parse("chars:1.5e6").amount == 1_500_000
    assert Budget.parse("seconds:90") == Budget("seconds", 90.0)
    assert Budget.parse("epochs:3") == Budget("epochs", 3)


def spec(num_steps: list[int], budget: Budget, batch_size: int = 32) -> SweepSpec:
    data, model, train = base_configs(None, {"train": {"batch_size": batch_size}})
    grid = Grid(num_steps=num_steps)
    return SweepSpec(grid, data, model, train, budget, threads=1)


def test_equal_characters_for_every_window():
    s = spec([1, 4, 16, 64], Budget("chars", 1_000_000))
    chars = set()
    for setting in s.grid.settings():
        _, _, cfg = s.configs(setting)
        chars.add(cfg.max_steps * cfg.batch_size * cfg.num_steps)
        assert cfg.save_every == math.ceil(cfg.max_steps / CHECKPOINTS_PER_SETTING)
        assert cfg.seed == setting.seed_index and cfg.sampling == setting.sampling
    assert chars == {999_424}  # 1M rounded to whole 32 x 64 minibatches: under 0.1% off
    # Too small a budget to round for all: each window rounds up to whole minibatches alone.
    s = spec([1, 64], Budget("chars", 100_000))
    assert s.chars_per_setting() == {1: 100_000, 64: 100_352}


def test_seconds_and_epochs_budgets():
    s = spec([4], Budget("seconds", 30))
    _, _, cfg = s.configs(s.grid.settings()[0])
    assert cfg.max_time == 30 and cfg.max_steps is None
    s = spec([4], Budget("epochs", 3))
    _, _, cfg = s.configs(s.grid.settings()[0])
    assert cfg.epochs == 3 and cfg.max_steps is None and cfg.max_time is None


def test_grid_order_keys_and_seeds():
    g = Grid(cell=["rnn", "gru"], num_steps=[2, 8], sampling=["random"], seeds=2)
    settings = g.settings()
    assert len(settings) == 8 and g.varying() == ["cell", "num_steps", "seed_index"]
    assert g.key(settings[0]) == "timemachine-rnn-L1-torch-auto-random-T2-s0"
    assert len({g.key(s) for s in settings}) == 8
    files = Grid(corpus=["a/x.txt", "b/x.txt", "memory:8"])
    assert list(files.corpus_labels().values()) == ["x", "x_", "memory8"]


@pytest.mark.parametrize("T", [1, 5, 22, 40])
def test_reset_evaluation_scores_every_character_from_window_starts(T):
    """Oracle: each window run on its own from a zero state; T >= the text: the carried pass."""
    torch.manual_seed(0)
    model = RNNLM(7, ModelConfig(cell="gru", hidden=6, layers=1, dropout=0.0)).double()
    ids = torch.randint(7, (23,))
    metrics, per_position = measure.evaluate_windows(model, ids, T)
    assert metrics.chars == 22 and per_position.shape == (T,)
    total, sums, counts = 0.0, torch.zeros(T, dtype=torch.float64), torch.zeros(T)
    for start in range(0, 22, T):
        X, Y = ids[start : min(start + T, 22)][None], ids[start + 1 : min(start + T, 22) + 1][None]
        with torch.no_grad():
            logits, _ = model(X)  # from a zero state
        nll = torch.nn.functional.cross_entropy(logits[0], Y[0], reduction="none")
        total += float(nll.sum())
        sums[: len(nll)] += nll
        counts[: len(nll)] += 1
    assert metrics.loss == pytest.approx(total / 22, abs=1e-12)
    seen = counts > 0
    assert torch.allclose(per_position[seen], sums[seen] / counts[seen], atol=1e-12)
    assert torch.isnan(per_position[~seen]).all()
    if T >= 22:
        assert metrics.loss == pytest.approx(evaluate(model, ids).loss, abs=1e-12)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_measurements_equal_their_definitions_whatever_the_ids_dtype(cell):
    """Regression guard for running the measurements on the model's device: ids are moved (a
    no-op on the CPU) and per-position sums kept in float64 on the CPU, so the figures equal, to
    the last bit, the functions they are defined by, for compact or int64 ids alike."""
    torch.manual_seed(0)
    model = RNNLM(7, ModelConfig(cell=cell, hidden=6, layers=2, dropout=0.0))
    ids = torch.randint(7, (300,))
    T = 8
    expected_carried = evaluate(model, ids)
    X = ids[:296].view(37, T)
    Y = ids[1:297].view(37, T)
    with torch.no_grad():
        logits, _ = model(X)
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), Y.flatten(), reduction="none")
    windows = gradflow_windows(ids, T, measure.GRADFLOW_WINDOWS, measure.GRADFLOW_SEED)
    assert windows is not None
    expected_flow = hidden_grad_norms(model, *windows).tolist()
    for given in (ids, ids.to(torch.uint8), ids.to(torch.int16)):
        figures, positions = measure.heldout_figures(model, given, T)
        assert figures["heldout_carried_loss"] == expected_carried.loss
        _, per_position = measure.evaluate_windows(model, given, T)
        assert positions == per_position.tolist() and len(positions) == T
        assert per_position.dtype == torch.float64 and per_position.device.type == "cpu"
        with torch.no_grad():
            assert measure.window_nll(model, X, Y).equal(nll.view(X.shape).double())
        assert measure.gradient_flow(model, given, T) == expected_flow
    assert model.training  # the measurements leave the model as they found it


def test_the_measurements_feed_a_model_on_another_device_there(monkeypatch):
    """Ids given on the CPU reach the model on its own device (the meta device stands in for an
    accelerator: mixing it with CPU tensors raises, as CUDA does); the sums stay on the CPU."""
    meta = torch.device("meta")
    model = RNNLM(7, ModelConfig(cell="gru", hidden=6, dropout=0.0)).to(meta)
    ids = torch.randint(7, (50,)).to(torch.uint8)  # compact ids, as prepare_data makes them
    seen = []

    def nll(model, X, Y):
        seen.append((X.device, Y.device))
        return torch.ones(X.shape, dtype=torch.float64)  # as window_nll: float64, on the CPU

    monkeypatch.setattr(measure, "window_nll", nll)
    metrics, per_position = measure.evaluate_windows(model, ids, 8)
    assert seen == [(meta, meta)] * 2  # the full windows in one pass, then the tail
    assert metrics.chars == 49 and per_position.tolist() == [1.0] * 8
    seen.clear()
    norms = torch.arange(7.0)
    monkeypatch.setattr(
        measure, "hidden_grad_norms", lambda model, X, Y: seen.append((X.device, Y.device)) or norms
    )
    assert measure.gradient_flow(model, ids, 8) == norms.tolist()
    assert seen == [(meta, meta)]


def test_preset_is_the_base_and_flags_override(tmp_path):
    pytest.importorskip("rnnlab.presets")

    def parse(*flags):
        return spec_from_args(build_parser().parse_args(["sweep", "--out", str(tmp_path), *flags]))

    s = parse("--preset", "d2l", "--hidden", "64", "--num-steps", "8,35")
    assert s.model.hidden == 64 and s.model.dropout == 0.0  # flag > preset
    assert s.train.optimizer == "sgd" and s.train.lr == 1.0 and s.train.lr_decay == 1.0
    assert s.data.train_chars == 10_000
    g = s.grid
    assert (g.cell, g.impl, g.embed, g.sampling, g.num_steps) == (
        ["rnn"],
        ["scratch"],
        [0],
        ["sequential"],
        [8, 35],
    )  # axes the preset names are fixed to its values unless a flag lists them
    assert s.budget == Budget("epochs", 500) and s.preset == "d2l"
    assert parse("--preset", "d2l", "--budget", "chars:1000").budget == Budget("chars", 1000)
    plain = parse()
    assert plain.model.hidden == 128 and plain.grid.num_steps == [1, 4, 16, 64]
    assert plain.budget == Budget("chars", DEFAULT_AMOUNTS["chars"])


def test_memory_floors_come_from_the_synthetic_task(monkeypatch):
    class Task:
        def __init__(self, spec):
            self.d = int(spec.split(":")[1])

        @classmethod
        def parse(cls, spec):
            return cls(spec)

        def floor(self):
            return 0.1 * self.d

        def no_memory(self):
            return math.log(4)

        def window_floor(self, num_steps):
            return 1.0 / num_steps

    monkeypatch.setattr(runner, "MemoryTask", Task)
    floors = runner.memory_floors(["memory:3", "timemachine"], [2, 8])
    assert floors == {
        "memory:3": {
            "floor": pytest.approx(0.3),
            "no_memory": math.log(4),
            "window": {"2": 0.5, "8": 0.125},
        }
    }


def test_spec_differences_name_each_changed_leaf():
    old = {"grid": {"num_steps": [1, 2]}, "threads": 2}
    new = {"grid": {"num_steps": [1, 4]}, "threads": 2}
    assert store.spec_differences(old, new) == ["grid.num_steps: [1, 2] -> [1, 4]"]


def test_budget_errors_are_usage_errors():
    with pytest.raises(UsageError, match="whole number"):
        Budget("chars", 10.5)


# -- the real command, spawned workers, a real signal ---------------------------------------------


@pytest.mark.slow
def test_the_command_with_workers_stops_on_sigterm_and_continues(tmp_path):
    out = tmp_path / "w"
    args = [
        sys.executable, "-m", "rnnlab", "sweep", "--corpus", "alphabet", "--num-steps", "2,4,8",
        "--sampling", "random", "--hidden", "8", "--batch-size", "4", "--budget", "chars:30000",
        "--threads", "1", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    try:
        first = out / "runs" / "alphabet-gru-L1-torch-auto-random-T2-s0" / store.RESULT_JSON
        deadline = time.monotonic() + 120
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr
    assert "stopped by SIGTERM" in stdout and "rerun the same command to continue" in stdout
    done = rows(out)
    assert 1 <= len(done) < 3 and not (out / "report.md").exists()
    assert not [p for p in (out / "runs").iterdir() if not list(p.glob("*"))]
    # Two workers at once; --jobs is not part of the sweep's configuration, so it continues.
    proc = subprocess.run(
        [*args, "--jobs", "2"], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "continuing: " in proc.stdout
    table = rows(out)
    assert [r["num_steps"] for r in table] == [2, 4, 8]
    assert all(r["mem_peak_rss_mib"] > 50 for r in table)  # each worker measured its own RSS
    assert "peak RSS" in (out / "report.md").read_text()
