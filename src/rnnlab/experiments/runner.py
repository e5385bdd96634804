"""`rnnlab sweep`: train a grid of settings under one budget and measure every one the same way.

The parent process only plans, waits and writes the tables: each setting runs in a worker
(`rnnlab.experiments.worker`), `jobs` at a time, and the tables are rewritten after each one
finishes, so an interrupted sweep continues where it stopped when the same command is rerun.
When every setting is done, the report (`rnnlab.experiments.markdown`) is written from the tables.
The device every setting trains on is resolved here, once, before any work; it is not part of
the sweep's spec, so a sweep stopped on one device continues on another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rnnlab.batches import check_length
from rnnlab.data import prepare_data
from rnnlab.devices import resolve_device
from rnnlab.errors import RnnlabError, UsageError
from rnnlab.experiments.markdown import write_report
from rnnlab.experiments.report_data import SweepData
from rnnlab.experiments.spec import Setting, SweepSpec, describe_grid
from rnnlab.experiments.store import (
    GRADFLOW_FILE,
    POSITIONS_FILE,
    REPORT_FILE,
    RESULTS_FILE,
    RUNS_DIR,
    claim_sweep_dir,
    locked,
    read_result,
    read_results,
    read_state,
    write_state,
    write_tables,
)
from rnnlab.experiments.worker import Job, run_setting, worker_main
from rnnlab.synthetic import MemoryTask
from rnnlab.training import SignalGuard, StopRequested


def estimated_cost(spec: SweepSpec, s: Setting, train_chars: int) -> float:
    """Relative time a setting will take, for the progress bar's estimate of time left.

    A step costs a fixed overhead (Python, kernel launches; measured ~120 characters' worth for
    a GRU 128 on CPU) plus time proportional to its B x T characters.
    """
    if spec.budget.kind == "seconds":
        return 1.0
    B, T = spec.train.batch_size, s.num_steps
    chars = (
        spec.chars_per_setting()[T]
        if spec.budget.kind == "chars"
        else spec.budget.amount * train_chars
    )
    return chars / (B * T) * (B * T + 120)


@dataclass
class SweepOutcome:
    exit_code: int  # 0 done, 128+signal interrupted
    results: list[dict[str, Any]]
    total: int


class Runner:
    """Runs the settings not yet finished, `jobs` at a time, writing the tables after each."""

    def __init__(
        self,
        spec: SweepSpec,
        out: Path,
        jobs: int = 1,
        isolate: bool = True,
        progress: bool = False,
        log: Callable[[str], None] = print,
        device: torch.device | str = "cpu",
    ) -> None:
        self.spec, self.out, self.jobs, self.isolate = spec, out, jobs, isolate
        self.progress, self.log = progress, log
        self.device = str(device)  # a worker gets it in its Job (a string: spawn pickles it)
        self.settings = spec.grid.settings()
        self.keys = [spec.grid.key(s) for s in self.settings]
        self.done: dict[str, dict[str, Any]] = {}

    def run_dir(self, key: str) -> Path:
        return self.out / RUNS_DIR / key

    def results(self) -> list[dict[str, Any]]:
        return [self.done[k] for k in self.keys if k in self.done]

    def run(self, train_chars: dict[str, int]) -> SweepOutcome:
        for key in self.keys:  # finished settings are read back, never rerun
            r = read_result(self.run_dir(key))
            if r is not None:
                self.done[key] = r
        cost = {
            k: estimated_cost(self.spec, s, train_chars[s.corpus])
            for k, s in zip(self.keys, self.settings, strict=True)
        }
        todo = [(k, s) for k, s in zip(self.keys, self.settings, strict=True) if k not in self.done]
        if self.done:
            self.log(f"continuing: {len(self.done)} of {len(self.keys)} settings already done")
        bar = tqdm(
            total=sum(cost.values()),
            initial=sum(cost[k] for k in self.done),
            disable=not self.progress,
            bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
            desc=f"sweep {len(self.done)}/{len(self.keys)}",
        )
        guard = SignalGuard()
        with guard:
            try:
                if self.isolate:
                    self._run_isolated(todo, guard, bar, cost)
                else:
                    self._run_here(todo, guard, bar, cost)
            finally:
                bar.close()
                write_tables(self.out, self.results())
        code = 0 if guard.signum is None else 128 + guard.signum
        return SweepOutcome(code, self.results(), len(self.keys))

    def _finished(self, key: str, result: dict[str, Any], bar: Any, cost: float) -> None:
        self.done[key] = result
        write_tables(self.out, self.results())
        bar.set_description_str(f"sweep {len(self.done)}/{len(self.keys)}", refresh=False)
        bar.update(cost)
        row = result["row"]
        msg = (
            f"[{len(self.done)}/{len(self.keys)}] {key}: held-out ppl "
            f"{row['heldout_carried_ppl']:.3f} carried, {row['heldout_reset_ppl']:.3f} reset; "
            f"{row['steps']:,} steps, {row['time_setting_s']:.0f} s"
        )
        if row["status"] != "ok":
            msg = f"[{len(self.done)}/{len(self.keys)}] {key}: {row['status']}"
        write = bar.write if self.progress else self.log
        write(msg)
        for w in result["warnings"]:
            write(f"  {key}: {w}")

    def _job(self, key: str, s: Setting) -> Job:
        return Job(self.spec, s, key, self.run_dir(key), self.isolate, self.device)

    def _run_here(
        self, todo: list[tuple[str, Setting]], guard: SignalGuard, bar: Any, cost: dict
    ) -> None:
        """In this process (`--in-process`): no start-up cost, but no per-setting peak memory."""
        for key, s in todo:
            if guard.signum is not None:
                return
            try:
                result = run_setting(self._job(key, s), stop=lambda: guard.signum)
            except StopRequested as e:
                guard.signum = guard.signum or e.exit_code - 128
                return
            self._finished(key, result, bar, cost[key])

    def _run_isolated(
        self, todo: list[tuple[str, Setting]], guard: SignalGuard, bar: Any, cost: dict
    ) -> None:
        """A fresh spawned process per setting, up to `jobs` at once."""
        ctx = multiprocessing.get_context("spawn")
        pending = list(todo)
        running: dict[Any, tuple[str, Any, Any]] = {}  # sentinel -> (key, process, pipe)
        forwarded = False
        error: tuple[str, int, str] | None = None
        while pending or running:
            while pending and len(running) < self.jobs and guard.signum is None and not error:
                key, s = pending.pop(0)
                receive, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(
                    target=worker_main,
                    args=(self._job(key, s), self.spec.threads, send),
                    name=f"rnnlab-sweep-{key}",
                )
                proc.start()
                send.close()
                running[proc.sentinel] = (key, proc, receive)
            if not running:
                break
            # A signal (Ctrl-C reached the workers too; kill -TERM did not) or another setting's
            # failure: the running workers save a checkpoint and stop, to continue on a rerun.
            stop = guard.signum or (signal.SIGTERM if error else None)
            if stop is not None and not forwarded:
                for _, proc, _ in running.values():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, stop)
                forwarded = True
            for sentinel in wait(list(running), timeout=0.5):
                key, proc, receive = running.pop(sentinel)
                proc.join()
                message = _receive(receive)
                result = read_result(self.run_dir(key))  # written last, atomically
                if result is not None:
                    self._finished(key, result, bar, cost[key])
                elif message is not None and error is None:
                    error = (key, message[1], message[2])
                elif guard.signum is None and error is None:
                    error = (key, 1, f"worker exited with code {proc.exitcode}; see above")
        if error is not None and guard.signum is None:
            key, code, message = error
            raise SettingFailed(key, code, message)


def _receive(conn: Any) -> Any:
    """The worker's error message, if it sent one (a closed pipe reads as end of file)."""
    try:
        return conn.recv() if conn.poll() else None
    except EOFError:
        return None
    finally:
        conn.close()


