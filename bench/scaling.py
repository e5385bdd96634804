"""CPU scaling: one process with 2 threads against 2 processes (torchrun + DDP) of 1 thread.

    python bench/scaling.py                 # the main job's model on timemachine, 300 steps each
    python bench/scaling.py --steps 100     # quicker

Both train the same model on the same global batch (B = 32 by default) for the same number of
steps through the real command (`rnnlab train` and `rnnlab torchrun --nproc-per-node 2 -m rnnlab
train`), alternately, `--reps` times; the table gives median chars/s of training (the `--json`
summary: steps x B x T over the seconds of `fit`, which include the held-out evaluation at each
epoch end and at the end; process start-up excluded) and the ratio, plus the final loss of each
so the two can be seen to train the same model. On a 2-core machine this is a correctness rig,
not a speed-up: both use the two cores, and DDP adds a gradient all-reduce per step. Run it alone
on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

T = 35


def train(nproc: int, threads: int, args: argparse.Namespace, out: Path) -> dict:
    flags = ["train", "--corpus", args.corpus, "--out", str(out), "--max-steps", str(args.steps)]
    # --max-steps alone is the budget: the run crosses epoch ends (each adds a held-out pass)
    flags += ["--batch-size", str(args.batch_size), "--quiet", "--json"]
    flags += ["--threads", str(threads), "--device", "cpu", "--dropout", "0"]
    launcher = ["torchrun", "--standalone", "--nproc-per-node", str(nproc), "-m", "rnnlab"]
    cmd = [sys.executable, "-m", "rnnlab", *(launcher if nproc > 1 else []), *flags]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    if summary["steps"] != args.steps:  # the table must say what was measured
        raise SystemExit(f"asked for {args.steps} steps, the run took {summary['steps']}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="timemachine")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    setups = {"1 process x 2 threads": (1, 2), "2 processes x 1 thread (DDP, gloo)": (2, 1)}
    rates: dict[str, list[float]] = {name: [] for name in setups}
    losses: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for i, (name, (nproc, threads)) in enumerate(setups.items()):
                s = train(nproc, threads, args, Path(tmp) / f"r{rep}-{i}")
                rates[name].append(s["steps"] * args.batch_size * T / s["seconds"])
                losses[name] = s["train_loss"]
    print(
        f"## CPU scaling: {args.corpus}, GRU 2 x 256 (the defaults), global batch "
        f"{args.batch_size} x {T}, {args.steps} steps, median of {args.reps}\n"
    )
    print("| setup | chars/s | relative | training loss |")
    print("| --- | ---: | ---: | ---: |")
    base = statistics.median(rates["1 process x 2 threads"])
    for name, r in rates.items():
        rate = statistics.median(r)
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f} | {losses[name]:.6f} |")


if __name__ == "__main__":
    main()
