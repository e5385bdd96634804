"""Throughput of rnnlab's training, generation, evaluation and corpus loading, side by side.

    python bench/throughput.py            # every table (about 8 minutes)
    python bench/throughput.py --quick    # fewer configurations and repetitions (about 2 minutes)
    python bench/throughput.py --regularisation   # only the regularisation table (about 1 minute)

Every comparison runs its contenders interleaved in one process and reports medians over
repetitions and their ratios, because these machines are noisy: never compare figures taken in
two different runs. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from rnnlab.batches import sequential_batches
from rnnlab.decoding import DecodeConfig, decode
from rnnlab.generate import lm_advance
from rnnlab.metrics import evaluate
from rnnlab.model import RNNLM, ModelConfig, detach_state, mask_generator
from rnnlab.training import TrainConfig, Trainer, lm_trainer

V = 28  # the Time Machine's vocabulary
T = 35  # num_steps
SECONDS_PER_MEASURE = 0.4  # each contender's timed stretch; repeated `reps` times, interleaved
GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    t0 = time.perf_counter()
    work = fn()
    return work, time.perf_counter() - t0


def paired(contenders: dict[str, Callable[[], int]], reps: int) -> dict[str, float]:
    """Median rate (work per second) of each contender, measured in turn `reps` times."""
    for fn in contenders.values():
        fn()  # warm-up: allocations, TorchScript compilation, caches
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(reps):
        for name, fn in contenders.items():
            work, seconds = timed(fn)
            rates[name].append(work / seconds)
    return {name: statistics.median(r) for name, r in rates.items()}


def matmul_peak(reps: int = 7) -> float:
    """The machine's fp32 matrix-product rate (GFLOP/s), from 2048 x 2048 products."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def flops_per_char(cell: str, hidden: int, layers: int, input_size: int) -> float:
    """Forward + backward matrix-product FLOPs per trained character (3x the forward's)."""
    G = GATES[cell] * hidden
    forward = 2 * hidden * V  # the output layer
    for layer in range(layers):
        forward += 2 * G * ((input_size if layer == 0 else hidden) + hidden)
    return 3 * forward


# -- training -----------------------------------------------------------------------------------


class _NoSignals:
    """Stands in for the SignalGuard: no signal ever arrives."""

    signum = None


def make_trainer(model: RNNLM, ids: torch.Tensor, B: int) -> Trainer:
    config = TrainConfig(batch_size=B, num_steps=T, epochs=10**6, save_every=0)
    return lm_trainer(
        model, config, ids, ids[:1000], Path(tempfile.mkdtemp()), {}, progress=False,
        log=lambda s: None,
    )  # fmt: skip


def trainer_epoch(trainer: Trainer) -> int:
    """One full epoch of rnnlab's own loop (a fresh epoch each call); returns chars trained."""
    trainer.current = None
    return trainer.run_epoch(_NoSignals()).count  # type: ignore[arg-type]


