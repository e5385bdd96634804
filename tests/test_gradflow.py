"""Gradient flow through time, checked against a split-sequence autograd oracle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnlab.gradflow import gradflow_windows, hidden_grad_norms
from rnnlab.model import RNNLM, ModelConfig, detach_state


def oracle_norm(model: RNNLM, X: torch.Tensor, Y: torch.Tensor, k: int) -> float:
    """||dL/dh|| for the state k steps back, by cutting the sequence there and making it a leaf."""
    T = X.shape[1]
    _, state = model(X[:, : T - k])
    parts = detach_state(state)
    parts = tuple(p.requires_grad_() for p in (parts if isinstance(parts, tuple) else (parts,)))
    logits, _ = model(X[:, T - k :], parts if len(parts) == 2 else parts[0])
    loss = F.cross_entropy(logits[:, -1], Y[:, -1])
    grads = torch.autograd.grad(loss, parts)
    g = torch.cat([g.transpose(0, 1).reshape(X.shape[0], -1) for g in grads], dim=1)
    return float(g.norm(dim=1).mean())


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_norms_match_oracle(cell):
    torch.manual_seed(0)
    model = RNNLM(7, ModelConfig(cell=cell, hidden=12, layers=2, dropout=0.0)).double().eval()
    X = torch.randint(7, (3, 9))
    Y = torch.randint(7, (3, 9))
    norms = hidden_grad_norms(model, X, Y)
    assert norms.shape == (8,)
    for k in (1, 2, 5, 8):
        assert abs(float(norms[k - 1]) - oracle_norm(model, X, Y, k)) < 1e-10


def test_plain_rnn_with_small_weights_vanishes():
    torch.manual_seed(0)
    model = RNNLM(5, ModelConfig(cell="rnn", hidden=16, dropout=0.0))
    with torch.no_grad():
        model.rnn.weight_hh_l0.mul_(0.3)
    norms = hidden_grad_norms(model, torch.randint(5, (4, 30)), torch.randint(5, (4, 30)))
    assert norms[-1] < 1e-6 * norms[0]


def test_gradflow_windows_are_fixed_by_the_seed():
    ids = torch.arange(100)
    X, Y = gradflow_windows(ids, 10, count=5, seed=3)
    assert X.shape == (5, 10) and X.dtype == torch.int64
    assert torch.equal(Y, X + 1)  # each target is the next character
    assert torch.equal(gradflow_windows(ids, 10, count=5, seed=3)[0], X)
    starts = torch.randint(100 - 10 - 1, (5,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(X[:, 0], starts)
    assert gradflow_windows(torch.arange(11), 10) is None  # no room for the last target
    assert gradflow_windows(torch.arange(12), 10) is not None
