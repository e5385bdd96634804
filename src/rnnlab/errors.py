"""Errors a user can cause, each carrying the exit code the CLI returns for it.

The CLI catches `RnnlabError`, prints its one-line message and exits with `exit_code`;
anything else is a bug and keeps its traceback (exit 1).
"""

from __future__ import annotations

import sys


class RnnlabError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""

    exit_code = 2


class UsageError(RnnlabError):
    """Bad flags or bad input data (exit 2)."""

    exit_code = 2


class CheckpointError(RnnlabError):
    """A run directory whose checkpoint is missing, corrupt or refused (exit 3)."""

    exit_code = 3


class NumericalError(RnnlabError):
    """Training produced NaN or inf (exit 4)."""

    exit_code = 4


def flag(name: str) -> str:
    """The command-line flag of a config field, for messages: `batch_size` -> `--batch-size`."""
    return "--" + name.replace("_", "-")


def stderr(message: str) -> None:
    """The default channel of warnings and notes: one line on standard error."""
    print(message, file=sys.stderr)
