"""Minibatches of (X, Y) windows: random sampling and sequential partitioning (d2l 9.3 / 8.3).

Both iterators take the whole training text as one compact 1-D id tensor and yield int64 pairs
X, Y of shape (B, T) where Y is X shifted by one character: Y[b, t] is the character after X[b, t].

Random sampling (every minibatch starts from a zero state, so windows need not be adjacent)::

    offset ~ U[0, T)
    text:  |..o|w0 ....|w1 ....|w2 ....|w3 ....|w4 ....|...
    windows in a shuffled order:  batch 0 = [w3, w0], batch 1 = [w4, w1], ...

Sequential partitioning (state carried from one minibatch to the next, so row j must continue)::

    offset ~ U[0, T), the rest cut into B streams, one per row:
    row 0: a b c d | e f g h | i j k l
    row 1: m n o p | q r s t | u v w x
             batch 0   batch 1   batch 2

Row j of batch i+1 starts exactly where row j of batch i ended.

Variable-length windows (sequential partitioning only, AWD-LSTM's recipe): each minibatch's
length is drawn afresh, T with probability 0.95 else T/2, plus N(0, 5) steps, at least 5 and at
most T + 20; a tail too short for a window of its own joins the last one, so the streams are
covered to their end::

    row 0: a b c d e | f g h | i j k l m n
             T1 = 5    T2 = 3   T3 = 6

Truncated BPTT with a fixed T cuts the gradient at the same positions every epoch (given the
offset); varying T moves the cuts, so every character is sometimes far from one. The lengths come
from the same generator as the offset, drawn as the iterator reaches each minibatch, so the same
generator state replays the same windows (exact resume, and every DDP process agrees).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from rnnlab.errors import UsageError

SAMPLINGS = ("random", "sequential")

# AWD-LSTM's variable BPTT (salesforce/awd-lstm-lm, main.py): the full window most of the time,
# half of it otherwise, then a normal spread around that.
FULL_WINDOW_P = 0.95
WINDOW_STD = 5.0
MIN_WINDOW = 5
MAX_WINDOW_EXTRA = 20  # a cap on the length (4 standard deviations): bounded memory per step


def min_corpus_length(batch_size: int, num_steps: int) -> int:
    """Fewest characters that give one full minibatch whatever the random offset."""
    # The offset takes up to T - 1 characters, the targets one more than the inputs.
    return batch_size * num_steps + num_steps


def check_length(n: int, batch_size: int, num_steps: int, what: str = "training text") -> None:
    need = min_corpus_length(batch_size, num_steps)
    if n < need:
        raise UsageError(
            f"{what} has {n} characters but one minibatch of --batch-size {batch_size} x "
            f"--num-steps {num_steps} needs at least {need}: lower --batch-size or --num-steps, "
            "or use a longer text"
        )


def random_batches(
    ids: torch.Tensor, batch_size: int, num_steps: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Disjoint length-T windows from a random offset, visited in random order."""
    check_length(len(ids), batch_size, num_steps)
    offset = int(torch.randint(num_steps, (1,), generator=generator))
    num_windows = (len(ids) - offset - 1) // num_steps
    starts = offset + num_steps * torch.randperm(num_windows, generator=generator)  # (N,)
    starts = starts.to(ids.device)  # the order is drawn on the CPU, the windows cut on the device
    steps = torch.arange(num_steps, device=ids.device)  # (T,)
    for i in range(0, num_windows - batch_size + 1, batch_size):
        idx = starts[i : i + batch_size, None] + steps  # (B, T)
        yield ids[idx].long(), ids[idx + 1].long()


def sequential_batches(
    ids: torch.Tensor,
    batch_size: int,
    num_steps: int,
    generator: torch.Generator,
    variable_window: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """B contiguous streams from a random offset; minibatch i+1 continues minibatch i row by row.

    With `variable_window` each minibatch's length is drawn (`window_length`) and the streams
    are covered to their last character; without, every minibatch is (B, T) and a tail shorter
    than T is left out.
    """
    check_length(len(ids), batch_size, num_steps)
    offset = int(torch.randint(num_steps, (1,), generator=generator))
    num_tokens = ((len(ids) - offset - 1) // batch_size) * batch_size
    Xs = ids[offset : offset + num_tokens].view(batch_size, -1)  # (B, N/B)
    Ys = ids[offset + 1 : offset + 1 + num_tokens].view(batch_size, -1)  # (B, N/B)
    if variable_window:
        yield from _variable_windows(Xs, Ys, num_steps, generator)
        return
    num_batches = Xs.shape[1] // num_steps
    for i in range(0, num_batches * num_steps, num_steps):
        yield Xs[:, i : i + num_steps].long(), Ys[:, i : i + num_steps].long()


def window_length(num_steps: int, generator: torch.Generator) -> int:
    """One minibatch's length under variable BPTT: T with p 0.95 else T/2, plus N(0, 5) steps,
    kept within [min(5, T), T + 20]. Draws two numbers from `generator`."""
    full = float(torch.rand((), generator=generator)) < FULL_WINDOW_P
    centre = num_steps if full else num_steps / 2
    length = int(centre + WINDOW_STD * float(torch.randn((), generator=generator)))
    return max(min(MIN_WINDOW, num_steps), min(length, num_steps + MAX_WINDOW_EXTRA))


def _variable_windows(
    Xs: torch.Tensor, Ys: torch.Tensor, num_steps: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive windows of drawn lengths over the (B, N/B) streams, to their end."""
    n = Xs.shape[1]
    shortest = min(MIN_WINDOW, num_steps)
    i = 0
    while i < n:
        length = min(window_length(num_steps, generator), n - i)
        if n - (i + length) < shortest:  # a tail too short for a window joins this one
            length = n - i
        yield Xs[:, i : i + length].long(), Ys[:, i : i + length].long()  # (B, length)
        i += length


def check_variable_window(sampling: str, variable_window: bool) -> None:
    """Variable windows are for a carried state: random windows start from zero anyway."""
    if variable_window and sampling != "sequential":
        raise UsageError(
            "--variable-window varies the windows of a carried state: use it with "
            "--sampling sequential"
        )


def mean_window(num_steps: int) -> float:
    """The expected length of a variable window (the clipping at both ends aside)."""
    return FULL_WINDOW_P * num_steps + (1 - FULL_WINDOW_P) * num_steps / 2


def batches_per_epoch(
    n: int, batch_size: int, num_steps: int, sampling: str, variable_window: bool = False
) -> int:
    """An upper bound on minibatches in one epoch (the offset may remove one); with variable
    windows, the expected number, rounded (for a progress bar, not a promise)."""
    if sampling == "random":
        return (n - 1) // num_steps // batch_size
    if variable_window:
        return max(1, round((n - 1) // batch_size / mean_window(num_steps)))
    return (n - 1) // batch_size // num_steps


def make_batches(
    ids: torch.Tensor,
    batch_size: int,
    num_steps: int,
    sampling: str,
    generator: torch.Generator,
    variable_window: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if sampling not in SAMPLINGS:
        raise UsageError(f"unknown sampling {sampling!r}: use one of {', '.join(SAMPLINGS)}")
    check_variable_window(sampling, variable_window)
    if sampling == "random":
        return random_batches(ids, batch_size, num_steps, generator)
    return sequential_batches(ids, batch_size, num_steps, generator, variable_window)
