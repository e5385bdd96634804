"""`rnnlab train` and `rnnlab check`: flags into configs, then `rnnlab.training`, nothing more."""

from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path
from typing import Any

from rnnlab.cli.flags import add_config_args, config_from, given, json_line, stderr
from rnnlab.corpus import DataConfig
from rnnlab.devices import describe
from rnnlab.model import ModelConfig
from rnnlab.presets import PRESETS, SMALL_TEXT_MAX_CHARS, get_preset
from rnnlab.training.config import TrainConfig
from rnnlab.training.lm import forward_check_run, run_summary, start_lm_run
from rnnlab.training.runtime import RuntimeConfig
from rnnlab.training.signals import StopRequested
from rnnlab.training.start import finish_run


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "train", parents=[common], help="train a language model and save it to a run directory"
    )
    add_config_args(p, DataConfig)
    add_config_args(p, ModelConfig)
    add_config_args(p, TrainConfig)
    add_config_args(p, RuntimeConfig, only=("precision", "tf32", "deterministic"))
    p.add_argument("--out", type=Path, help="run directory (default: runs/CORPUS-CELL-TIME)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty run directory")
    p.add_argument("--resume", action="store_true", help="continue training the run in --out")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument(
        "--preset",
        choices=PRESETS,
        metavar="NAME",
        help=f"start from a named configuration ({', '.join(PRESETS)}); flags given explicitly "
        "override its values. Without it, --max-time alone (no --epochs or --max-steps) "
        f"trains small-text on a text under {SMALL_TEXT_MAX_CHARS:,} training characters",
    )

    p = sub.add_parser(
        "check",
        parents=[common],
        help="one untrained forward pass: shapes, zero state, loss ~ ln|V|",
    )
    add_config_args(p, DataConfig)
    add_config_args(p, ModelConfig)
    add_config_args(p, TrainConfig, only=("batch_size", "num_steps", "sampling", "seed"))


def cmd_train(args: argparse.Namespace) -> int:
    progress = not args.quiet and not args.json and sys.stderr.isatty()
    log = (lambda s: None) if args.quiet or args.json else print
    preset = get_preset(args.preset) if args.preset else None
    if preset and not args.resume and not args.quiet:
        stderr(f"preset {preset.name}: {preset.description}. {preset.note}")
    trainer = start_lm_run(
        preset, given(DataConfig, args), given(ModelConfig, args), given(TrainConfig, args),
        config_from(RuntimeConfig, args), args.out, force=args.force, resume=args.resume,
        threads=args.threads, progress=progress, log=log,
        warn=stderr,  # warnings are shown even with --quiet or --json
    )  # fmt: skip
    try:
        result = finish_run(trainer)
    except StopRequested as stop:
        for s in (signal.SIGINT, signal.SIGTERM):  # the checkpoint is safe: let nothing cut
            signal.signal(s, signal.SIG_IGN)  # the message below short
        run_dir = trainer.run_dir
        if trainer.runtime.world.is_main:  # rank 0 speaks for every process
            stderr(
                f"stopped by {stop} at step {trainer.step} (epoch {trainer.epoch + 1}); "
                f"checkpoint saved in {run_dir}: continue with `rnnlab train --out {run_dir} "
                "--resume`"
            )
        return stop.exit_code
    summary = run_summary(result)
    if not trainer.runtime.world.is_main:
        return 0
    if args.json:
        print(json_line(summary))
    else:
        last = result.last
        best = (
            f"best {summary['best_valid_ppl']:.3f} at epoch {trainer.best_epoch}"
            if trainer.best_epoch
            else f"stopped in epoch {trainer.epoch + 1} at step {trainer.step}"
        )
        print(
            f"done: held-out perplexity {last.valid.ppl:.3f} ({last.valid.bpc:.3f} bits/char), "
            f"{best}, {result.seconds:.0f} s; saved to {trainer.run_dir}"
        )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    data_cfg = config_from(DataConfig, args)
    model_cfg = config_from(ModelConfig, args)
    train_cfg = config_from(TrainConfig, args)
    check = forward_check_run(data_cfg, model_cfg, train_cfg, args.device, stderr)
    result, X, model = check.figures, check.X, check.model
    device = X.device
    B, T, V = X.shape[0], X.shape[1], len(check.data.vocab)
    print(
        f"corpus {data_cfg.corpus}: vocabulary |V| = {V}, {len(check.data.train_ids):,} train chars"
        + ("" if device.type == "cpu" else f" (on {describe(device)})")
    )
    print(
        f"model  {model.config.cell} x{model.config.layers}, hidden {model.config.hidden}, "
        f"input {'one-hot' if model.embed_size == 0 else f'embedding {model.embed_size}'}"
    )
    print(f"input X          {tuple(X.shape)}  (B, T) = ({B}, {T})")
    print(f"inputs to RNN    {result['input_shape']}  (B, T, E)")
    print(f"logits           {result['logits_shape']}  (B, T, V)")
    print(f"state            {result['state_shape']}  (L, B, H)")
    print(f"initial state    {'all zeros' if result['zero_state'] else 'NOT ZERO'}")
    print(
        f"initial loss     {result['loss']:.4f}  vs ln|V| = {math.log(V):.4f} "
        f"(difference {result['loss'] - math.log(V):+.4f}, allowed 0.2)"
    )
    ok = result["ok"]
    print("check passed" if ok else "check FAILED")
    return 0 if ok else 1


COMMANDS = {"train": cmd_train, "check": cmd_check}
