"""A synthetic corpus with a known memory length: the best possible loss is a formula.

The text uses k letters 'a', 'b', ... The first D characters are uniform; after that each
character copies the one D places back with probability 1 - eps, and otherwise is drawn uniformly
from all k letters (so it can equal the copied one by chance)::

    x_t = x_{t-D}        with probability 1 - eps
    x_t ~ uniform(k)     with probability eps            (t >= D)

Given x_{t-D}, x_t is independent of everything else, so no model can beat the conditional
entropy H(x_t | x_{t-D}):

    floor = -(q ln q + (k - 1) r ln r)    with q = 1 - eps + eps/k, r = eps/k    (nats/char)

while a model that remembers nothing gets ln k (the marginal is uniform). The D - 1 characters
in between are independent of x_t (other residues mod D are separate chains), so a model sees
the dependency exactly when x_{t-D} is among its inputs: the gap between ln k and the floor
measures memory of length D and nothing else. `rnnlab train --corpus memory:16` learns one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rnnlab.errors import UsageError

NAME = "memory"
MAX_ALPHABET = 26  # the letters a-z
SPEC_FORMS = "memory, memory:D, memory:D:k or memory:D:k:eps (e.g. memory:16:8:0.2)"


def _xlogx(p: float) -> float:
    return p * math.log(p) if p > 0 else 0.0


@dataclass(frozen=True)
class MemoryTask:
    """The copy-with-noise source: distance D, alphabet k, noise eps, length, seed."""

    distance: int = 8
    alphabet: int = 8
    noise: float = 0.2
    length: int = 2_000_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.distance < 1:
            raise UsageError(f"memory corpus: distance D must be at least 1, got {self.distance}")
        if not 2 <= self.alphabet <= MAX_ALPHABET:
            raise UsageError(
                f"memory corpus: alphabet k must be 2 to {MAX_ALPHABET}, got {self.alphabet}"
            )
        if not 0.0 <= self.noise <= 1.0:
            raise UsageError(f"memory corpus: noise eps must be in [0, 1], got {self.noise}")
        if self.length < 1:
            raise UsageError(f"memory corpus: length must be at least 1, got {self.length}")

    def codes(self) -> np.ndarray:
        """The text as letter indices 0..k-1, `length` of them, the same for the same seed.

        Vectorised: a character equals the last "fresh" draw in its residue class mod D (the
        first D characters are fresh, later ones with probability eps), so a running maximum of
        fresh positions down each residue class finds, for every t, the draw it copies.
        """
        n, D = self.length, self.distance
        rng = np.random.default_rng(self.seed)
        draws = rng.integers(self.alphabet, size=n)  # the letter used wherever a chain restarts
        fresh = rng.random(n) < self.noise
        fresh[:D] = True
        where = np.where(fresh, np.arange(n), -1)
        rows = np.full(-(-n // D) * D, -1)
        rows[:n] = where
        source = np.maximum.accumulate(rows.reshape(-1, D), axis=0).ravel()[:n]  # (n,)
        return draws[source]

    def text(self) -> str:
        """The corpus: `length` letters, no newlines."""
        return (self.codes() + ord("a")).astype(np.uint8).tobytes().decode("ascii")

    def floor(self) -> float:
        """The best achievable loss per character (nats): H(x_t | x_{t-D})."""
        k, eps = self.alphabet, self.noise
        q, r = 1.0 - eps + eps / k, eps / k
        return -(_xlogx(q) + (k - 1) * _xlogx(r))

    def no_memory(self) -> float:
        """The loss of the best model that ignores the past: ln k (nats/char)."""
        return math.log(self.alphabet)

    def window_floor(self, num_steps: int) -> float:
        """The best mean loss over a window of T = num_steps inputs read from a zero state.

        Position j = 0..T-1 of the window predicts x_{t+1} from the inputs x_{t-j}..x_t; it needs
        x_{t+1-D}, which is among them iff j >= D - 1. So T - (D - 1) positions (if positive) can
        reach `floor()` and the others only `no_memory()`. This is what random sampling, which
        starts every window from a zero state, can at best achieve.
        """
        if num_steps < 1:
            raise UsageError(f"num_steps must be at least 1, got {num_steps}")
        reach = max(0, num_steps - (self.distance - 1))
        return (reach * self.floor() + (num_steps - reach) * self.no_memory()) / num_steps

    @property
    def spec(self) -> str:
        """The corpus name that gives this task (length and seed at their defaults)."""
        return f"{NAME}:{self.distance}:{self.alphabet}:{self.noise:g}"

    @classmethod
    def parse(cls, spec: str) -> MemoryTask:
        """`memory`, `memory:D`, `memory:D:k` or `memory:D:k:eps` as a task."""
        name, *fields = spec.split(":")
        if name != NAME or len(fields) > 3:
            raise UsageError(f"bad memory corpus {spec!r}: use {SPEC_FORMS}")
        kinds = (int, int, float)
        try:
            values = [kind(v) for kind, v in zip(kinds, fields, strict=False)]
        except ValueError:
            raise UsageError(f"bad memory corpus {spec!r}: use {SPEC_FORMS}") from None
        names = ("distance", "alphabet", "noise")
        return cls(**dict(zip(names, values, strict=False)))


def is_memory(corpus: str) -> bool:
    """Whether a corpus name asks for the synthetic memory corpus."""
    return corpus == NAME or corpus.startswith(NAME + ":")
