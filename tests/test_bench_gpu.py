"""bench/gpu.py is finished code even on a machine without a GPU: its dry mode runs every table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


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
    rows = [line for line in out.splitlines() if line.startswith("| gru | 32 | 4 |")]
    assert [r.split("|")[4].strip() for r in rows] == ["fp32", "bf16"]
    assert "| 2 |" in out  # the DDP table launched two processes
