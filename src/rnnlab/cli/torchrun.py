"""`rnnlab torchrun ...`: PyTorch's torchrun, with rnnlab's exit codes and one-line errors.

`torchrun --standalone --nproc-per-node N -m rnnlab train ...` works as it is; this command takes
exactly torchrun's arguments and runs the same launcher in-process, but reports the way every
rnnlab command does: the failing rank's own exit code (2 bad input, 3 checkpoint, 4 NaN) instead
of torchrun's 1, 130/143 when the launcher is interrupted (after the ranks saved), and one line
instead of torchrun's failure report and traceback. Launchers that never meet at the rendezvous
(a machine that did not start within torchrun's join timeout, an endpoint it cannot reach) end
with one line too, exit 2; processes that meet but cannot connect retry in the training command
(`rnnlab.training.distributed.connect`, about a minute at most).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
from torch.distributed.elastic.rendezvous.api import RendezvousError
from torch.distributed.run import get_args_parser
from torch.distributed.run import run as torchrun

from rnnlab.errors import RnnlabError, UsageError

RNNLAB_CODES = (2, 3, 4, 130, 143)  # exit codes whose one-line message the rank printed itself


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Listed in `rnnlab --help`; `rnnlab.cli.main` hands its arguments to torchrun unparsed."""
    sub.add_parser(
        "torchrun",
        add_help=False,
        help="torchrun with rnnlab's exit codes: rnnlab torchrun --standalone --nproc-per-node N "
        "-m rnnlab train ...",
    )


def launch(argv: list[str]) -> int:
    """Run torchrun on `argv` (its own arguments) and return rnnlab's exit code."""
    parser = get_args_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse printed its one-line complaint
        raise UsageError("rnnlab torchrun: bad torchrun arguments (see `torchrun --help`)") from (
            None if e.code else e
        )
    for name in list(logging.root.manager.loggerDict):  # one line from us instead of its logs
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        torchrun(args)
    except ChildFailedError as e:
        rank, failure = first_said(e)
        code = failure.exitcode
        if code < 0:  # killed by a signal
            name = signal.Signals(-code).name
            print(f"error: rank {rank} was killed by {name}", file=sys.stderr)
            return 128 - code
        said = failure.message if isinstance(failure.message, str) else ""
        zero = e.failures.get(0)
        spoke = zero is not None and zero.exitcode in RNNLAB_CODES  # rank 0 printed it
        if said.startswith("error:") and not spoke:  # rank 0 was stopped before it could
            print(said, file=sys.stderr)
        elif code not in RNNLAB_CODES:
            print(f"error: rank {rank} failed with exit code {code}", file=sys.stderr)
        return code
    except SignalException as e:  # the launcher was interrupted; the ranks saved and exited
        return 128 + int(e.sigval)
    except RendezvousError as e:  # before any rank started: nothing was written
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RnnlabError(
            f"rnnlab torchrun: the launchers did not meet at the rendezvous ({why}): start the "
            "same command on all --nnodes machines, with one --rdzv-id and an --rdzv-endpoint "
            "they all reach, within --rdzv-conf join_timeout (600 s by default)"
        ) from None
    return 0


def first_said(e: ChildFailedError) -> tuple[int, ProcessFailure]:
    """The failure to report: the earliest one that left rnnlab's error line (lowest rank on a
    tie), else torchrun's own first failure (a process killed, or one that left no line)."""
    said = [
        (f.timestamp, rank, f)
        for rank, f in e.failures.items()
        if isinstance(f.message, str) and f.message.startswith("error:")
    ]
    if said:
        _, rank, failure = min(said, key=lambda t: t[:2])
        return rank, failure
    return e.get_first_failure()


COMMANDS: dict[str, Any] = {}  # dispatched by rnnlab.cli.main before argument parsing
