"""`rnnlab seq2seq train|translate|evaluate`: flags into configs, then the library, nothing more.

`rnnlab.cli` hooks this in with `add_parsers(sub, common)` and dispatches the `seq2seq` command to
`run`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from rnnlab.cli.flags import add_config_args, config_from, given, json_line, stderr
from rnnlab.decoding import DecodeConfig
from rnnlab.errors import UsageError
from rnnlab.seq2seq.evaluate import beam_vs_greedy, evaluate_pairs, translate
from rnnlab.seq2seq.model import Seq2SeqConfig
from rnnlab.seq2seq.pairs import PairData, PairsConfig, load_pairs, prepare_pairs
from rnnlab.seq2seq.runs import load_seq2seq, start_seq2seq_run, use_device
from rnnlab.seq2seq.train import EpochRecord, Seq2SeqTrainConfig
from rnnlab.training.loop import Trainer
from rnnlab.training.signals import StopRequested
from rnnlab.training.start import finish_run

SHOW_DEFAULT = 5


def _add_decode_args(p: argparse.ArgumentParser) -> None:
    add_config_args(p, DecodeConfig)
    p.add_argument(
        "--max-len",
        type=int,
        default=0,
        help="most characters to write per word (default 0: twice the longest source + 10)",
    )


def add_parsers(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add `seq2seq` with its train/translate/evaluate subcommands to a subparsers action."""
    parser = subparsers.add_parser(
        "seq2seq", help="character encoder-decoder: train on word pairs, translate, evaluate"
    )
    sub = parser.add_subparsers(dest="seq2seq_command", required=True, parser_class=type(parser))

    p = sub.add_parser(
        "train", parents=[common], help="train an encoder-decoder on pairs and save a run directory"
    )
    add_config_args(p, PairsConfig)
    add_config_args(p, Seq2SeqConfig)
    add_config_args(p, Seq2SeqTrainConfig)
    p.add_argument("--out", type=Path, help="run directory (default: runs/seq2seq-PAIRS-CELL-TIME)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty run directory")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its newest checkpoint"
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")

    p = sub.add_parser(
        "translate", parents=[common], help="translate words with a trained encoder-decoder"
    )
    p.add_argument("run", type=Path, help="run directory written by `rnnlab seq2seq train`")
    p.add_argument("words", nargs="+", help="source words (quote those with spaces)")
    _add_decode_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")

    p = sub.add_parser(
        "evaluate",
        parents=[common],
        help="exact match and character error rate on held-out (or given) pairs",
    )
    p.add_argument("run", type=Path, help="run directory written by `rnnlab seq2seq train`")
    add_config_args(p, PairsConfig, only=("pairs", "num_pairs", "data_seed"))
    _add_decode_args(p)
    p.add_argument(
        "--show", type=int, default=SHOW_DEFAULT, help="wrong outputs to list (default: 5)"
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


# -- commands -------------------------------------------------------------------------------------


def train_summary(
    last: EpochRecord, trainer: Trainer, data: PairData, seconds: float
) -> dict[str, Any]:
    """The `--json` line of `train`: the last epoch's figures (NaN/inf print as null)."""
    return {
        "train_loss": last.train_loss,
        "eval_split": "heldout" if data.heldout else "train",
        "eval_pairs": last.eval.pairs,
        "exact": last.eval.exact,
        "cer": last.eval.cer,
        "eval_loss": last.eval.loss,
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "train_pairs": len(data.train),
        "heldout_pairs": len(data.heldout),
        "seconds": round(seconds, 3),
        "run_dir": str(trainer.run_dir),
    }


def cmd_train(args: argparse.Namespace) -> int:
    progress = not args.quiet and not args.json and sys.stderr.isatty()
    log = (lambda s: None) if args.quiet or args.json else print
    # warnings (a damaged checkpoint skipped, other threads) are shown even with --quiet/--json
    trainer = start_seq2seq_run(
        given(PairsConfig, args), given(Seq2SeqConfig, args), given(Seq2SeqTrainConfig, args),
        args.out, force=args.force, resume=args.resume, device=args.device, progress=progress,
        log=log, warn=stderr,
    )  # fmt: skip
    data = trainer.family.data
    run_dir = trainer.run_dir
    try:
        result = finish_run(trainer)
    except StopRequested as stop:
        for s in (signal.SIGINT, signal.SIGTERM):  # the checkpoint is safe: let nothing cut
            signal.signal(s, signal.SIG_IGN)  # the message below short
        stderr(
            f"stopped by {stop} at step {trainer.step} (epoch {trainer.epoch + 1}); checkpoint "
            f"saved in {run_dir}: continue with `rnnlab seq2seq train --out {run_dir} --resume`"
        )
        return stop.exit_code
    last, seconds = result.last, result.seconds
    if args.json:
        print(json_line(train_summary(last, trainer, data, seconds)))
        return 0
    split = "held-out" if data.heldout else "train (no held-out set: this measures memorisation)"
    print(
        f"done: {split} exact match {last.eval.exact:.1%}, CER {last.eval.cer:.4f} on "
        f"{last.eval.pairs:,} pairs after {trainer.epoch} epochs, {seconds:.0f} s; "
        f"saved to {run_dir}"
    )
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    decode_cfg = config_from(DecodeConfig, args)  # validate flags before touching the checkpoint
    if args.max_len < 0:
        raise UsageError(f"--max-len must be 0 (auto) or more, got {args.max_len}")
    run = load_seq2seq(args.run, use_device(args.device))
    out = translate(run.model, run.vocab, args.words, decode_cfg, args.max_len, run.max_target_len)
    if args.json:
        rows = [
            {"source": t.source, "output": t.output, "log_prob": t.log_prob, "ended": t.ended}
            for t in out
        ]
        summary = {"strategy": decode_cfg.strategy, "translations": rows}
        print(json_line(summary))
        return 0
    for t in out:
        cut = "" if t.ended else "  (cut at --max-len)"
        print(f"{t.source} -> {t.output}  (log p {t.log_prob:.4f}){cut}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    decode_cfg = config_from(DecodeConfig, args)
    if args.max_len < 0:
        raise UsageError(f"--max-len must be 0 (auto) or more, got {args.max_len}")
    if args.show < 0:
        raise UsageError(f"--show must be 0 or more, got {args.show}")
    given = [f for f in ("pairs", "num_pairs", "data_seed") if hasattr(args, f)]
    run = load_seq2seq(args.run, use_device(args.device))
    if "pairs" in given:
        cfg = PairsConfig(
            pairs=args.pairs,
            num_pairs=getattr(args, "num_pairs", run.pairs.num_pairs),
            data_seed=getattr(args, "data_seed", run.pairs.data_seed),
        )
        pairs = load_pairs(cfg)
        split, what = "given", f"{args.pairs} (all {len(pairs):,} pairs; may overlap training)"
    elif given:
        raise UsageError("--num-pairs and --data-seed choose generated pairs: give --pairs too")
    elif run.heldout:
        pairs, split = run.heldout, "heldout"
        what = f"{run.pairs.pairs} held-out split ({len(pairs):,} pairs never trained on)"
    else:
        pairs, split = prepare_pairs(run.pairs).train, "train"
        what = (
            f"{run.pairs.pairs} training pairs ({len(pairs):,}; memorisation, not generalisation)"
        )
    result = evaluate_pairs(
        run.model, run.vocab, pairs, decode_cfg, args.max_len, run.max_target_len
    )
    summary: dict[str, Any] = {"split": split, "strategy": decode_cfg.strategy, **result.to_dict()}
    if decode_cfg.strategy == "beam":
        summary["beam_vs_greedy"] = beam_vs_greedy(
            run.model,
            run.vocab,
            pairs,
            decode_cfg.beam,
            decode_cfg.length_norm,
            run.max_target_len,
        )
    wrong = [
        {"source": s, "target": t, "output": o}
        for (s, t), o in zip(pairs, result.texts, strict=True)
        if o != t
    ]
    summary["wrong_examples"] = wrong[: args.show]
    if args.json:
        print(json_line(summary))
        return 0
    print(
        f"{what}, {decode_cfg.strategy} decoding: exact match {result.exact:.2%}, "
        f"CER {result.cer:.4f}, loss {result.loss:.4f} nats/symbol, "
        f"mean output log-likelihood {result.mean_log_prob:.4f}"
    )
    if "beam_vs_greedy" in summary:
        c = summary["beam_vs_greedy"]
        print(
            f"beam {c['beam']} vs greedy, mean log-likelihood of the output: "
            f"{c['beam_mean_log_prob']:.4f} vs {c['greedy_mean_log_prob']:.4f} "
            f"(same output on {c['same_output']} pairs; where they differ, beam is higher on "
            f"{c['beam_higher']} and lower on {c['beam_lower']})"
        )
    for w in wrong[: args.show]:
        print(f"  {w['source']!r}: wrote {w['output']!r}, expected {w['target']!r}")
    return 0


SUBCOMMANDS = {"train": cmd_train, "translate": cmd_translate, "evaluate": cmd_evaluate}


def run(args: argparse.Namespace) -> int:
    """Run the `seq2seq` subcommand named in `args`."""
    return SUBCOMMANDS[args.seq2seq_command](args)


COMMANDS = {"seq2seq": run}
