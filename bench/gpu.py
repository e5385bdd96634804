"""rnnlab on an accelerator: training speed against a bare PyTorch loop, precision, CPU agreement.

    python bench/gpu.py                      # on a CUDA machine: every table (a few minutes)
    python bench/gpu.py --device cpu --dry   # the same code on tiny sizes: checks the script

Tables:
1. chars/s of rnnlab's training step (`rnnlab.training.train_step` on the device-resident ids,
   batches cut on the device) against a bare loop (nn.RNN/GRU/LSTM + Linear, the same batches
   pre-cut), for RNN/GRU/LSTM x hidden 256/1024 x batch 32/256 x fp32/tf32/bf16/fp16, with their
   ratio. The two run interleaved in one process (the machines are noisy).
2. What autocast really ran: the dtype of the recurrent output under each precision (public
   reports say cuDNN's RNN may run fp16 even under a bf16 autocast: measured, not assumed).
3. The device against the CPU: the same seed, batches and fp32 (TF32 off), 100 steps: the loss
   difference at step 100 and the largest weight difference.
4. DDP on the GPUs present: `rnnlab torchrun --nproc-per-node N` chars/s for N = 1 and all GPUs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.batches import make_batches
from rnnlab.devices import describe, resolve_device
from rnnlab.model import RNNLM, ModelConfig
from rnnlab.training import train_step
from rnnlab.training.config import TrainConfig, make_optimizer
from rnnlab.training.precision import (
    PRECISIONS,
    Precision,
    probe,
    resolve_precision,
    runnable,
    set_tf32,
    unsupported,
)

V, T = 28, 35  # the Time Machine's vocabulary; num_steps
CELLS = ("rnn", "gru", "lstm")


def synthetic_ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(V, (n,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Bare(nn.Module):
    """The bare loop's model: one-hot -> nn.RNN/GRU/LSTM -> Linear, nothing else."""

    def __init__(self, cell: str, hidden: int) -> None:
        super().__init__()
        self.rnn = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell](
            V, hidden, 2, batch_first=True
        )
        self.out = nn.Linear(hidden, V)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(F.one_hot(X, V).float())  # (B, T, H)
        return self.out(y)  # (B, T, V)


def rnnlab_runner(cell, hidden, batch, precision, device, steps) -> Callable[[], int]:
    torch.manual_seed(0)
    model = RNNLM(V, ModelConfig(cell=cell, hidden=hidden, layers=2, dropout=0.0)).to(device)
    opt = make_optimizer(model, TrainConfig())
    ids = synthetic_ids(batch * T * (steps + 2)).to(device)
    gen = torch.Generator().manual_seed(0)
    scaler = torch.amp.GradScaler(device.type) if precision.name == "fp16" else None
    prec = Precision(precision.name, device.type, scaler)

    def go() -> int:
        state = None
        batches = make_batches(ids, batch, T, "sequential", gen)
        for _, (X, Y) in zip(range(steps), batches, strict=False):
            state = train_step(model, opt, X, Y, state, 1.0, prec).state
        sync(device)
        return steps * batch * T

    return go


def bare_runner(cell, hidden, batch, precision, device, steps) -> Callable[[], int]:
    torch.manual_seed(0)
    model = Bare(cell, hidden).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=0.003)
    ids = synthetic_ids(batch * T * (steps + 2)).to(device).long()
    X_all = ids[: batch * T * steps].view(steps, batch, T)
    Y_all = ids[1 : batch * T * steps + 1].view(steps, batch, T)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision.name)
    scaler = torch.amp.GradScaler(device.type) if precision.name == "fp16" else None

    def go() -> int:
        for i in range(steps):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(X_all[i]).reshape(-1, V), Y_all[i].reshape(-1))
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(opt)
                scaler.update()
        sync(device)
        return steps * batch * T

    return go


def paired(contenders: dict[str, Callable[[], int]], reps: int) -> dict[str, float]:
    """Median chars/s of each contender, measured in turn `reps` times after a warm-up."""
    for fn in contenders.values():
        fn()
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(reps):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            work = fn()
            rates[name].append(work / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in rates.items()}


def precisions(device: torch.device, cell: str) -> list[str]:
    """fp32 (and TF32 on CUDA), then each mixed precision this device trains `cell` in: asked
    of the device by the probe `rnnlab train` uses, never assumed (a CPU without native bf16
    instructions has no bf16 LSTM)."""
    names = runnable(device, cell)
    if device.type == "cuda":
        names.insert(1, "tf32")
    return names


def not_run(device: torch.device) -> list[str]:
    """Why a mixed precision the device type supports was left out for a cell (said under the
    tables, so a missing row is explained)."""
    return [
        f"{name} not run for {cell} on {describe(device)}: {probe(name, device, cell)}"
        for cell in CELLS
        for name in PRECISIONS[1:]
        if unsupported(name, device) is None and probe(name, device, cell) is not None
    ]