def bare_epoch(
    model: RNNLM, opt: torch.optim.Optimizer, ids: torch.Tensor, B: int, variable: bool = False
) -> int:
    """The plainest truncated-BPTT loop with the same work as rnnlab's: the reference.

    With regularisation on, each step draws its masks once (`mask_generator(seed, step)`, as a
    training loop does); `variable` draws each window's length.
    """
    state = None
    chars = 0
    gen = torch.Generator().manual_seed(0)
    for step, (X, Y) in enumerate(sequential_batches(ids, B, T, gen, variable_window=variable)):
        state = model.begin_state(B) if state is None else detach_state(state)
        masks = None  # all off: exactly the plain loop
        if model.config.uses_masks:
            masks = model.sample_masks(B, mask_generator(0, step))
        logits, state = model(X, state, masks)
        loss = F.cross_entropy(logits.reshape(-1, V), Y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        chars += Y.numel()
    return chars


def corpus_for(seconds: float, rate: float, B: int) -> torch.Tensor:
    """Random ids long enough for about `seconds` of training at `rate` chars/s (>= 3 batches)."""
    steps = max(3, round(seconds * rate / (B * T)))
    n = steps * B * T + T + 1
    g = torch.Generator().manual_seed(0)
    return torch.randint(V, (n,), generator=g).to(torch.uint8)


def calibrate(model: RNNLM, B: int) -> float:
    """A rough chars/s of one configuration, to size its timed corpus."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ids = corpus_for(0, 1, B)
    bare_epoch(model, opt, ids, B)
    chars, seconds = timed(lambda: bare_epoch(model, opt, ids, B))
    return chars / seconds


def bench_training(
    cells: list[str], hiddens: list[int], batches: list[int], layers: int, reps: int, peak: float
) -> None:
    print(f"## Training, {layers} layer(s): a bare PyTorch loop vs `rnnlab train` (chars/s)\n")
    print(
        "| cell | hidden | batch | input | bare nn loop | rnnlab | rnnlab / bare | "
        "rnnlab --impl fast | fast / bare | GFLOP/s (best) | % of peak |"
    )
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for cell in cells:
        for H in hiddens:
            for B in batches:
                for embed in (0, 32):
                    row = train_row(cell, H, B, embed, layers, reps)
                    inp = "one-hot" if embed == 0 else f"embed {embed}"
                    best = max(row.values())
                    gflops = best * flops_per_char(cell, H, layers, embed or V) / 1e9
                    fast = (
                        f"{row['fast']:,.0f} | {row['fast'] / row['bare']:.2f}"
                        if "fast" in row
                        else "— | —"
                    )
                    print(
                        f"| {cell} | {H} | {B} | {inp} | {row['bare']:,.0f} | "
                        f"{row['rnnlab']:,.0f} | {row['rnnlab'] / row['bare']:.2f} | {fast} | "
                        f"{gflops:.0f} | {100 * gflops / peak:.0f}% |",
                        flush=True,
                    )
    print()


def train_row(cell: str, H: int, B: int, embed: int, layers: int, reps: int) -> dict[str, float]:
    def model(impl: str) -> RNNLM:
        torch.manual_seed(0)
        config = ModelConfig(cell=cell, hidden=H, layers=layers, dropout=0.0, embed=embed)
        config.impl = impl
        return RNNLM(V, config)

    bare_model = model("torch")
    ids = corpus_for(SECONDS_PER_MEASURE, calibrate(model("torch"), B), B)
    bare_opt = torch.optim.Adam(bare_model.parameters(), lr=1e-3)
    contenders = {
        "bare": lambda: bare_epoch(bare_model, bare_opt, ids, B),
        "rnnlab": (lambda tr: lambda: trainer_epoch(tr))(make_trainer(model("torch"), ids, B)),
    }
    if cell != "lstm":  # --impl fast runs nn.LSTM itself
        fast = make_trainer(model("fast"), ids, B)
        contenders["fast"] = lambda: trainer_epoch(fast)
    return paired(contenders, reps)


def bench_impls(cells: list[str], reps: int) -> None:
    print("## The default model (2 x 256, dropout 0.3): `--impl` torch, fast, scratch (chars/s)\n")
    print("| cell | --impl torch | --impl fast | fast / torch | --impl scratch | scratch / torch |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for cell in cells:
        ids = None
        contenders = {}
        for impl in ("torch", "fast", "scratch"):
            torch.manual_seed(0)
            model = RNNLM(V, ModelConfig(cell=cell, impl=impl))
            if ids is None:
                ids = corpus_for(SECONDS_PER_MEASURE, calibrate(model, 32), 32)
            contenders[impl] = (lambda tr: lambda: trainer_epoch(tr))(make_trainer(model, ids, 32))
        r = paired(contenders, reps)
        fast = "— (nn.LSTM)" if cell == "lstm" else f"{r['fast']:,.0f}"
        print(
            f"| {cell} | {r['torch']:,.0f} | {fast} | {r['fast'] / r['torch']:.2f} | "
            f"{r['scratch']:,.0f} | {r['scratch'] / r['torch']:.2f} |",
            flush=True,
        )
    print()


# -- regularisation ------------------------------------------------------------------------------

REGULARISATION = {  # column -> (ModelConfig options, variable windows)
    "off": ({}, False),
    "weight-drop 0.5": ({"weight_drop": 0.5}, False),
    "locked 0.2 x 3": ({"dropout_input": 0.2, "dropout_hidden": 0.2, "dropout_output": 0.2}, False),
    "all + tied + variable": (
        {"weight_drop": 0.5, "dropout_input": 0.2, "dropout_hidden": 0.2, "dropout_output": 0.2,
         "tie_weights": True},
        True,
    ),
}  # fmt: skip


def bench_regularisation(cells: list[str], reps: int, hidden: int = 256) -> None:
    """Training speed with DropConnect, locked dropout, tied weights and variable windows on:
    the price of each, beside the defaults (off: plain dropout 0.3), 2 layers, batch 32."""
    print(f"## Regularisation on vs off: 2 x {hidden} model, batch 32 (chars/s)\n")
    print("| cell | impl | " + " | ".join(REGULARISATION) + " | all / off |")
    print("| --- | --- |" + " ---: |" * (len(REGULARISATION) + 1))
    for cell in cells:
        for impl in ("torch", "fast") if cell != "lstm" else ("torch",):
            ids = None
            contenders = {}
            for name, (options, variable) in REGULARISATION.items():
                torch.manual_seed(0)
                model = RNNLM(V, ModelConfig(cell=cell, impl=impl, hidden=hidden, **options))
                if ids is None:
                    ids = corpus_for(SECONDS_PER_MEASURE, calibrate(model, 32), 32)
                opt = torch.optim.Adam(model.parameters(), lr=1e-3)
                contenders[name] = partial(bare_epoch, model, opt, ids, 32, variable)
            r = paired(contenders, reps)
            cols = " | ".join(f"{r[name]:,.0f}" for name in REGULARISATION)
            last = list(REGULARISATION)[-1]
            print(f"| {cell} | {impl} | {cols} | {r[last] / r['off']:.2f} |", flush=True)
    print()


# -- generation and evaluation ---------------------------------------------------------------


@torch.no_grad()
def bench_generation(K: int, K_rerun_batched: int, reps: int) -> None:
    print("## Generation after a 10-character prefix, 2 x 256 model (chars/s)\n")
    print("| cell | batch | K | incremental (carried state) | re-run prefix each step | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for cell in ("gru", "lstm"):
        for B in (1, 64):
            torch.manual_seed(0)
            model = RNNLM(V, ModelConfig(cell=cell, dropout=0.0)).eval()
            prefix = torch.randint(V, (B, 10))
            k = K if B == 1 else K_rerun_batched  # re-running costs K^2: shorter when batched

            def incremental(k: int = k) -> int:
                logits, state = model(prefix)
                for _ in range(k):
                    Y = logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
                    logits, state = model(Y, state)
                return B * k

            def rerun(k: int = k) -> int:
                seq = prefix
                for _ in range(k):
                    logits, _ = model(seq)
                    seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
                return B * k

            r = paired({"inc": incremental, "rerun": rerun}, reps)
            print(
                f"| {cell} | {B} | {k} | {r['inc']:,.0f} | {r['rerun']:,.0f} | "
                f"{r['inc'] / r['rerun']:.0f}x |",
                flush=True,
            )
    print()


@torch.no_grad()
def bench_step(K: int, reps: int) -> None:
    """rnnlab's decoding loop vs the barest greedy loop over the same nn.GRU/nn.LSTM + Linear."""
    print("## One generation step, batch 1, 2 x 256 model: rnnlab vs bare PyTorch (µs/char)\n")
    print("| cell | bare nn step (+ Linear, argmax) | rnnlab decode (greedy) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for cell in ("gru", "lstm"):
        torch.manual_seed(0)
        model = RNNLM(V, ModelConfig(cell=cell, dropout=0.0)).eval()
        start = torch.tensor([3])

        def bare() -> int:
            state = model.begin_state(1)
            x = start
            eye = torch.eye(V)
            for _ in range(K):
                out, state = model.rnn(eye[x].unsqueeze(1), state)  # (1, 1, H)
                x = model.output(out[:, -1]).argmax(-1)  # (1,)
            return K

        def ours() -> int:
            decode(lm_advance(model), model.begin_state(1), start, K, None, DecodeConfig())
            return K

        r = paired({"bare": bare, "ours": ours}, reps)
        print(
            f"| {cell} | {1e6 / r['bare']:.0f} | {1e6 / r['ours']:.0f} | "
            f"{r['bare'] / r['ours']:.2f} |",
            flush=True,
        )
    print()


@torch.no_grad()
def bench_evaluation(reps: int) -> None:
    n = 100_000
    print(f"## Held-out evaluation of {n:,} characters, 2 x 256 model (chars/s)\n")
    print("| cell | one stream, exact | 16 rows, warm-up 256 (rnnlab) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    ids = torch.randint(V, (n + 1,), generator=torch.Generator().manual_seed(1))
    for cell in ("gru", "lstm"):
        torch.manual_seed(0)
        model = RNNLM(V, ModelConfig(cell=cell, dropout=0.0))

        def one() -> int:
            evaluate(model, ids)
            return n

        def rows() -> int:
            evaluate(model, ids, rows=16)
            return n

        r = paired({"one": one, "rows": rows}, reps)
        print(
            f"| {cell} | {r['one']:,.0f} | {r['rows']:,.0f} | {r['rows'] / r['one']:.1f}x |",
            flush=True,
        )
    print()


# -- corpus loading ------------------------------------------------------------------------------


def bench_loading(mb: float) -> None:
    """Time and peak memory of `prepare_data` on an `mb` MB file, in a fresh process."""
    sys.path.insert(0, str(Path(__file__).parent))
    from load_memory import load, write_corpus

    print(f"## Loading a {mb:g} MB UTF-8 corpus (vocabulary + ids), fresh process\n")
    print("| file | seconds | after imports | peak RSS | peak - imports | / file size | ids |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.txt"
        write_corpus(path, int(mb * 1e6))
        size = path.stat().st_size
        r = load(path, "raw", 64 * 2**20)
    own = (r["peak_kb"] - r["base_kb"]) * 1024
    print(
        f"| {size / 1e6:,.0f} MB | {r['seconds']:.1f} | {r['base_kb'] / 1024:,.0f} MiB | "
        f"{r['peak_kb'] / 1024:,.0f} MiB | {own / 2**20:,.0f} MiB | {own / size:.2f}x "
        f"({r['peak_kb'] * 1024 / size:.2f}x with imports) | {r['chars']:,} x "
        f"{r['dtype'].removeprefix('torch.')}, \\|V\\| = {r['vocab']} |",
        flush=True,
    )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer configurations and reps")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--regularisation", action="store_true", help="only the regularisation on/off table"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.regularisation:
        bench_regularisation(["gru", "lstm"], reps=3 if args.quick else 5)
        cmd = "python bench/throughput.py --regularisation" + (" --quick" if args.quick else "")
        print(f"command: {cmd}  ({(time.perf_counter() - start) / 60:.1f} min)")
        return
    peak = matmul_peak()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}; fp32 matmul peak (2048^2): "
        f"{peak:.0f} GFLOP/s\n"
    )
    if args.quick:
        bench_training(["gru"], [256], [32], layers=1, reps=3, peak=peak)
        bench_impls(["gru"], reps=3)
        bench_regularisation(["gru"], reps=3)
        bench_generation(K=200, K_rerun_batched=50, reps=2)
        bench_step(K=300, reps=3)
        bench_evaluation(reps=2)
        bench_loading(20)
    else:
        bench_training(["rnn", "gru", "lstm"], [256, 512], [32, 128], layers=1, reps=5, peak=peak)
        bench_impls(["rnn", "gru", "lstm"], reps=5)
        bench_regularisation(["gru", "lstm"], reps=5)
        bench_generation(K=500, K_rerun_batched=100, reps=3)
        bench_step(K=500, reps=5)
        bench_evaluation(reps=3)
        bench_loading(100)
    cmd = "python bench/throughput.py" + (" --quick" if args.quick else "")
    print(f"command: {cmd}  ({(time.perf_counter() - start) / 60:.1f} min)")


if __name__ == "__main__":
    main()
