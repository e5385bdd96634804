"""Shared test setup: one torch thread per process (tests may run in parallel on 2 cores)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
