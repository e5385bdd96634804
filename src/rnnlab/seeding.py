"""Seeding: the one place that seeds the global generators (torch, Python's `random`, numpy).

Every run, sweep setting, seq2seq run, forward check and demo starts here, so the initial
weights depend on the seed alone, never on what ran before in the process (a sweep's earlier
settings, a test). Randomness that must replay exactly (batch order, sampling) draws from a
`torch.Generator` of its own; these global streams are for initialisation and dropout.
"""

from __future__ import annotations

import random

import numpy as np
import torch

# Rank r > 0 of a multi-process run draws dropout from seed + RANK_STRIDE * r: its own stream,
# while rank 0 keeps the one-process stream, so N = 1 is unchanged.
RANK_STRIDE = 1_000_003


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), `random` and numpy with `seed`."""
    torch.manual_seed(seed)  # also seeds every CUDA device
    random.seed(seed)
    np.random.seed(seed)


def seed_rank(seed: int, rank: int, device: torch.device) -> None:
    """After the weights exist: each process's own dropout stream (rank 0 keeps the seed's)."""
    if rank > 0:
        torch.manual_seed(seed + RANK_STRIDE * rank)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed + RANK_STRIDE * rank)
