"""Flags from the config dataclasses, one-line usage errors, strict JSON, errors -> exit codes.

Every command group builds its flags here, so each default and help text lives in one place (the
dataclass field) and every command reports a user mistake the same way: `error: ...` on one line
and the exit code of the `RnnlabError` raised (rnnlab.errors).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rnnlab.devices import DEVICE_HELP
from rnnlab.errors import RnnlabError, UsageError, flag
from rnnlab.errors import stderr as stderr  # the commands print warnings through it
from rnnlab.jsonout import strict_dumps
from rnnlab.training.distributed import teardown as distributed_teardown

_TYPES = {"int": int, "float": float, "str": str}
_LIST = re.compile(r"list\[(\w+)\]")

IMPL_HELP = "load the weights into this recurrent implementation (default: the run's own)"
RUN_HELP = (
    "run directory written by `rnnlab train` (its best checkpoint), or one checkpoint in it: "
    "RUN/checkpoints/step-NNNNNNNN"
)


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (and exit 2), not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


class _OneOrMore(argparse.Action):
    """`nargs="+"` for a field typed `T | list[T]`: one value stays a T, several make a list, so
    `--corpus a.txt` gives the same config (and config.json) as before lists existed."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values[0] if len(values) == 1 else list(values))


def add_config_args(parser: argparse.ArgumentParser, cls: type, only: Sequence[str] = ()) -> None:
    """One flag per dataclass field; unspecified flags stay absent so defaults come from `cls`.

    A field typed int, float, str or bool (or one of them `| None`) takes one value; a field
    typed `list[T]` takes one or more (`--corpus a.txt b.txt`), and `T | list[T]` keeps a
    single value as a T.
    """
    group = parser.add_argument_group(f"{cls.__name__.removesuffix('Config').lower()} options")
    for f in dataclasses.fields(cls):
        if only and f.name not in only:
            continue
        kinds = [k.strip() for k in str(f.type).split("|")]
        base = kinds[0]
        if base == "bool":
            group.add_argument(
                flag(f.name),
                dest=f.name,
                action="store_true",
                default=argparse.SUPPRESS,
                help=f.metadata.get("help"),
            )
            continue
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS}
        listed = [m.group(1) for k in kinds if (m := _LIST.fullmatch(k))]
        if listed:
            kwargs["nargs"] = "+"
            kwargs["type"] = _TYPES[listed[0]]
            if listed[0] in kinds:
                kwargs["action"] = _OneOrMore
        else:
            kwargs["type"] = _TYPES[base]
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if "metavar" in f.metadata:
            kwargs["metavar"] = f.metadata["metavar"]
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = "" if default is None else f" (default: {default})"
        kwargs["help"] = f"{f.metadata.get('help', '')}{shown}"
        aliases = [flag(a) for a in f.metadata.get("aliases", ())]  # names users already type
        group.add_argument(flag(f.name), *aliases, dest=f.name, **kwargs)


def given(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of `cls` whose flags were given on the command line, with their values."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def config_from(cls: type, args: argparse.Namespace, base: Any = None) -> Any:
    """Build `cls` from the flags given on the command line, on top of `base` or the defaults."""
    if base is not None:
        return dataclasses.replace(base, **given(cls, args))
    return cls(**given(cls, args))


def common_parser() -> Parser:
    """Flags every model-running command takes."""
    common = Parser(add_help=False)
    common.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default: torch's choice); use 1 per process when running several",
    )
    common.add_argument("--device", default="auto", help=DEVICE_HELP)
    return common


def json_line(obj: dict[str, Any]) -> str:
    """One line of strict JSON: inf/nan (a diverged model) become null, at any depth."""
    return strict_dumps(obj)


def report_error(rank: int, line: str) -> None:
    """Print a user mistake's one line, once for the whole group: rank 0 prints it.

    Under torchrun each process also leaves the line in its reply file (TORCHELASTIC_ERROR_FILE):
    a process that fails first makes torchrun stop the others, so rank 0 may be stopped before
    it could print (seen on a loaded machine: exit 2 and no line at all), and `rnnlab torchrun`
    then prints the line from there.
    """
    reply = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if reply:
        try:
            Path(reply).write_text(
                json.dumps({"message": line, "timestamp": int(time.time())}), encoding="utf-8"
            )
        except OSError:
            pass  # the launcher reads no line; rank 0 still prints its own
    if rank == 0:
        print(line, file=sys.stderr)


def run_command(command: Callable[[], int]) -> int:
    """Run a command; a user mistake becomes one `error:` line and its exit code.

    Under torchrun every process runs the command: rank 0 speaks for all of them (they meet
    the same mistakes), and a rank > 0 that fails alone (it lost its peers, say) prints one
    line instead of a traceback, so the user reads one error, not N.
    """
    rank = int(os.environ.get("RANK", 0))
    clean = False
    try:
        code = command()
        clean = True
        return code
    except RnnlabError as e:
        report_error(rank, f"error: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug keeps its traceback on rank 0 only
        if rank == 0:
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"error: rank {rank}: {type(e).__name__}: {first}", file=sys.stderr)
        return 1
    finally:
        distributed_teardown(clean)
