"""The `rnnlab` command: parses flags into the configs and calls the library, nothing more.

One module per command group, each with `add_parsers(sub, common)` and its `COMMANDS`; `flags`
turns the config dataclasses into flags and user mistakes into one-line errors and exit codes
(see `rnnlab.errors`). Nothing outside this package imports it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from rnnlab.cli import corpus, demo, export, predict, seq2seq, serve, sweep, torchrun, train
from rnnlab.cli.flags import Parser, common_parser, run_command
from rnnlab.errors import UsageError

GROUPS = (train, predict, demo, seq2seq, corpus, sweep, torchrun, serve, export)
COMMANDS = {name: fn for group in GROUPS for name, fn in group.COMMANDS.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rnnlab",
        description="Train, check and query character-level recurrent language models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    common = common_parser()
    for group in GROUPS:
        group.add_parsers(sub, common)
    return parser


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.argv = argv  # `sweep` records its command
    args.threads = getattr(args, "threads", 0)
    if args.threads < 0:
        raise UsageError(f"--threads must be 0 (torch's choice) or more, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    return COMMANDS[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["torchrun"]:  # torchrun's own arguments, passed through unparsed
        return run_command(lambda: torchrun.launch(argv[1:]))
    return run_command(lambda: _run(argv))