class SettingFailed(RnnlabError):
    """A setting's worker failed: the sweep stops with that setting's exit code."""

    def __init__(self, key: str, code: int, message: str) -> None:
        super().__init__(f"setting {key} failed: {message}")
        self.exit_code = code


def resolve_threads(threads: int, jobs: int) -> int:
    """Torch threads per setting: as asked, else one per worker when several run at once."""
    if threads:
        return threads
    return 1 if jobs > 1 else torch.get_num_threads()


def memory_floors(corpora: list[str], num_steps: list[int]) -> dict[str, dict[str, Any]]:
    """Theoretical loss floors of the `memory` corpora among `corpora` (rnnlab.synthetic)."""
    floors: dict[str, dict[str, Any]] = {}
    for c in corpora:
        if not c.startswith("memory"):
            continue
        task = MemoryTask.parse(c)
        floors[c] = {
            "floor": float(task.floor()),
            "no_memory": float(task.no_memory()),
            "window": {str(T): float(task.window_floor(T)) for T in num_steps},
        }
    return floors


def data_summary(spec: SweepSpec) -> dict[str, dict[str, int]]:
    """Prepare each corpus once in the parent: bad input fails before any training starts."""
    B = spec.train.batch_size
    info: dict[str, dict[str, int]] = {}
    for c in spec.grid.corpus:
        data = prepare_data(dataclasses.replace(spec.data, corpus=c))
        what = f"training text of {c}"
        for T in spec.grid.num_steps:
            check_length(len(data.train_ids), B, T, what)
        if len(data.valid_ids) < 2:
            raise UsageError(f"held-out text of {c} is too short: raise --valid-fraction")
        info[c] = {
            "vocab_size": len(data.vocab),
            "train_chars": len(data.train_ids),
            "heldout_chars": len(data.valid_ids),
        }
    return info


