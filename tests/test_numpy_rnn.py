"""numpy_rnn against hand arithmetic, torch autograd (the oracle) and finite differences."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnnlab
from rnnlab.numpy_rnn import (
    PARAM_NAMES,
    bptt,
    clip_grads,
    init_params,
    one_hot,
    srn_forward,
    worked_example,
    worked_example_params,
)


def test_worked_example_identity_matches_hand_calculation():
    X, states, outputs = worked_example("identity")
    np.testing.assert_array_equal(X, [[1, 1], [1, 1], [2, 2]])
    np.testing.assert_array_equal(states, [[2, 2], [6, 6], [16, 16]])
    np.testing.assert_array_equal(outputs, [[4, 4], [12, 12], [32, 32]])


def test_worked_example_tanh_matches_torch_rnn():
    X, states, outputs = worked_example("tanh")
    rnn = nn.RNN(2, 2, nonlinearity="tanh", batch_first=True, dtype=torch.float64)
    out_layer = nn.Linear(2, 2, dtype=torch.float64)
    with torch.no_grad():
        for layer in (rnn, out_layer):
            for name, p in layer.named_parameters():
                p.fill_(1.0 if name.startswith("weight") else 0.0)
        ref_states, _ = rnn(torch.from_numpy(X)[None])  # (1, T, H)
        ref_outputs = out_layer(ref_states)
    np.testing.assert_allclose(states, ref_states[0].numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(outputs, ref_outputs[0].numpy(), rtol=0, atol=1e-12)
    assert states[0, 0] == pytest.approx(np.tanh(2.0))  # first step by hand: tanh(1 + 1)


def test_srn_forward_batched_equals_one_sequence_at_a_time():
    rng = np.random.default_rng(0)
    params = init_params(3, 4, 5, seed=1)
    X = rng.normal(size=(2, 6, 3))  # (B, T, D)
    h0 = rng.normal(size=(2, 4))  # (B, H)
    H, Y = srn_forward(X, params, h0=h0)
    for b in range(2):
        H_b, Y_b = srn_forward(X[b], params, h0=h0[b])
        np.testing.assert_allclose(H[b], H_b, atol=1e-14)
        np.testing.assert_allclose(Y[b], Y_b, atol=1e-14)


def _torch_loss_and_grads(X, Y, params, h0, activation):
    """The same model written with torch ops; autograd supplies the reference gradients."""
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    h = torch.tensor(h0, requires_grad=True)
    h_init = h
    X_t = torch.from_numpy(X)
    logits = []
    for step in range(X.shape[1]):
        a = X_t[:, step] @ t["W_xh"].T + h @ t["W_hh"].T + t["b_h"]
        h = torch.tanh(a) if activation == "tanh" else a
        logits.append(h @ t["W_hy"].T + t["b_y"])
    logits = torch.stack(logits, dim=1)  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(Y).reshape(-1))
    loss.backward()
    grads = {k: v.grad.numpy() for k, v in t.items()}
    return loss.item(), grads, h_init.grad.numpy()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("activation", ["tanh", "identity"])
def test_bptt_gradients_equal_torch_autograd(seed, activation):
    rng = np.random.default_rng(seed)
    B, T, D, H, V = rng.integers(2, 5), rng.integers(2, 7), rng.integers(2, 6), 5, 4
    params = init_params(D, H, V, seed=seed)
    X = rng.normal(size=(B, T, D))  # dense inputs
    Y = rng.integers(0, V, size=(B, T))
    h0 = rng.normal(size=(B, H)) * 0.5
    result = bptt(X, Y, params, h0=h0, activation=activation)
    ref_loss, ref_grads, ref_dh0 = _torch_loss_and_grads(X, Y, params, h0, activation)
    assert result.loss == pytest.approx(ref_loss, abs=1e-12)
    for name in PARAM_NAMES:
        np.testing.assert_allclose(result.grads[name], ref_grads[name], rtol=0, atol=1e-8)
    np.testing.assert_allclose(result.dh0, ref_dh0, rtol=0, atol=1e-8)


def test_bptt_with_one_hot_inputs_and_zero_state_matches_torch():
    rng = np.random.default_rng(7)
    V, H = 6, 8
    ids = rng.integers(0, V, size=(3, 5))  # (B, T)
    Y = rng.integers(0, V, size=(3, 5))
    params = init_params(V, H, V, seed=7)
    result = bptt(one_hot(ids, V), Y, params)
    _, ref_grads, ref_dh0 = _torch_loss_and_grads(
        one_hot(ids, V), Y, params, np.zeros((3, H)), "tanh"
    )
    for name in PARAM_NAMES:
        np.testing.assert_allclose(result.grads[name], ref_grads[name], rtol=0, atol=1e-8)
    np.testing.assert_allclose(result.dh0, ref_dh0, rtol=0, atol=1e-8)


def test_dh_norms_are_norms_of_the_gradient_wrt_each_state():
    rng = np.random.default_rng(3)
    params = init_params(3, 4, 5, seed=3)
    X, Y = rng.normal(size=(2, 6, 3)), rng.integers(0, 5, size=(2, 6))
    result = bptt(X, Y, params)
    # Reference: keep the .grad of every h_t; it is the total dL/dh_t autograd accumulated.
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    h = torch.zeros(2, 4, dtype=torch.float64)
    states, logits = [], []
    for step in range(6):
        h = torch.tanh(torch.from_numpy(X[:, step]) @ t["W_xh"].T + h @ t["W_hh"].T + t["b_h"])
        h.retain_grad()
        states.append(h)
        logits.append(h @ t["W_hy"].T + t["b_y"])
    F.cross_entropy(
        torch.stack(logits, 1).reshape(-1, 5), torch.from_numpy(Y).reshape(-1)
    ).backward()
    expected = [s.grad.norm().item() for s in states]
    np.testing.assert_allclose(result.dh_norms, expected, rtol=1e-10, atol=0)
    np.testing.assert_allclose(result.states[:, -1], h.detach().numpy(), atol=1e-14)


def test_bptt_matches_finite_differences():
    rng = np.random.default_rng(11)
    params = init_params(3, 4, 5, seed=11)
    X, Y = rng.normal(size=(2, 4, 3)), rng.integers(0, 5, size=(2, 4))
    grads = bptt(X, Y, params).grads
    eps = 1e-6
    for name, index in [("W_xh", (1, 2)), ("W_hh", (3, 0)), ("b_h", (2,)), ("W_hy", (4, 1))]:
        plus = {k: v.copy() for k, v in params.items()}
        minus = {k: v.copy() for k, v in params.items()}
        plus[name][index] += eps
        minus[name][index] -= eps
        numeric = (bptt(X, Y, plus).loss - bptt(X, Y, minus).loss) / (2 * eps)
        assert grads[name][index] == pytest.approx(numeric, abs=1e-8), name


@pytest.mark.parametrize("max_norm", [0.05, 1.0, 1e3])
def test_clip_grads_equals_torch_clip_grad_norm(max_norm):
    rng = np.random.default_rng(5)
    grads = {
        name: rng.normal(size=shape)
        for name, shape in zip(PARAM_NAMES, [(4, 3), (4, 4), (4,), (5, 4), (5,)], strict=True)
    }
    clipped, norm = clip_grads(grads, max_norm)
    tensors = [
        torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads.values()
    ]
    for t, g in zip(tensors, grads.values(), strict=True):
        t.grad = torch.from_numpy(g.copy())
    ref_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    assert norm == pytest.approx(ref_norm.item(), rel=1e-12)
    for t, name in zip(tensors, PARAM_NAMES, strict=True):
        np.testing.assert_allclose(clipped[name], t.grad.numpy(), rtol=1e-12, atol=0)
    assert clipped is not grads and grads["W_xh"] is not clipped["W_xh"]


def test_worked_example_params_are_fresh_copies():
    params = worked_example_params()
    params["W_xh"][0, 0] = 99.0
    np.testing.assert_array_equal(worked_example_params()["W_xh"], np.ones((2, 2)))


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation"):
        worked_example("relu")


def test_module_does_not_import_torch():
    code = "import sys, rnnlab.numpy_rnn; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env=_child_env())


def _child_env() -> dict[str, str]:
    """The child must find the package the same way this process did (installed or via src)."""

    src = os.path.dirname(os.path.dirname(rnnlab.__file__))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