def speed_table(device: torch.device, dry: bool) -> None:
    hiddens, batches = ((32,), (4,)) if dry else ((256, 1024), (32, 256))
    steps, reps = (3, 1) if dry else (30, 3)
    print("## Training chars/s: rnnlab's train_step vs a bare loop (2 layers, T = 35)\n")
    print("| cell | hidden | batch | precision | rnnlab | bare | rnnlab / bare |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for cell in CELLS:
        for hidden in hiddens:
            for batch in batches:
                for name in precisions(device, cell):
                    set_tf32(name == "tf32")
                    p = resolve_precision("fp32" if name == "tf32" else name, device, cell)
                    rates = paired(
                        {
                            "rnnlab": rnnlab_runner(cell, hidden, batch, p, device, steps),
                            "bare": bare_runner(cell, hidden, batch, p, device, steps),
                        },
                        reps,
                    )
                    print(
                        f"| {cell} | {hidden} | {batch} | {name} | {rates['rnnlab']:,.0f} | "
                        f"{rates['bare']:,.0f} | {rates['rnnlab'] / rates['bare']:.2f} |"
                    )
    set_tf32(False)
    notes = not_run(device)
    print("\n" + "\n".join(notes) if notes else "")


def autocast_table(device: torch.device) -> None:
    print("## What autocast ran: dtype of each output under each precision\n")
    print("| cell | precision | RNN output | logits |")
    print("| --- | --- | --- | --- |")
    for cell in CELLS:
        model = RNNLM(V, ModelConfig(cell=cell, hidden=64, layers=1, dropout=0.0)).to(device)
        X = synthetic_ids(4 * T).to(device).long().view(4, T)
        for name in precisions(device, cell):
            if name == "tf32":
                continue
            p = resolve_precision(name, device, cell)
            with torch.no_grad(), p.autocast():
                y, _ = model.rnn(model.inputs(X), model.begin_state(4))
                logits, _ = model(X, model.begin_state(4))
            print(f"| {cell} | {name} | {y.dtype} | {logits.dtype} |")
    print()


def agreement_table(device: torch.device, dry: bool) -> None:
    steps = 5 if dry else 100
    print(f"## {describe(device)} against the CPU: fp32, TF32 off, {steps} steps, same batches\n")
    print("| cell | loss on cpu | loss on device | abs. difference | max weight difference |")
    print("| --- | ---: | ---: | ---: | ---: |")
    set_tf32(False)
    cpu = torch.device("cpu")
    for cell in CELLS:
        out = {}
        for where in (cpu, device):
            torch.manual_seed(0)
            model = RNNLM(V, ModelConfig(cell=cell, hidden=128, layers=2, dropout=0.0)).to(where)
            opt = make_optimizer(model, TrainConfig())
            ids = synthetic_ids(32 * T * (steps + 2)).to(where)
            gen = torch.Generator().manual_seed(0)
            state, loss = None, 0.0
            batches = make_batches(ids, 32, T, "sequential", gen)
            for _, (X, Y) in zip(range(steps), batches, strict=False):
                step = train_step(model, opt, X, Y, state, 1.0)
                state, loss = step.state, step.loss
            out[where.type] = (loss, {k: v.detach().cpu() for k, v in model.state_dict().items()})
        (a, wa), (b, wb) = out["cpu"], out[device.type]
        dw = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
        print(f"| {cell} | {a:.6f} | {b:.6f} | {abs(a - b):.2e} | {dw:.2e} |")
    print()


def ddp_table(device: torch.device, dry: bool) -> None:
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    print("## DDP: rnnlab torchrun on the GPUs present (GRU 2 x 1024, global batch 256)\n")
    if gpus < 2 and not dry:
        print(f"{gpus} GPU(s) here: DDP across GPUs not measured.\n")
        return
    counts = [1, gpus] if gpus >= 2 else [1, 2]  # dry: two CPU processes, the plumbing only
    flags = ["--hidden", "64", "--batch-size", "8", "--max-steps", "5"] if dry else [
        "--hidden", "1024", "--batch-size", "256", "--max-steps", "200"
    ]  # fmt: skip
    print("| processes | chars/s |")
    print("| ---: | ---: |")
    for n in counts:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            cmd = [sys.executable, "-m", "rnnlab", "torchrun", "--standalone"]
            cmd += ["--nproc-per-node", str(n), "-m", "rnnlab", "train", "--corpus", "timemachine"]
            cmd += [*flags, "--epochs", "1", "--out", str(out), "--quiet", "--json"]
            cmd += ["--device", device.type, "--dropout", "0"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                print(f"| {n} | failed: {proc.stderr.strip().splitlines()[-1:]} |")
                continue
            summary = json.loads(proc.stdout.strip().splitlines()[-1])
            batch = int(flags[flags.index("--batch-size") + 1])
            # training and the final held-out evaluation, process start-up excluded
            print(f"| {n} | {summary['steps'] * batch * T / summary['seconds']:,.0f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dry", action="store_true", help="tiny sizes: check the script")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device: {describe(device)}; torch {torch.__version__}\n")
    speed_table(device, args.dry)
    autocast_table(device)
    agreement_table(device, args.dry)
    ddp_table(device, args.dry)


if __name__ == "__main__":
    main()