def sweep(
    spec: SweepSpec,
    out: Path,
    command: str,
    force: bool = False,
    jobs: int = 1,
    isolate: bool = True,
    progress: bool = False,
    log: Callable[[str], None] = print,
    device: torch.device | str = "cpu",
) -> int:
    """Run (or continue) the sweep in `out`, then write the report; returns the exit code.

    `device` is where every setting trains and is measured (`--device`: auto, cpu, cuda, ...).
    """
    device = resolve_device(device)  # a device that is not there: refused before any work
    spec_json = spec.to_json()
    with locked(out):
        continuing = claim_sweep_dir(out, spec_json, force)
        info = data_summary(spec)
        state = {"spec": spec_json, "command": command, "data": info, "finished": False}
        if not continuing:
            write_state(out, state)
        settings = spec.grid.settings()
        log(
            f"sweep of {len(settings)} settings ({describe_grid(spec.grid)}), "
            f"{spec.budget.describe()}, torch threads per setting: {spec.threads}"
            # (the device's name, not `describe`: that would start CUDA in this parent too)
            + ("" if device.type == "cpu" else f", on {device}")
            + f" -> {out}"
        )
        runner = Runner(spec, out, jobs, isolate, progress, log, device)
        outcome = runner.run({c: v["train_chars"] for c, v in info.items()})
        if outcome.exit_code:
            log(
                f"stopped by {signal.Signals(outcome.exit_code - 128).name}: "
                f"{len(outcome.results)} of {outcome.total} settings done and saved in "
                f"{out / RESULTS_FILE}; rerun the same command to continue"
            )
            return outcome.exit_code
        write_report(out, sweep_data(out, state, command))
        state["finished"] = True
        write_state(out, state)
        log(f"done: {out / RESULTS_FILE}, {out / REPORT_FILE}")
    return 0


def sweep_data(out: Path, state: dict[str, Any], command: str) -> SweepData:
    """What the report is made from: the tables in `out` (all settings must be finished)."""
    spec = state["spec"]
    grid = spec["grid"]
    return SweepData(
        spec=spec,
        command=command,
        data=state["data"],
        rows=read_results(out / RESULTS_FILE),
        positions=read_results(out / POSITIONS_FILE),
        gradflow=read_results(out / GRADFLOW_FILE),
        floors=memory_floors(grid["corpus"], grid["num_steps"]),
    )


def rewrite_report(out: Path, command: str) -> Path:
    """`--report-only`: the plots and report.md again from a finished sweep's tables."""
    state = read_state(out)
    if state is None or not (out / RESULTS_FILE).exists():
        raise UsageError(f"{str(out)!r} holds no sweep: run one there first")
    if not state["finished"]:
        raise UsageError(
            f"the sweep in {str(out)!r} is not finished: rerun its command to continue it"
        )
    return write_report(out, sweep_data(out, state, state.get("command") or command))
