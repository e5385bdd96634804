"""The fused CPU RNN/GRU (`--impl fast`) against nn.RNN/nn.GRU: outputs, states, every gradient.

The backward passes are written by hand, so every gradient is compared with autograd's through
torch's own modules: in float64 to 1e-10 (the same arithmetic up to rounding) and in float32 to
1e-5 (the issue's bound), for every layout the cores accept.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnlab import fused
from rnnlab.model import RNNLM, ModelConfig

KINDS = {  # name -> (fused class, torch class, extra constructor kwargs)
    "rnn-tanh": (fused.RNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn-relu": (fused.RNN, nn.RNN, {"nonlinearity": "relu"}),
    "gru": (fused.GRU, nn.GRU, {}),
}
T, B, I, H = 6, 3, 5, 4


def make_pair(kind, dtype=torch.float64, **config):
    fast_cls, torch_cls, extra = KINDS[kind]
    torch.manual_seed(0)
    ref = torch_cls(I, H, dtype=dtype, **extra, **config)
    fast = fast_cls(I, H, dtype=dtype, **extra, **config)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def forward_backward(module, x, h0):
    """Outputs, final state and the gradients of a fixed random projection of both."""
    x = x.clone().requires_grad_()
    h0 = None if h0 is None else h0.clone().requires_grad_()
    out, h_n = module(x, h0)
    g = torch.Generator().manual_seed(2)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    loss = loss + (h_n * torch.randn(h_n.shape, generator=g, dtype=h_n.dtype)).sum()
    loss.backward()
    grads = [x.grad] + ([] if h0 is None else [h0.grad])
    grads += [p.grad for p in module.parameters()]
    return [out, h_n, *grads]


def assert_same(module, ref, x, h0, atol):
    """Equal within `atol`, relative to the size of the values for sums of many terms (the
    weight gradients add T*B products, whose float32 rounding depends on the summation order)."""
    names = ["output", "h_n", "input", "h0"][: 3 + (h0 is not None)]
    names += [name for name, _ in module.named_parameters()]
    got, want = forward_backward(module, x, h0), forward_backward(ref, x, h0)
    for name, a, b in zip(names, got, want, strict=True):
        scale = max(1.0, float(b.detach().abs().max()))
        torch.testing.assert_close(a, b, rtol=0, atol=atol * scale, msg=name)


@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "given-state"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_float64_equals_torch_to_1e10(kind, num_layers, batch_first, bidirectional, with_state):
    config = dict(num_layers=num_layers, batch_first=batch_first, bidirectional=bidirectional)
    ref, fast = make_pair(kind, **config)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), generator=g, dtype=torch.float64)
    D = 2 if bidirectional else 1
    h0 = torch.randn(num_layers * D, B, H, generator=g, dtype=torch.float64) if with_state else None
    assert_same(fast, ref, x, h0, atol=1e-10)


@pytest.mark.parametrize("kind", list(KINDS))
def test_float32_equals_torch_to_1e5_at_training_sizes(kind):
    fast_cls, torch_cls, extra = KINDS[kind]
    torch.manual_seed(0)
    ref = torch_cls(28, 64, num_layers=2, batch_first=True, **extra)
    fast = fast_cls(28, 64, num_layers=2, batch_first=True, **extra)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(8, 35, 28)
    h0 = torch.randn(2, 8, 64)
    assert_same(fast, ref, x, h0, atol=1e-5)


@pytest.mark.parametrize("kind", list(KINDS))
def test_without_bias_and_unbatched_input(kind):
    ref, fast = make_pair(kind, num_layers=2, bias=False)
    x = torch.randn(T, I, dtype=torch.float64)  # one sequence, no batch dimension
    assert_same(fast, ref, x, None, atol=1e-10)


@pytest.mark.parametrize("kind", list(KINDS))
def test_inference_path_equals_the_training_path(kind):
    """Without a graph the loop keeps nothing for backward: same numbers, no grad_fn."""
    ref, fast = make_pair(kind, num_layers=2)
    x = torch.randn(T, B, I, dtype=torch.float64)
    with torch.no_grad():
        out, h_n = fast(x)
    assert out.grad_fn is None
    out_ref, h_ref = ref(x)
    torch.testing.assert_close(out, out_ref.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(h_n, h_ref.detach(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradient_reaches_only_what_requires_it(kind):
    """Frozen weights and an input without grad: the hand-written backward skips those."""
    ref, fast = make_pair(kind)
    fast.weight_ih_l0.requires_grad_(False)
    x = torch.randn(T, B, I, dtype=torch.float64)  # no grad
    out, _ = fast(x)
    out.sum().backward()
    assert fast.weight_ih_l0.grad is None
    assert fast.weight_hh_l0.grad is not None


@pytest.mark.parametrize("kind", list(KINDS))
def test_python_fallback_equals_the_scripted_loops(kind, monkeypatch):
    """Where TorchScript is unavailable the same loops run as Python, with the same result."""
    ref, fast = make_pair(kind, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I, dtype=torch.float64)
    scripted = forward_backward(fast, x, None)
    python = {key: getattr(fused, name) for key, name in fused._LOOPS.items()}
    monkeypatch.setattr(fused, "_compiled", python)
    for a, b in zip(forward_backward(fast, x, None), scripted, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["rnn-tanh", "gru"])
def test_gradcheck(kind):
    _, fast = make_pair(kind)
    x = torch.randn(3, 2, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, H, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, h: fast(x, h), (x, h0))


def test_dropout_between_layers_matches_torch():
    """p = 1 is deterministic: every layer but the first sees zeros, as in nn.GRU."""
    ref, fast = make_pair("gru", num_layers=3, dropout=1.0)
    x = torch.randn(T, B, I, dtype=torch.float64)
    out_ref, h_ref = ref(x)
    out, h = fast(x)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_language_model_weights_move_between_impls(cell):
    """A model trained with --impl fast loads into nn.* and the other way round, same logits."""
    config = ModelConfig(cell=cell, hidden=16, layers=2, dropout=0.0, impl="fast")
    torch.manual_seed(0)
    fast = RNNLM(28, config)
    ref = RNNLM(28, ModelConfig(cell=cell, hidden=16, layers=2, dropout=0.0, impl="torch"))
    ref.load_state_dict(fast.state_dict())
    X = torch.randint(28, (4, 12))
    torch.testing.assert_close(fast(X)[0], ref(X)[0], rtol=0, atol=1e-5)


def test_the_step_loops_compile_with_torchscript():
    """The speed comes from running the loops without Python's per-operation overhead: if
    scripting broke (a torch upgrade), the Python fallback would be silently slower."""
    loops = fused._loops()
    assert set(loops) == set(fused._LOOPS)
    assert all(isinstance(fn, torch.jit.ScriptFunction) for fn in loops.values())


@pytest.mark.parametrize("kind", KINDS)
def test_backward_buffer_reused_across_window_lengths(kind):
    """Variable-length windows (`--variable-window`): one backward buffer grows to the longest
    window and serves shorter ones as a view; every length still gives torch's gradients."""
    ref, fast = make_pair(kind)
    g = torch.Generator().manual_seed(1)
    for steps in (7, 3, 9, 5, 9):
        x = torch.randn(steps, B, I, generator=g, dtype=torch.float64)
        for module in (ref, fast):
            module.zero_grad(set_to_none=True)
        assert_same(fast, ref, x, None, atol=1e-10)
