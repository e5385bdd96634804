"""What `import rnnlab; rnnlab.load(run)` and one question cost: seconds and modules imported.

    python bench/load_cost.py RUN                      # this checkout
    python bench/load_cost.py RUN --other OLD/src      # and another source tree, side by side

Each row runs in fresh subprocesses (`--repeat` times, median reported), so nothing is cached
in the interpreter. "modules" counts every module in `sys.modules` after `lm.next(...)`,
"rnnlab" the package's own, and the last column says whether the training loop or the DDP
code was imported. `import torch` alone is measured too: it is the floor every row pays.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
if sys.argv[1] != "torch":
    import rnnlab
    lm = rnnlab.load(sys.argv[1])
    lm.next("the ")
t2 = time.perf_counter()
heavy = [m for m in ("rnnlab.training.loop", "rnnlab.training.distributed") if m in sys.modules]
print(json.dumps({
    "torch_s": t1 - t0, "total_s": t2 - t0, "modules": len(sys.modules),
    "rnnlab": sum(m.startswith("rnnlab") for m in sys.modules), "heavy": heavy,
}))
"""


def measure(src: Path | None, run: str, repeat: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    rows = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, run], capture_output=True, text=True, env=env, check=True
        )
        rows.append(json.loads(out.stdout))
    return {
        "total_s": statistics.median(r["total_s"] for r in rows),
        "after_torch_s": statistics.median(r["total_s"] - r["torch_s"] for r in rows),
        "modules": rows[0]["modules"],
        "rnnlab": rows[0]["rnnlab"],
        "heavy": ", ".join(rows[0]["heavy"]) or "none",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run directory to load")
    parser.add_argument("--other", type=Path, help="another checkout's src/ to compare with")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1] / "src"
    rows = [("import torch only", None, "torch")]
    if args.other:
        rows.append((f"rnnlab from {args.other}", args.other, args.run))
    rows.append(("rnnlab from this checkout", here, args.run))
    print("| what | seconds (median) | after torch | modules | rnnlab modules | loop or DDP |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, src, run in rows:
        m = measure(src, run, args.repeat)
        print(
            f"| {name} | {m['total_s']:.3f} | {m['after_torch_s']:.3f} | {m['modules']} | "
            f"{m['rnnlab']} | {m['heavy'] if run != 'torch' else '-'} |"
        )


if __name__ == "__main__":
    main()
