"""`rnnlab predict`, `rnnlab score` and `rnnlab evaluate`: questions put to a trained run.

Each command loads the run with `rnnlab.api.load` and calls the method a notebook would call
(`predict`, `score`, `evaluate`), then prints; the numbers come from one code path.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rnnlab.api import load, prediction_dict, scores_dict
from rnnlab.cli.flags import (
    IMPL_HELP,
    RUN_HELP,
    add_config_args,
    config_from,
    flag,
    given,
    json_line,
    stderr,
)
from rnnlab.corpus import DataConfig
from rnnlab.dynamic import DynamicConfig, DynamicReport
from rnnlab.errors import UsageError
from rnnlab.export.onnx import RUNTIMES
from rnnlab.generate import GenerateConfig
from rnnlab.model import BIDIRECTIONAL_WARNING, IMPLS


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("predict", parents=[common], help="continue a prefix with a trained model")
    p.add_argument("run", type=Path, help=RUN_HELP)
    p.add_argument("--impl", choices=IMPLS, help=IMPL_HELP)
    p.add_argument(
        "--prefix",
        required=True,
        action="append",
        help="text to start from; repeat to continue several prefixes at once (batched)",
    )
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="torch",
        help="onnx: answer through the model's ONNX export run by onnxruntime (CPU), to see "
        'that the two agree; needs pip install "rnnlab[export]"',
    )
    add_config_args(p, GenerateConfig)
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")

    p = sub.add_parser("score", parents=[common], help="per-character surprisal (bits) of a text")
    p.add_argument("run", type=Path, help=RUN_HELP)
    p.add_argument("--impl", choices=IMPLS, help=IMPL_HELP)
    p.add_argument("text", help="the text to score (at least two characters)")
    p.add_argument("--show", type=int, default=10, help="list the N most surprising characters")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")

    p = sub.add_parser(
        "evaluate", parents=[common], help="loss, perplexity and bits/char of a model on a text"
    )
    p.add_argument("run", type=Path, help=RUN_HELP)
    p.add_argument("--impl", choices=IMPLS, help=IMPL_HELP)
    add_config_args(p, DataConfig, only=("corpus", "cleaning", "encoding"))
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="also print the dynamic-evaluation figure (the model adapts to the text as it reads "
        "it, each character scored before it learns from it), beside the static one",
    )
    add_config_args(p, DynamicConfig)
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def cmd_predict(args: argparse.Namespace) -> int:
    config = config_from(GenerateConfig, args)  # validate flags before touching the checkpoint
    lm = load(args.run, impl=args.impl, device=args.device)
    if lm.run.model_config.bidirectional:
        stderr(BIDIRECTIONAL_WARNING)
    lm = lm.with_runtime(args.runtime)
    preds = lm.predict(args.prefix, config)
    if args.json:
        results = [prediction_dict(pred) for pred in preds]
        print(json_line(results[0] if len(results) == 1 else {"predictions": results}))
        return 0
    for pred in preds:
        print(f"prefix: {pred.prefix!r}")
        print("next character:")
        for c, p in pred.next:
            print(f"  {c!r:8} {p:.4f}")
        if config.num_preds:
            what = f"{config.num_preds} steps, {config.strategy}"
            print(f"continuation ({what}): {pred.continuation!r}")
            print(pred.prefix + pred.continuation)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    if args.show < 0:
        raise UsageError(f"--show must be 0 or more, got {args.show}")
    scores = load(args.run, impl=args.impl, device=args.device).score(args.text)
    summary = scores_dict(args.text, scores)
    if args.json:
        print(json_line(summary))
        return 0
    mean = summary["mean_bits"]
    print(f"{len(scores)} characters scored (the first is context only): mean {mean:.3f} bits/char")
    worst = sorted(range(len(scores)), key=lambda i: -scores[i][1])[: args.show]
    for i in sorted(worst):
        c, b = scores[i]
        context = args.text[max(0, i - 12) : i + 1]
        print(f"  {b:6.2f} bits  {c!r:6} after {context!r}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    dynamic_flags = given(DynamicConfig, args)
    if dynamic_flags and not args.dynamic:
        names = ", ".join(flag(name) for name in dynamic_flags)
        raise UsageError(f"{names} set dynamic evaluation: add --dynamic, or leave them out")
    dynamic = DynamicConfig(**dynamic_flags) if args.dynamic else False  # checked before loading
    lm = load(args.run, impl=args.impl, device=args.device)
    if hasattr(args, "corpus"):
        result = lm.evaluate(
            corpus=args.corpus,
            cleaning=getattr(args, "cleaning", None),
            encoding=getattr(args, "encoding", "utf-8"),
            dynamic=dynamic,
        )  # a large file is streamed
        what = f"{args.corpus} (whole text)"
    else:
        result = lm.evaluate(dynamic=dynamic)
        what = f"{lm.run.data.corpus} held-out split"
    report = result if isinstance(result, DynamicReport) else None
    m = report.static if report else result
    if args.json:
        static = {"loss": m.loss, "ppl": m.ppl, "bpc": m.bpc, "chars": m.chars}
        print(json_line(report.to_dict() if report else static))
        return 0
    print(
        f"{what}: loss {m.loss:.4f} nats/char, perplexity {m.ppl:.3f}, "
        f"{m.bpc:.3f} bits/char over {m.chars:,} characters"
    )
    if report:
        d, (start, end) = report.dynamic, report.tuned_on
        print(
            f"{what}, dynamic evaluation*: loss {d.loss:.4f} nats/char, perplexity "
            f"{d.ppl:.3f}, {d.bpc:.3f} bits/char over {d.chars:,} characters"
        )
        print(
            f"  * adapts to the text as it reads it, every character scored before the model "
            f"learns from it; eta {report.eta:.3g}, lambda {report.decay:.3g}, chosen on "
            f"training characters {start:,}-{end:,} (static there {report.tuning_static:.4f}, "
            f"dynamic {min(p.loss for p in report.grid):.4f}); {report.seconds:.0f} s"
        )
        for name in report.at_edge():
            stderr(
                f"note: the best {name} was at the edge of the tuning grid: a search centred "
                f"on it (--{'decay' if name == 'lambda' else 'eta'}) may do better"
            )
    return 0


COMMANDS = {"predict": cmd_predict, "score": cmd_score, "evaluate": cmd_evaluate}
