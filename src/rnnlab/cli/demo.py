"""`rnnlab demo srn` and `rnnlab demo bptt`: the worked examples of `rnnlab.experiments.demos`."""

from __future__ import annotations

import argparse
from typing import Any

from rnnlab.cli.flags import Parser
from rnnlab.errors import UsageError
from rnnlab.experiments import demos
from rnnlab.model import ModelConfig


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", help="worked examples: the SRN by hand, gradient flow through time")
    kinds = p.add_subparsers(dest="demo", required=True, parser_class=Parser)
    d = kinds.add_parser(
        "srn", parents=[common], help="the course's SRN example: numpy, nn.RNNCell, nn.RNN"
    )
    d.add_argument("--activation", choices=("identity", "tanh"), default="identity")
    d = kinds.add_parser(
        "bptt", parents=[common], help="||dL/dh_t|| against distance for trained RNN/GRU/LSTM"
    )
    d.add_argument("--cells", default="rnn,gru,lstm", help="comma-separated cells")
    d.add_argument("--seconds", type=float, default=20.0, help="training time per cell")
    d.add_argument("--hidden", type=int, default=128)
    d.add_argument("--num-steps", type=int, default=64, help="window length (T)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--plot", help="also write the curves to this PNG file")


def cmd_demo(args: argparse.Namespace) -> int:
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


COMMANDS = {"demo": cmd_demo}
