"""The playground's limits and settings, apart from the web framework so the CLI starts fast."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rnnlab.errors import UsageError

# Limits of one request: each bounds the time and memory one answer can take. The text limit
# also bounds `score`'s (T, V) logits: 2,000 characters of a 4,893-symbol Chinese model are
# about 40 MB of float32.
MAX_PREFIX = 1_000
MAX_TEXT = 2_000
MAX_NUM_PREDS = 2_000
MAX_BEAM = 16
MAX_SHOW = 50
MAX_ALTERNATIVES = 10
MAX_TOP_UNITS = 50
MAX_BODY = 256 * 1024  # bytes: a MAX_TEXT text, escaped, plus a signal of MAX_TEXT numbers
MAX_SEED = 2**63 - 1
# The prediction options are declared once, with the library's own ranges, by `GenerateConfig`
# (rnnlab.generate); the server's schema takes those and tightens the ones listed here.
PREDICT_LIMITS: dict[str, dict[str, float]] = {
    "num_preds": {"le": MAX_NUM_PREDS},
    "show": {"le": MAX_SHOW},
    "beam": {"le": MAX_BEAM},
    "temperature": {"le": 100},
    "top_k": {"le": 1_000_000},
    "seed": {"ge": 0, "le": MAX_SEED},
}
LIMITS = {
    "prefix": MAX_PREFIX,
    "text": MAX_TEXT,
    "steps": MAX_NUM_PREDS,  # the page's name for num_preds
    "beam": MAX_BEAM,
    "show": MAX_SHOW,
    "alternatives": MAX_ALTERNATIVES,
    "top_units": MAX_TOP_UNITS,
    "body_bytes": MAX_BODY,
}


@dataclass(frozen=True)
class ServeConfig:
    """How the server shares its machine and whom it answers."""

    workers: int = 2  # threads running model work at once
    queue: int = 8  # requests that may wait for a thread; beyond that: 503 + Retry-After
    timeout: float = 30.0  # seconds one request may take, waiting included; then 503
    listen_host: str = "127.0.0.1"  # the address it listens on (accepted as a Host header)
    allow_hosts: tuple[str, ...] = ()  # more Host names to accept (a name on your network)
    max_body: int = MAX_BODY

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if self.queue < 0:
            raise UsageError(f"--queue must be 0 or more, got {self.queue}")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise UsageError(f"--timeout must be a positive number of seconds, got {self.timeout}")
        if self.max_body < 1024:
            raise UsageError(f"the body limit must be at least 1024 bytes, got {self.max_body}")
