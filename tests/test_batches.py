"""Properties of the two minibatch schemes."""

from __future__ import annotations

import pytest
import torch

from rnnlab.batches import min_corpus_length, random_batches, sequential_batches
from rnnlab.errors import UsageError

N, B, T = 1000, 4, 7


@pytest.fixture
def ids():
    return torch.arange(N, dtype=torch.int32)  # id == position: easy to reason about


@pytest.mark.parametrize("scheme", [random_batches, sequential_batches])
def test_targets_are_inputs_shifted_by_one(ids, scheme):
    gen = torch.Generator().manual_seed(0)
    for X, Y in scheme(ids, B, T, gen):
        assert X.shape == Y.shape == (B, T) and X.dtype == torch.int64
        assert torch.equal(Y, X + 1)


def test_random_windows_are_disjoint_and_start_at_the_offset(ids):
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        starts = [int(x) for X, _ in random_batches(ids, B, T, gen) for x in X[:, 0]]
        offset = min(starts) % T
        assert all((s - offset) % T == 0 for s in starts)  # a grid of non-overlapping windows
        assert len(set(starts)) == len(starts)
        assert len(starts) >= (N // T - 2) // B * B  # nearly the whole text is used


def test_random_windows_are_shuffled(ids):
    gen = torch.Generator().manual_seed(0)
    starts = [int(X[0, 0]) for X, _ in random_batches(ids, B, T, gen)]
    assert starts != sorted(starts)


def test_random_offsets_vary_between_epochs(ids):
    gen = torch.Generator().manual_seed(0)
    offsets = {
        min(int(X[:, 0].min()) for X, _ in random_batches(ids, B, T, gen)) % T for _ in range(20)
    }
    assert len(offsets) > 1


def test_sequential_rows_continue_across_minibatches(ids):
    gen = torch.Generator().manual_seed(3)
    batches = list(sequential_batches(ids, B, T, gen))
    assert len(batches) > 2
    for (X0, _), (X1, _) in zip(batches, batches[1:], strict=False):
        assert torch.equal(X1[:, 0], X0[:, -1] + 1)  # row j picks up where row j stopped
    # Rows are contiguous streams of the text, one after another.
    stream_len = int(batches[0][0][1, 0] - batches[0][0][0, 0])
    assert all(int(X[j + 1, 0] - X[j, 0]) == stream_len for X, _ in batches for j in range(B - 1))


def test_same_seed_same_batches(ids):
    a = [X for X, _ in random_batches(ids, B, T, torch.Generator().manual_seed(1))]
    b = [X for X, _ in random_batches(ids, B, T, torch.Generator().manual_seed(1))]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("scheme", [random_batches, sequential_batches])
def test_minimum_length_gives_a_batch_for_every_offset(scheme):
    n = min_corpus_length(B, T)
    for seed in range(30):
        batches = list(scheme(torch.arange(n), B, T, torch.Generator().manual_seed(seed)))
        assert len(batches) >= 1
    with pytest.raises(UsageError, match=r"needs at least 35.*--batch-size or --num-steps"):
        list(scheme(torch.arange(n - 1), B, T, torch.Generator()))
