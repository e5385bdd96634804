"""bench/gpu.py is finished code even on a machine without a GPU: its dry mode runs every table.

Which precision rows it prints depends on what this CPU runs (a CPU without native bf16
instructions has no bf16 LSTM): the test asks the same probe the script and `rnnlab train` ask.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnlab.model import CELLS
from rnnlab.training import precision
from rnnlab.training.precision import probe, runnable

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"
ONEDNN = "could not create a primitive descriptor for the LSTM forward propagation primitive"


@pytest.mark.slow
def test_the_gpu_benchmark_runs_on_the_cpu_in_dry_mode():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--dry"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for title in ("rnnlab's train_step vs a bare loop", "What autocast ran", "against the CPU"):
        assert title in out
    cpu = torch.device("cpu")
    for cell in CELLS:
        rows = [line for line in out.splitlines() if line.startswith(f"| {cell} | 32 | 4 |")]
        assert [r.split("|")[4].strip() for r in rows] == runnable(cpu, cell)
        assert runnable(cpu, cell) in (["fp32", "bf16"], ["fp32"])
        if "bf16" not in runnable(cpu, cell):  # a missing row is explained under the table
            assert f"bf16 not run for {cell} on cpu: {probe('bf16', cpu, cell)}" in out
    assert "| 2 |" in out  # the DDP table launched two processes


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dry_tables_leave_out_what_the_cpu_cannot_run(monkeypatch, capsys):
    """On a CPU without a bf16 LSTM (the probe says so here), the tables have no bf16 LSTM row,
    say why, and run the rest: the script never assumes what a device runs."""
    bench = load_bench()
    real = precision.probe

    def no_bf16_lstm(name: str, device: torch.device, cell: str, impl: str = "torch"):
        return ONEDNN if (name, cell) == ("bf16", "lstm") else real(name, device, cell, impl)

    monkeypatch.setattr(precision, "probe", no_bf16_lstm)
    monkeypatch.setattr(bench, "probe", no_bf16_lstm)
    cpu = torch.device("cpu")
    bench.speed_table(cpu, dry=True)
    bench.autocast_table(cpu)
    out = capsys.readouterr().out
    speed, autocast = out.split("## What autocast ran")
    assert column(speed, "lstm", 4) == column(autocast, "lstm", 2) == ["fp32"]
    assert f"bf16 not run for lstm on cpu: {ONEDNN}" in speed
    for cell in ("rnn", "gru"):
        assert column(speed, cell, 4) == column(autocast, cell, 2) == runnable(cpu, cell)


def column(table: str, cell: str, i: int) -> list[str]:
    """Column i of the rows of `cell` in a markdown table."""
    return [r.split("|")[i].strip() for r in table.splitlines() if r.startswith(f"| {cell} |")]
