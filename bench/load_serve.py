"""Load check of `rnnlab serve`: N concurrent clients on loopback, latency percentiles, errors.

    python bench/load_serve.py RUN                 # a trained run (e.g. a timemachine run)
    python bench/load_serve.py                     # trains a default timemachine run (1 epoch)
    python bench/load_serve.py RUN --clients 8 --seconds 20 --workers 2

Starts `rnnlab serve RUN` as its own process (so the clients do not share its interpreter),
then for each kind of request runs `--clients` concurrent clients for `--seconds`, each sending
its next request as soon as the last one is answered: the next-character distribution of a
prefix (what the page asks on every keystroke) and a 200-step greedy continuation. Prefixes are
slices of the run's held-out text. Prints a Markdown table: requests, throughput, p50/p95/max
latency and errors (any answer but 200, or a failed connection; must be 0 while the clients fit
in the server's workers + queue). Not a timed test: run it alone on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def train_default(root: Path) -> Path:
    """The default model (`rnnlab train --corpus timemachine`: a 2x256 GRU), one epoch: the
    latency depends on its size, not on how well it is trained."""
    out = root / "timemachine"
    cmd = [
        sys.executable, "-m", "rnnlab", "train", "--corpus", "timemachine", "--out", str(out),
        "--epochs", "1", "--quiet",
    ]  # fmt: skip
    print("training a run:", " ".join(cmd[2:]), file=sys.stderr)
    subprocess.run(cmd, check=True)
    return out


def prefixes(run: Path, count: int, seed: int = 0) -> list[str]:
    """Slices of the run's held-out text, 10 to 60 characters long."""
    import rnnlab
    from rnnlab.data import prepare_data

    lm = rnnlab.load(run, device="cpu")
    text = lm.vocab.decode(prepare_data(lm.run.data, vocab=lm.vocab).valid_ids)
    text = "".join(c for c in text if c in lm.vocab.token_to_idx)  # no <unk>
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.randint(10, 60)
        start = rng.randrange(0, len(text) - n)
        out.append(text[start : start + n])
    return out


def start_server(run: Path, workers: int, queue: int) -> tuple[subprocess.Popen, str, str]:
    cmd = [
        sys.executable, "-m", "rnnlab", "serve", str(run), "--port", "0",
        "--workers", str(workers), "--queue", str(queue),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)  # its stderr shows through
    line = proc.stdout.readline()
    found = re.search(r"\((.+)\) at (http://127\.0\.0\.1:\d+/)", line)
    if not found:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, found.group(2), found.group(1)


async def load(url: str, body_of, clients: int, seconds: float) -> dict:
    """`clients` loops sending requests back to back for `seconds`; latencies in ms."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds

    async def client(k: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            i = k
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await http.post("api/predict", json=body_of(i))
                    if r.status_code != 200:
                        key = f"HTTP {r.status_code}"
                        errors[key] = errors.get(key, 0) + 1
                    else:
                        latencies.append(1000 * (time.perf_counter() - t0))
                except httpx.HTTPError as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                i += clients

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "requests": len(latencies),
        "rate": len(latencies) / wall,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"),
        "max": latencies[-1] if latencies else float("nan"),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", nargs="?", type=Path, help="run directory (default: train one)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="per kind of request")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--queue", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200, help="continuation length")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or train_default(Path(tmp))
        texts = prefixes(run, 512)
        proc, url, name = start_server(run, args.workers, args.queue)
        try:
            kinds = [
                ("next character (top 10)", lambda i: {"run": name, "prefix": texts[i % 512]}),
                (
                    f"{args.steps}-step continuation (greedy)",
                    lambda i: {"run": name, "prefix": texts[i % 512], "steps": args.steps},
                ),
            ]
            rows = [(what, asyncio.run(load(url, body, args.clients, args.seconds)))
                    for what, body in kinds]  # fmt: skip
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"`rnnlab serve` on {cores} CPU cores, {args.workers} workers (queue {args.queue}), "
        f"{args.clients} concurrent clients on loopback, {args.seconds:g} s per row; run {name}"
    )
    print()
    print("| request | requests | req/s | p50 ms | p95 ms | max ms | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for what, r in rows:
        errors = sum(r["errors"].values())
        detail = f" ({', '.join(f'{k}: {v}' for k, v in r['errors'].items())})" if errors else ""
        print(
            f"| {what} | {r['requests']} | {r['rate']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | "
            f"{r['max']:.1f} | {errors}{detail} |"
        )


if __name__ == "__main__":
    main()
