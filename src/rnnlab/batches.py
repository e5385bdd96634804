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
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from rnnlab.errors import UsageError

SAMPLINGS = ("random", "sequential")


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
    ids: torch.Tensor, batch_size: int, num_steps: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """B contiguous streams from a random offset; minibatch i+1 continues minibatch i row by row."""
    check_length(len(ids), batch_size, num_steps)
    offset = int(torch.randint(num_steps, (1,), generator=generator))
    num_tokens = ((len(ids) - offset - 1) // batch_size) * batch_size
    Xs = ids[offset : offset + num_tokens].view(batch_size, -1)  # (B, N/B)
    Ys = ids[offset + 1 : offset + 1 + num_tokens].view(batch_size, -1)  # (B, N/B)
    num_batches = Xs.shape[1] // num_steps
    for i in range(0, num_batches * num_steps, num_steps):
        yield Xs[:, i : i + num_steps].long(), Ys[:, i : i + num_steps].long()


def batches_per_epoch(n: int, batch_size: int, num_steps: int, sampling: str) -> int:
    """An upper bound on minibatches in one epoch (the offset may remove one)."""
    if sampling == "random":
        return (n - 1) // num_steps // batch_size
    return (n - 1) // batch_size // num_steps


def make_batches(
    ids: torch.Tensor,
    batch_size: int,
    num_steps: int,
    sampling: str,
    generator: torch.Generator,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if sampling == "random":
        return random_batches(ids, batch_size, num_steps, generator)
    if sampling == "sequential":
        return sequential_batches(ids, batch_size, num_steps, generator)
    raise UsageError(f"unknown sampling {sampling!r}: use one of {', '.join(SAMPLINGS)}")
