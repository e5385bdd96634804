"""The sweep directory OUT: its files, the columns of its tables, and reading and writing them.

    OUT/sweep.json          the spec, the command, the corpora's sizes, whether it finished
    OUT/results.csv         one row per setting and seed (`RESULT_COLUMNS`)
    OUT/positions.csv       mean held-out loss by position in a window, state reset
    OUT/gradflow.csv        ||dL/dh|| k steps back, models of the longest window
    OUT/report.md, *.png    the report (`rnnlab.experiments.markdown`, `.figures`)
    OUT/runs/KEY/           each setting's run directory: checkpoints, logs, result.json
    OUT/.sweep.lock         held while a sweep writes OUT

A setting's result.json is written last and atomically: a setting that has one is finished.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rnnlab import checkpoint as ckpt
from rnnlab.errors import UsageError
from rnnlab.experiments.spec import AXES

# results.csv: the setting, then figures a rerun reproduces exactly, then those that vary.
SETTING_COLUMNS = ("key", *AXES, "seed", "status")
EXACT_COLUMNS = (
    "params",
    "vocab_size",
    "threads",
    "chars_trained",
    "steps",
    "epochs",
    "heldout_chars",
    "heldout_carried_loss",
    "heldout_carried_ppl",
    "heldout_carried_bpc",
    "heldout_reset_loss",
    "heldout_reset_ppl",
    "heldout_reset_bpc",
    "train_final_loss",
    "train_final_ppl",
    "grad_norm",
    "clip_fraction",
)
VARYING_COLUMNS = ("time_train_s", "time_chars_per_s", "time_setting_s", "mem_peak_rss_mib")
RESULT_COLUMNS = (*SETTING_COLUMNS, *EXACT_COLUMNS, *VARYING_COLUMNS)

# Files of a sweep directory (`--force` removes these and the setting run directories only).
SPEC_FILE = "sweep.json"
RESULTS_FILE = "results.csv"
POSITIONS_FILE = "positions.csv"
GRADFLOW_FILE = "gradflow.csv"
RESULT_JSON = "result.json"
LOCK_FILE = ".sweep.lock"
RUNS_DIR = "runs"
# The report's files.
REPORT_FILE = "report.md"
HELDOUT_PNG = "heldout.png"
GRADFLOW_PNG = "gradflow.png"
COST_PNG = "cost.png"
GRADIENTS_PNG = "gradients.png"
POSITION_PNG = "position_loss_{sampling}.png"
OUTPUT_FILES = (
    REPORT_FILE,
    HELDOUT_PNG,
    GRADFLOW_PNG,
    COST_PNG,
    GRADIENTS_PNG,
    POSITION_PNG.format(sampling="random"),
    POSITION_PNG.format(sampling="sequential"),
)


def spec_differences(old: Any, new: Any, path: str = "") -> list[str]:
    """`a.b: old -> new` for every leaf that differs between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += spec_differences(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if old == new else [f"{path}: {json.dumps(old)} -> {json.dumps(new)}"]


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold OUT/.sweep.lock: two sweeps writing one directory would corrupt each other."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file: give a directory")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"another rnnlab sweep is running in {str(out)!r}: wait for it or choose another "
                "--out"
            ) from None
        yield


def read_state(out: Path) -> dict[str, Any] | None:
    """sweep.json's state, or None when OUT holds no sweep; a damaged one is a usage error."""
    path = out / SPEC_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        state["spec"], state["finished"]  # noqa: B018  (both must be there)
    except (ValueError, KeyError, TypeError):
        raise UsageError(
            f"{str(path)!r} is damaged: pass --force to start the sweep in {str(out)!r} over"
        ) from None
    return state


def clear_sweep(out: Path) -> None:
    """Remove what a sweep wrote (files and setting run directories), nothing else."""
    for name in (SPEC_FILE, RESULTS_FILE, POSITIONS_FILE, GRADFLOW_FILE, *OUTPUT_FILES):
        (out / name).unlink(missing_ok=True)
    runs = out / RUNS_DIR
    if runs.is_dir():
        for d in runs.iterdir():
            if d.is_dir() and any((d / n).exists() for n in (RESULT_JSON, ckpt.CONFIG, LOCK_FILE)):
                shutil.rmtree(d)
        if not any(runs.iterdir()):
            runs.rmdir()


def claim_sweep_dir(out: Path, spec_json: dict[str, Any], force: bool) -> bool:
    """Decide what to do with OUT; returns True when a sweep there is being continued.

    New or empty: start. Same spec, unfinished: continue. Same spec, finished, or another
    spec: refuse unless --force, which starts over. A non-empty directory holding no sweep is
    refused unless --force (which adds the sweep's files beside what is there).
    """
    state = read_state(out) if not force else None
    if force:
        clear_sweep(out)
        return False
    if state is None:
        others = [p for p in out.iterdir() if p.name != LOCK_FILE] if out.is_dir() else []
        if others:
            raise UsageError(
                f"--out {str(out)!r} is not empty and holds no sweep: choose another --out, or "
                "pass --force to write the sweep there anyway"
            )
        return False
    diffs = spec_differences(state["spec"], spec_json)
    if diffs:
        shown = "; ".join(diffs[:3]) + (f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else "")
        raise UsageError(
            f"{str(out)!r} holds a sweep with another configuration ({shown}): rerun its own "
            "command to continue it, choose another --out, or pass --force to start over"
        )
    if state["finished"]:
        raise UsageError(
            f"{str(out)!r} holds a finished sweep: pass --force to run it again, --report-only to "
            "rewrite its report, or choose another --out"
        )
    return True


def write_state(out: Path, state: dict[str, Any]) -> None:
    """sweep.json: the spec, the command, the corpora's sizes and whether the sweep finished."""
    ckpt.write_atomic(out / SPEC_FILE, ckpt.json_bytes(state))


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """A finished setting's result.json (row, positions, gradflow, warnings), else None."""
    path = run_dir / RESULT_JSON
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None  # a damaged result is measured again


def write_tables(out: Path, results: list[dict[str, Any]]) -> None:
    """results.csv, positions.csv, gradflow.csv from the finished settings, in grid order."""
    ckpt.write_atomic(out / RESULTS_FILE, csv_bytes(RESULT_COLUMNS, [r["row"] for r in results]))
    positions = [
        {"key": r["row"]["key"], "position": i + 1, "loss": loss}
        for r in results
        for i, loss in enumerate(r["positions"] or [])
    ]
    ckpt.write_atomic(out / POSITIONS_FILE, csv_bytes(("key", "position", "loss"), positions))
    flows = [
        {"key": r["row"]["key"], "k": k + 1, "norm": norm}
        for r in results
        for k, norm in enumerate(r["gradflow"] or [])
    ]
    ckpt.write_atomic(out / GRADFLOW_FILE, csv_bytes(("key", "k", "norm"), flows))


def csv_bytes(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> bytes:
    """Floats written with repr, so a rerun's numbers compare exactly."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([repr(v) if isinstance(v, float) else v for v in (row[c] for c in columns)])
    return buf.getvalue().encode("utf-8")


def read_results(path: Path) -> list[dict[str, Any]]:
    """results.csv back as typed rows (ints, floats, strings)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _typed(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _typed(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v
