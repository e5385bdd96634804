"""The `rnnlab` command: parses flags into the configs and calls the library, nothing more.

Flags are generated from the config dataclasses' fields, so each default and help text lives in
one place. User mistakes become one-line messages and exit codes (see `rnnlab.errors`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rnnlab import corpus_cli, seq2seq_cli, sweep_cli
from rnnlab.batches import check_length, make_batches
from rnnlab.corpus import DataConfig
from rnnlab.decoding import score_text
from rnnlab.errors import RnnlabError, UsageError
from rnnlab.generate import GenerateConfig, predict
from rnnlab.metrics import PARALLEL_ROWS, evaluate, perplexity
from rnnlab.model import IMPLS, RNNLM, ModelConfig, count_parameters
from rnnlab.presets import PRESETS, get_preset
from rnnlab.runs import (
    claim_run_dir,
    configs_from_json,
    default_run_dir,
    encode_corpus,
    load_run,
    new_trainer,
    prepare_data,
)
from rnnlab.train import StopRequested, TrainConfig

_TYPES = {"int": int, "float": float, "str": str}


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (and exit 2), not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_args(parser: argparse.ArgumentParser, cls: type, only: Sequence[str] = ()) -> None:
    """One flag per dataclass field; unspecified flags stay absent so defaults come from `cls`."""
    group = parser.add_argument_group(f"{cls.__name__.removesuffix('Config').lower()} options")
    for f in dataclasses.fields(cls):
        if only and f.name not in only:
            continue
        base = str(f.type).split("|")[0].strip()
        if base == "bool":
            group.add_argument(
                _flag(f.name),
                dest=f.name,
                action="store_true",
                default=argparse.SUPPRESS,
                help=f.metadata.get("help"),
            )
            continue
        kwargs: dict[str, Any] = {"type": _TYPES[base], "default": argparse.SUPPRESS}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = "" if default is None else f" (default: {default})"
        kwargs["help"] = f"{f.metadata.get('help', '')}{shown}"
        group.add_argument(_flag(f.name), dest=f.name, **kwargs)


def config_from(cls: type, args: argparse.Namespace, base: Any = None) -> Any:
    """Build `cls` from the flags given on the command line, on top of `base` or the defaults."""
    given = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)
    }
    if base is not None:
        return dataclasses.replace(base, **given)
    return cls(**given)


def given_flags(cls: type, args: argparse.Namespace) -> list[str]:
    return [_flag(f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rnnlab",
        description="Train, check and query character-level recurrent language models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = _Parser(add_help=False)
    common.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default: torch's choice); use 1 per process when running several",
    )

    p = sub.add_parser(
        "train", parents=[common], help="train a language model and save it to a run directory"
    )
    add_config_args(p, DataConfig)
    add_config_args(p, ModelConfig)
    add_config_args(p, TrainConfig)
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
        "override its values",
    )

    p = sub.add_parser(
        "check",
        parents=[common],
        help="one untrained forward pass: shapes, zero state, loss ~ ln|V|",
    )
    add_config_args(p, DataConfig)
    add_config_args(p, ModelConfig)
    add_config_args(p, TrainConfig, only=("batch_size", "num_steps", "sampling", "seed"))

    p = sub.add_parser("predict", parents=[common], help="continue a prefix with a trained model")
    p.add_argument("run", type=Path, help=RUN_HELP)
    p.add_argument("--impl", choices=IMPLS, help=IMPL_HELP)
    p.add_argument(
        "--prefix",
        required=True,
        action="append",
        help="text to start from; repeat to continue several prefixes at once (batched)",
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
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")

    p = sub.add_parser("demo", help="worked examples: the SRN by hand, gradient flow through time")
    demos = p.add_subparsers(dest="demo", required=True, parser_class=_Parser)
    d = demos.add_parser(
        "srn", parents=[common], help="the course's SRN example: numpy, nn.RNNCell, nn.RNN"
    )
    d.add_argument("--activation", choices=("identity", "tanh"), default="identity")
    d = demos.add_parser(
        "bptt", parents=[common], help="||dL/dh_t|| against distance for trained RNN/GRU/LSTM"
    )
    d.add_argument("--cells", default="rnn,gru,lstm", help="comma-separated cells")
    d.add_argument("--seconds", type=float, default=20.0, help="training time per cell")
    d.add_argument("--hidden", type=int, default=128)
    d.add_argument("--num-steps", type=int, default=64, help="window length (T)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--plot", help="also write the curves to this PNG file")

    seq2seq_cli.add_parser(sub)
    corpus_cli.add_parser(sub)
    sweep_cli.add_parser(sub)
    return parser


IMPL_HELP = "load the weights into this recurrent implementation (default: the run's own)"
RUN_HELP = (
    "run directory written by `rnnlab train` (its best checkpoint), or one checkpoint in it: "
    "RUN/checkpoints/step-NNNNNNNN"
)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def json_line(obj: dict[str, Any]) -> str:
    """One line of strict JSON: inf/nan (a diverged model) become null, which JSON can hold."""
    clean = {
        k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in obj.items()
    }
    return json.dumps(clean, ensure_ascii=False)


# -- commands -------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    progress = not args.quiet and not args.json and sys.stderr.isatty()
    log = (lambda s: None) if args.quiet or args.json else print
    if args.resume:
        if args.out is None:
            raise UsageError("--resume needs --out DIR naming the run to continue")
        if args.preset:
            raise UsageError("--preset cannot be used with --resume: the run keeps its config")
        fixed = given_flags(DataConfig, args) + given_flags(ModelConfig, args)
        if fixed:
            raise UsageError(
                f"cannot change {', '.join(fixed)} when resuming: the run keeps its data and model"
            )
        claim_run_dir(args.out, force=False, resume=True)
        from rnnlab.checkpoint import CONFIG, read_json

        stored = read_json(args.out, CONFIG)
        data_cfg, model_cfg, stored_train = configs_from_json(stored)
        train_cfg = config_from(TrainConfig, args, base=stored_train)
    else:
        preset = get_preset(args.preset) if args.preset else None
        data_cfg = config_from(DataConfig, args, preset and DataConfig(**preset.data))
        model_cfg = config_from(ModelConfig, args, preset and ModelConfig(**preset.model))
        train_cfg = config_from(TrainConfig, args, preset and TrainConfig(**preset.train))
        if preset and not args.quiet:
            _stderr(f"preset {preset.name}: {preset.description}. {preset.note}")

    data = prepare_data(data_cfg)
    what = "training text"
    if data_cfg.train_chars is not None:
        what = f"training text cut to --train-chars {data_cfg.train_chars}"
    check_length(len(data.train_ids), train_cfg.batch_size, train_cfg.num_steps, what)
    if len(data.valid_ids) < 2:
        raise UsageError("held-out text is too short: raise --valid-fraction")
    run_dir = args.out or default_run_dir(data_cfg, model_cfg)
    if not args.resume:
        claim_run_dir(run_dir, force=args.force, resume=False)

    trainer = new_trainer(
        data, data_cfg, model_cfg, train_cfg, run_dir, progress=progress, log=log,
        warn=_stderr,  # warnings are shown even with --quiet or --json
    )  # fmt: skip
    model = trainer.model
    if args.resume:
        stored_vocab = stored["vocab"]
        if stored_vocab != data.vocab.to_json():
            raise UsageError("the corpus changed since this run started: its vocabulary differs")
        trainer.resume()
        log(f"resuming {run_dir} after epoch {trainer.epoch} (step {trainer.step})")
    else:
        log(
            f"training a {model_cfg.cell.upper()} ({count_parameters(model):,} parameters, "
            f"vocabulary {len(data.vocab)}) on {data_cfg.corpus}: {len(data.train_ids):,} train / "
            f"{len(data.valid_ids):,} held-out characters -> {run_dir}"
        )
    if trainer.epoch >= train_cfg.epochs:
        raise UsageError(
            f"run already trained {trainer.epoch} epochs: pass a larger --epochs to continue"
        )
    if model_cfg.bidirectional:
        print(BIDIRECTIONAL_WARNING, file=sys.stderr)
    start = time.perf_counter()
    try:
        last = trainer.fit()
    except StopRequested as stop:
        for s in (signal.SIGINT, signal.SIGTERM):  # the checkpoint is safe: let nothing cut
            signal.signal(s, signal.SIG_IGN)  # the message below short
        print(
            f"stopped by {stop} at step {trainer.step} (epoch {trainer.epoch + 1}); checkpoint "
            f"saved in {run_dir}: continue with `rnnlab train --out {run_dir} --resume`",
            file=sys.stderr,
        )
        return stop.exit_code
    seconds = time.perf_counter() - start
    chars = sum(r.train.chars for r in trainer.history)
    summary = {
        "train_loss": last.train.loss,
        "train_ppl": last.train.ppl,
        "valid_loss": last.valid.loss,
        "valid_ppl": last.valid.ppl,
        "valid_bpc": last.valid.bpc,
        "best_valid_ppl": perplexity(trainer.best_valid),
        "best_epoch": trainer.best_epoch,
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "seconds": round(seconds, 3),
        "chars_per_sec": round(chars / max(sum(r.seconds for r in trainer.history), 1e-9), 1),
        "run_dir": str(run_dir),
    }
    if args.json:
        print(json_line(summary))
    else:
        best = (
            f"best {summary['best_valid_ppl']:.3f} at epoch {trainer.best_epoch}"
            if trainer.best_epoch
            else f"stopped in epoch {trainer.epoch + 1} at step {trainer.step}"
        )
        print(
            f"done: held-out perplexity {last.valid.ppl:.3f} ({last.valid.bpc:.3f} bits/char), "
            f"{best}, {seconds:.0f} s; saved to {run_dir}"
        )
    return 0


BIDIRECTIONAL_WARNING = (
    "warning: --bidirectional language model: its backward pass reads the very characters it "
    "must predict, so its teacher-forced loss is meaningless and its generated text garbage"
)


def cmd_demo(args: argparse.Namespace) -> int:
    from rnnlab import demos

    if args.demo == "srn":
        text, ok = demos.srn_demo(args.activation)
        print(text)
        return 0 if ok else 1
    cells = tuple(c.strip() for c in args.cells.split(",") if c.strip())
    for c in cells:
        ModelConfig(cell=c)  # validates the name
    if args.num_steps < 2 or args.hidden < 1 or not args.seconds > 0:
        raise UsageError("demo bptt needs --num-steps >= 2, --hidden >= 1 and --seconds > 0")
    text, _ = demos.bptt_demo(
        cells, args.seconds, args.hidden, args.num_steps, args.seed, args.plot
    )
    print(text)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    data_cfg = config_from(DataConfig, args)
    model_cfg = config_from(ModelConfig, args)
    train_cfg = config_from(TrainConfig, args)
    data = prepare_data(data_cfg)
    torch.manual_seed(train_cfg.seed)
    model = RNNLM(len(data.vocab), model_cfg)
    gen = torch.Generator().manual_seed(train_cfg.seed)
    X, Y = next(
        make_batches(
            data.train_ids, train_cfg.batch_size, train_cfg.num_steps, train_cfg.sampling, gen
        )
    )  # (B, T)
    result = forward_check(model, X, Y)
    B, T, V = X.shape[0], X.shape[1], len(data.vocab)
    print(f"corpus {data_cfg.corpus}: vocabulary |V| = {V}, {len(data.train_ids):,} train chars")
    print(
        f"model  {model_cfg.cell} x{model_cfg.layers}, hidden {model_cfg.hidden}, "
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


@torch.no_grad()
def forward_check(model: RNNLM, X: torch.Tensor, Y: torch.Tensor) -> dict[str, Any]:
    """Shapes, zero initial state and the initial loss of an untrained model on one minibatch."""
    model.eval()
    B, T = X.shape
    V = model.vocab_size
    state0 = model.begin_state(B)
    states = state0 if isinstance(state0, tuple) else (state0,)
    zero = all(bool((s == 0).all()) for s in states)
    logits, state = model(X, state0)  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, V), Y.reshape(-1)).item()
    final = state if isinstance(state, tuple) else (state,)
    state_shape = " + ".join(str(tuple(s.shape)) for s in final)
    expected_state = (model.config.layers * model.num_directions, B, model.config.hidden)
    ok = (
        tuple(logits.shape) == (B, T, V)
        and all(tuple(s.shape) == expected_state for s in final)
        and zero
        and abs(loss - math.log(V)) <= 0.2
    )
    return {
        "input_shape": tuple(model.inputs(X).shape),
        "logits_shape": tuple(logits.shape),
        "state_shape": state_shape,
        "zero_state": zero,
        "loss": loss,
        "ok": ok,
    }


def cmd_predict(args: argparse.Namespace) -> int:
    gen_cfg = config_from(GenerateConfig, args)  # validate flags before touching the checkpoint
    run = load_run(args.run, impl=args.impl)
    if run.model_config.bidirectional:
        print(BIDIRECTIONAL_WARNING, file=sys.stderr)
    preds = predict(run.model, run.vocab, args.prefix, gen_cfg)
    if args.json:
        results = [
            {
                "prefix": pred.prefix,
                "next": [{"char": c, "prob": p} for c, p in pred.next],
                "continuation": pred.continuation,
                "log_prob": pred.log_prob,
            }
            for pred in preds
        ]
        print(json_line(results[0] if len(results) == 1 else {"predictions": results}))
        return 0
    strategy = gen_cfg.decode_config().strategy
    for pred in preds:
        print(f"prefix: {pred.prefix!r}")
        print("next character:")
        for c, p in pred.next:
            print(f"  {c!r:8} {p:.4f}")
        if gen_cfg.steps:
            print(f"continuation ({gen_cfg.steps} steps, {strategy}): {pred.continuation!r}")
            print(pred.prefix + pred.continuation)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    if args.show < 0:
        raise UsageError(f"--show must be 0 or more, got {args.show}")
    run = load_run(args.run, impl=args.impl)
    scores = score_text(run.model, run.vocab, args.text)
    mean = sum(b for _, b in scores) / len(scores)
    if args.json:
        chars = [{"char": c, "bits": b} for c, b in scores]
        print(json_line({"text": args.text, "chars": chars, "mean_bits": mean}))
        return 0
    print(f"{len(scores)} characters scored (the first is context only): mean {mean:.3f} bits/char")
    worst = sorted(range(len(scores)), key=lambda i: -scores[i][1])[: args.show]
    for i in sorted(worst):
        c, b = scores[i]
        context = args.text[max(0, i - 12) : i + 1]
        print(f"  {b:6.2f} bits  {c!r:6} after {context!r}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    run = load_run(args.run, impl=args.impl)
    if hasattr(args, "corpus"):
        cfg = dataclasses.replace(
            run.data,
            corpus=args.corpus,
            cleaning=getattr(args, "cleaning", None),
            encoding=getattr(args, "encoding", "utf-8"),
        )
        ids = encode_corpus(cfg, run.vocab)  # a large file is streamed
        what = f"{args.corpus} (whole text)"
    else:
        ids = prepare_data(run.data, vocab=run.vocab).valid_ids
        what = f"{run.data.corpus} held-out split"
    if len(ids) < 2:
        raise UsageError("text is too short to evaluate: it needs at least two characters")
    m = evaluate(run.model, ids, rows=PARALLEL_ROWS)
    if args.json:
        print(json_line({"loss": m.loss, "ppl": m.ppl, "bpc": m.bpc, "chars": m.chars}))
    else:
        print(
            f"{what}: loss {m.loss:.4f} nats/char, perplexity {m.ppl:.3f}, "
            f"{m.bpc:.3f} bits/char over {m.chars:,} characters"
        )
    return 0


COMMANDS = {
    "train": cmd_train,
    "check": cmd_check,
    "predict": cmd_predict,
    "evaluate": cmd_evaluate,
    "demo": cmd_demo,
    "score": cmd_score,
    "seq2seq": seq2seq_cli.run,
    "corpus": corpus_cli.run,
    "sweep": sweep_cli.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # `sweep` records its command
        args.threads = getattr(args, "threads", 0)
        if args.threads < 0:
            raise UsageError(f"--threads must be 0 (torch's choice) or more, got {args.threads}")
        if args.threads:
            torch.set_num_threads(args.threads)
        return COMMANDS[args.command](args)
    except RnnlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
