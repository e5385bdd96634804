"""SIGINT/SIGTERM as a flag checked between optimizer steps, so no step is cut in half.

Shared by every loop that must stop cleanly: `rnnlab train`, seq2seq training, sweep workers.
"""

from __future__ import annotations

import signal


class StopRequested(Exception):
    """Raised inside the loop when SIGINT/SIGTERM arrived; carries the exit code to use."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


class SignalGuard:
    """Turn SIGINT/SIGTERM into a flag checked between optimizer steps: no step half-runs.

    A second signal while the checkpoint is being saved only sets the flag again, so it cannot
    cut the save short; the first signal decides the exit code.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalGuard:
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is None:  # the first signal decides the exit code
            self.signum = signum

    def check(self) -> None:
        if self.signum is not None:
            raise StopRequested(self.signum)

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
