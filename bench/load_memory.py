"""Time and peak memory of loading a multi-GB corpus through rnnlab's real loading path.

    python bench/load_memory.py              # a 2 GB file (about 2 minutes, 2 GB of /tmp)
    python bench/load_memory.py --gb 0.25    # a quick check

Writes a text file (Shakespeare repeated, with a line of multi-byte characters in every copy) to
/tmp, loads it with `rnnlab.data.prepare_data` in a fresh subprocess per row (so each row's peak
RSS is its own), prints a Markdown table and deletes the file. For contrast, the last rows load a
smaller file (--whole-gb) both streamed and read whole (the path files under 64 MB take). Peak
RSS is the subprocess's high-water mark (VmHWM), which includes the interpreter and torch (see
"after imports"). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

CHILD = r"""
import json, resource, sys, time

def peak_kb():
    # VmHWM belongs to this process image; ru_maxrss would also count a large parent's pages
    # from before exec.
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

from rnnlab.corpus import DataConfig
from rnnlab.data import prepare_data
path, cleaning, stream_over = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = peak_kb()
t0 = time.perf_counter()
data = prepare_data(DataConfig(corpus=path, cleaning=cleaning), stream_over=stream_over)
seconds = time.perf_counter() - t0
peak = peak_kb()
ids = data.train_ids.numel() + data.valid_ids.numel()
print(json.dumps({"seconds": seconds, "base_kb": base, "peak_kb": peak, "chars": ids,
                  "vocab": len(data.vocab), "dtype": str(data.train_ids.dtype),
                  "ids_bytes": ids * data.train_ids.element_size()}))
"""


def write_corpus(path: Path, size: int) -> None:
    block = resources.files("rnnlab").joinpath("data", "tinyshakespeare.txt").read_bytes()
    block += "\n宋词 naïve café — 😀\n".encode()
    with path.open("wb") as f:
        written = 0
        while written < size:
            piece = block[: size - written]
            f.write(piece)
            written += len(piece)
    # Cutting the last copy may split a multi-byte character: end on whole characters.
    with path.open("rb+") as f:
        f.seek(-8, os.SEEK_END)
        tail = f.read()
        keep = len(tail.decode("utf-8", errors="ignore").encode("utf-8"))
        f.truncate(size - 8 + keep)


def load(path: Path, cleaning: str, stream_over: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), cleaning, str(stream_over)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="file size in GB (10**9 bytes)")
    parser.add_argument(
        "--whole-gb", type=float, default=0.25, help="size of the streamed-vs-whole comparison"
    )
    args = parser.parse_args()
    print("| file | cleaning | path | seconds | MB/s | after imports | peak RSS | ids array |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    runs = [(args.gb, "raw", True), (args.gb, "letters", True)]
    if args.whole_gb:
        runs += [(args.whole_gb, "raw", True), (args.whole_gb, "raw", False)]
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        path = Path(tmp) / "big.txt"
        for gb, cleaning, streamed in runs:
            if not path.exists() or path.stat().st_size > int(gb * 10**9):
                write_corpus(path, int(gb * 10**9))
            stream_over = 64 * 2**20 if streamed else 2**62
            r = load(path, cleaning, stream_over)
            mb = path.stat().st_size / 1e6
            print(
                f"| {mb:,.0f} MB | {cleaning} | {'streamed' if streamed else 'whole'} | "
                f"{r['seconds']:.1f} | {mb / r['seconds']:.0f} | {r['base_kb'] / 1024:,.0f} MiB | "
                f"{r['peak_kb'] / 1024:,.0f} MiB | {r['ids_bytes'] / 2**20:,.0f} MiB "
                f"({r['chars']:,} x {r['dtype'].removeprefix('torch.')}, |V| = {r['vocab']}) |",
                flush=True,
            )
    print(
        f"\ncommand: python bench/load_memory.py --gb {args.gb:g} --whole-gb {args.whole_gb:g}"
        "  (files deleted)"
    )


if __name__ == "__main__":
    main()
