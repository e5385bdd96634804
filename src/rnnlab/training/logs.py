"""The run's logs: metrics.csv (one row per epoch) and steps.csv (one row per optimizer step).

steps.csv records each step's learning rate (the rate that update used). The logs are written
just before each checkpoint and may run ahead of it after a crash; a resume cuts them back to
the checkpoint's step (`read_step_rows`), so they always describe one history.
"""

from __future__ import annotations

from pathlib import Path

from rnnlab import checkpoint as ckpt

METRICS_HEADER = (
    "epoch,step,train_loss,train_ppl,train_bpc,valid_loss,valid_ppl,valid_bpc,"
    "seconds,chars_per_sec,grad_norm,clip_fraction"
)
STEPS_HEADER = "step,epoch,loss,grad_norm,lr"


class RunLogs:
    """metrics.csv rows kept whole, steps.csv rows buffered between saves (no I/O per step)."""

    def __init__(self, run_dir: Path, header: str = METRICS_HEADER) -> None:
        self.run_dir = run_dir
        self.header = header
        self.metrics_rows: list[str] = [header]
        # `steps_base` is None once the file on disk is right, else the rows to rewrite it with
        # (none for a new run; those up to the checkpoint's step after a resume).
        self.pending_steps: list[str] = []
        self.steps_base: list[str] | None = []

    def step(self, row: str) -> None:
        self.pending_steps.append(row)

    def epoch(self, row: str) -> None:
        self.metrics_rows.append(row)

    def write(self) -> None:
        """metrics.csv whole (a few rows); steps.csv appended with the rows since the last save."""
        csv = "\n".join(self.metrics_rows) + "\n"
        ckpt.write_atomic(self.run_dir / ckpt.METRICS, csv.encode("utf-8"))
        path = self.run_dir / ckpt.STEPS
        if self.steps_base is not None or not path.exists():
            rows = [STEPS_HEADER, *(self.steps_base or []), *self.pending_steps]
            ckpt.write_atomic(path, ("\n".join(rows) + "\n").encode("utf-8"))
        elif self.pending_steps:
            ckpt.append_synced(path, ("\n".join(self.pending_steps) + "\n").encode("utf-8"))
        self.steps_base, self.pending_steps = None, []

    def cut_back(self, epochs: int, step: int) -> None:
        """After a resume: forget rows past the checkpoint (a crash may have left some)."""
        metrics = self.run_dir / ckpt.METRICS
        if metrics.exists():
            rows = metrics.read_text(encoding="utf-8").splitlines()
            self.metrics_rows = [self.header] + rows[1 : epochs + 1]
        self.steps_base = read_step_rows(self.run_dir / ckpt.STEPS, step)
        self.pending_steps = []


def read_step_rows(path: Path, last_step: int) -> list[str]:
    """Rows of steps.csv for steps 1..last_step, stopping at the first unreadable row."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
        fields = line.split(",")
        try:
            step = int(fields[0])
            float(fields[2]), float(fields[3])
        except (ValueError, IndexError):
            break
        if step > last_step or len(fields) != 5:
            break
        rows.append(line)
    return rows
