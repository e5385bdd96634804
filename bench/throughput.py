"""Throughput of rnnlab's training, generation and evaluation, measured side by side.

    python bench/throughput.py            # full tables (a few minutes)
    python bench/throughput.py --quick    # fewer configurations and repetitions

Every comparison runs its contenders interleaved in one process and reports medians over
repetitions and their ratio, because these machines are noisy: never compare figures taken in
two different runs. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from rnnlab.batches import sequential_batches
from rnnlab.metrics import evaluate
from rnnlab.model import RNNLM, ModelConfig, detach_state
from rnnlab.train import TrainConfig, Trainer

V = 28  # the Time Machine's vocabulary
CORPUS_CHARS = 120_000


def median_time(fn: Callable[[], object], reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def bare_epoch(model: RNNLM, opt: torch.optim.Optimizer, ids: torch.Tensor, B: int, T: int) -> int:
    """The plainest truncated-BPTT loop with the same work as rnnlab's: the reference."""
    state = None
    chars = 0
    for X, Y in sequential_batches(ids, B, T, torch.Generator().manual_seed(0)):
        state = model.begin_state(B) if state is None else detach_state(state)
        logits, state = model(X, state)
        loss = F.cross_entropy(logits.reshape(-1, V), Y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        chars += Y.numel()
    return chars


def bench_training(cells: list[str], hiddens: list[int], batches: list[int], reps: int) -> None:
    print("## Training: rnnlab Trainer epoch vs a bare PyTorch loop (chars/s, median)\n")
    print("| cell | hidden | batch | input | bare loop | rnnlab | ratio |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    ids = torch.randint(V, (CORPUS_CHARS,), generator=torch.Generator().manual_seed(0))
    ids = ids.to(torch.uint8)
    for cell in cells:
        for H in hiddens:
            for B in batches:
                for embed in (0, 32):
                    cfg = ModelConfig(cell=cell, hidden=H, dropout=0.0, embed=embed)
                    torch.manual_seed(0)
                    bare_model = RNNLM(V, cfg)
                    bare_opt = torch.optim.Adam(bare_model.parameters(), lr=1e-3)
                    torch.manual_seed(0)
                    ours = RNNLM(V, cfg)
                    tcfg = TrainConfig(batch_size=B, num_steps=35, epochs=10**6)
                    with tempfile.TemporaryDirectory() as tmp:
                        trainer = Trainer(
                            ours,
                            tcfg,
                            ids,
                            ids[:1000],
                            Path(tmp),
                            {},
                            progress=False,
                            log=lambda s: None,
                        )
                        chars = bare_epoch(bare_model, bare_opt, ids, B, 35)  # warm-up
                        assert trainer_epoch(trainer) == chars
                        t_bare, t_ours = [], []
                        for _ in range(reps):  # interleaved: both see the same machine state
                            t_bare += median_time(
                                lambda: bare_epoch(bare_model, bare_opt, ids, B, 35), 1
                            )
                            t_ours += median_time(lambda: trainer_epoch(trainer), 1)
                    bare = chars / statistics.median(t_bare)
                    our = chars / statistics.median(t_ours)
                    inp = "one-hot" if embed == 0 else f"embed {embed}"
                    print(
                        f"| {cell} | {H} | {B} | {inp} | {bare:,.0f} | {our:,.0f} | "
                        f"{our / bare:.2f} |"
                    )
    print()


class _NoSignals:
    """Stands in for the SignalGuard: no signal ever arrives."""

    signum = None


def trainer_epoch(trainer: Trainer) -> int:
    """One full epoch of rnnlab's own loop (a fresh epoch each call); returns chars trained."""
    trainer.current = None
    return trainer.run_epoch(None, _NoSignals()).chars  # type: ignore[arg-type]


def bench_scratch(cells: list[str], reps: int) -> None:
    print("## rnnlab's from-scratch cells vs PyTorch's (training chars/s, median)\n")
    print("| cell | --impl torch | --impl scratch | scratch / torch |")
    print("| --- | ---: | ---: | ---: |")
    ids = torch.randint(V, (40_000,), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    for cell in cells:
        trainers = {}
        for impl in ("torch", "scratch"):
            torch.manual_seed(0)
            model = RNNLM(V, ModelConfig(cell=cell, impl=impl))  # the defaults: 2 x 256
            tmp = tempfile.mkdtemp()
            trainers[impl] = Trainer(
                model,
                TrainConfig(epochs=10**6),
                ids,
                ids[:1000],
                Path(tmp),
                {},
                progress=False,
                log=lambda s: None,
            )
        times: dict[str, list[float]] = {"torch": [], "scratch": []}
        for trainer in trainers.values():
            chars = trainer_epoch(trainer)  # warm-up
        for _ in range(reps):
            for impl, trainer in trainers.items():
                times[impl] += median_time(lambda: trainer_epoch(trainer), 1)
        rate = {k: chars / statistics.median(v) for k, v in times.items()}
        print(
            f"| {cell} | {rate['torch']:,.0f} | {rate['scratch']:,.0f} | "
            f"{rate['scratch'] / rate['torch']:.2f} |"
        )
    print()


@torch.no_grad()
def bench_generation(K: int, reps: int) -> None:
    print(f"## Generation of K = {K} characters after a 10-character prefix (chars/s, median)\n")
    print("| cell | batch | incremental (carried state) | re-run prefix each step | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for cell in ("gru", "lstm"):
        for B in (1, 64):
            torch.manual_seed(0)
            model = RNNLM(V, ModelConfig(cell=cell, hidden=256, dropout=0.0)).eval()
            prefix = torch.randint(V, (B, 10))

            def incremental() -> None:
                logits, state = model(prefix)
                for _ in range(K):
                    Y = logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
                    logits, state = model(Y, state)

            def rerun() -> None:
                seq = prefix
                for _ in range(K):
                    logits, _ = model(seq)
                    seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)

            t_inc, t_rerun = [], []
            for _ in range(reps):
                t_inc += median_time(incremental, 1)
                t_rerun += median_time(rerun, 1)
            inc = B * K / statistics.median(t_inc)
            rer = B * K / statistics.median(t_rerun)
            print(f"| {cell} | {B} | {inc:,.0f} | {rer:,.0f} | {inc / rer:.1f}x |")
    print()


@torch.no_grad()
def bench_evaluation(reps: int) -> None:
    print("## Held-out evaluation, 100,000 characters (chars/s, median)\n")
    print("| cell | one stream (exact) | 16 parallel rows |")
    print("| --- | ---: | ---: |")
    ids = torch.randint(V, (100_001,), generator=torch.Generator().manual_seed(1))
    for cell in ("gru", "lstm"):
        torch.manual_seed(0)
        model = RNNLM(V, ModelConfig(cell=cell, hidden=256, dropout=0.0))
        one = statistics.median(median_time(lambda: evaluate(model, ids), reps))
        rows = statistics.median(median_time(lambda: evaluate(model, ids, rows=16), reps))
        print(f"| {cell} | {100_000 / one:,.0f} | {100_000 / rows:,.0f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer configurations and reps")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    if args.quick:
        bench_scratch(["gru"], reps=2)
        bench_training(["gru"], [256], [32], reps=3)
        bench_generation(K=200, reps=3)
        bench_evaluation(reps=2)
    else:
        bench_scratch(["rnn", "gru", "lstm"], reps=3)
        bench_training(["rnn", "gru", "lstm"], [256], [32], reps=3)
        bench_generation(K=500, reps=3)
        bench_evaluation(reps=3)


if __name__ == "__main__":
    main()
