"""Scratch RNN/GRU/LSTM against nn.RNN/GRU/LSTM: outputs, states and every gradient in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnlab import cells

KINDS = {  # name -> (scratch class, torch class, extra constructor kwargs)
    "rnn-tanh": (cells.RNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn-relu": (cells.RNN, nn.RNN, {"nonlinearity": "relu"}),
    "gru": (cells.GRU, nn.GRU, {}),
    "lstm": (cells.LSTM, nn.LSTM, {}),
}
T, B, I, H = 5, 3, 3, 4
ATOL = 1e-10


def make_pair(kind, num_layers=1, batch_first=False, bidirectional=False, **kwargs):
    """A torch core with random float64 weights and a scratch core holding a copy of them."""
    scratch_cls, torch_cls, extra = KINDS[kind]
    config = dict(
        num_layers=num_layers, batch_first=batch_first, bidirectional=bidirectional, **extra
    )
    config.update(kwargs)
    torch.manual_seed(0)
    ref = torch_cls(I, H, dtype=torch.float64, **config)
    scratch = scratch_cls(I, H, dtype=torch.float64, **config)
    scratch.load_state_dict(ref.state_dict())
    return ref, scratch


def make_inputs(kind, num_layers, batch_first, bidirectional, with_state, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (B, T, I) if batch_first else (T, B, I)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if not with_state:
        return x, None
    state_shape = (num_layers * (2 if bidirectional else 1), B, H)
    parts = [torch.randn(state_shape, generator=g, dtype=torch.float64) for _ in range(2)]
    return x, (tuple(parts) if kind == "lstm" else parts[0])


def _leaves(x, hx):
    """Fresh leaf copies that record gradients, so both cores see identical inputs."""
    x = x.clone().requires_grad_()
    if hx is None:
        return x, None
    if isinstance(hx, tuple):
        return x, tuple(s.clone().requires_grad_() for s in hx)
    return x, hx.clone().requires_grad_()


def _flat_state(h_n):
    return list(h_n) if isinstance(h_n, tuple) else [h_n]


def run_and_backward(module, x, hx):
    """Forward, then backward a fixed random projection of output and final state(s)."""
    x, hx = _leaves(x, hx)
    output, h_n = module(x, hx)
    g = torch.Generator().manual_seed(2)
    loss = (output * torch.randn(output.shape, generator=g, dtype=output.dtype)).sum()
    for s in _flat_state(h_n):
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
    loss.backward()
    input_grads = [x.grad] + ([] if hx is None else [s.grad for s in _flat_state(hx)])
    param_grads = {name: p.grad for name, p in module.named_parameters()}
    return output, _flat_state(h_n), input_grads, param_grads


@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "given-state"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_outputs_states_and_gradients_equal_torch(
    kind, num_layers, batch_first, bidirectional, with_state
):
    ref, scratch = make_pair(kind, num_layers, batch_first, bidirectional)
    x, hx = make_inputs(kind, num_layers, batch_first, bidirectional, with_state)
    out_ref, states_ref, in_grads_ref, p_grads_ref = run_and_backward(ref, x, hx)
    out, states, in_grads, p_grads = run_and_backward(scratch, x, hx)

    assert out.shape == out_ref.shape
    torch.testing.assert_close(out, out_ref, rtol=0, atol=ATOL)
    for s, s_ref in zip(states, states_ref, strict=True):
        torch.testing.assert_close(s, s_ref, rtol=0, atol=ATOL)
    for g, g_ref in zip(in_grads, in_grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=0, atol=ATOL)
    assert p_grads.keys() == p_grads_ref.keys()
    for name, g in p_grads.items():
        torch.testing.assert_close(g, p_grads_ref[name], rtol=0, atol=ATOL, msg=name)


@pytest.mark.parametrize("kind", list(KINDS))
def test_same_seed_gives_torch_initialisation_and_names(kind):
    scratch_cls, torch_cls, extra = KINDS[kind]
    config = dict(num_layers=2, bidirectional=True, **extra)
    torch.manual_seed(123)
    ref = torch_cls(I, H, **config)
    torch.manual_seed(123)
    scratch = scratch_cls(I, H, **config)
    ref_sd, sd = ref.state_dict(), scratch.state_dict()
    assert list(sd) == list(ref_sd)  # e.g. weight_ih_l0, ..., bias_hh_l1_reverse, in torch's order
    for name in sd:
        assert torch.equal(sd[name], ref_sd[name]), name
    bound = 1 / H**0.5
    assert all(p.abs().max() <= bound for p in scratch.parameters())


@pytest.mark.parametrize("kind", list(KINDS))
def test_without_bias_and_unbatched_input_equal_torch(kind):
    ref, scratch = make_pair(kind, num_layers=2, bidirectional=True, bias=False)
    assert not any("bias" in name for name in scratch.state_dict())
    x = torch.randn(T, I, dtype=torch.float64)  # one sequence, no batch dimension
    out_ref, h_ref = ref(x)
    out, h = scratch(x)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=ATOL)
    for s, s_ref in zip(_flat_state(h), _flat_state(h_ref), strict=True):
        assert s.shape == (4, H)  # (L*D, H)
        torch.testing.assert_close(s, s_ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradcheck_on_small_sizes(kind):
    scratch_cls, _, extra = KINDS[kind]
    torch.manual_seed(0)
    module = scratch_cls(2, 2, num_layers=2, batch_first=True, bidirectional=True, **extra)
    module = module.double()
    names = [name for name, _ in module.named_parameters()]
    x = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)  # (B, T, I)
    num_state = 2 if kind == "lstm" else 1  # the LSTM state is the pair (h, c)
    state = [
        torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True) for _ in range(num_state)
    ]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]

    def f(x, *rest):
        state, params = rest[:num_state], rest[num_state:]
        hx = tuple(state) if kind == "lstm" else state[0]
        out, h_n = torch.func.functional_call(
            module, dict(zip(names, params, strict=True)), (x, hx)
        )
        return (out, *_flat_state(h_n))

    assert torch.autograd.gradcheck(f, (x, *state, *params), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", list(KINDS))
def test_from_torch_and_to_torch_round_trip(kind):
    ref, _ = make_pair(kind, num_layers=2, batch_first=True, bidirectional=True, dropout=0.25)
    ref.eval()
    scratch = KINDS[kind][0].from_torch(ref)
    assert type(scratch) is KINDS[kind][0] and not scratch.training
    assert (scratch.num_layers, scratch.batch_first, scratch.dropout) == (2, True, 0.25)
    back = scratch.to_torch()
    assert type(back) is type(ref) and not back.training
    assert back.batch_first and back.bidirectional and back.dropout == 0.25
    if kind.startswith("rnn"):
        assert back.nonlinearity == ref.nonlinearity == scratch.nonlinearity
    for name, value in ref.state_dict().items():
        assert torch.equal(scratch.state_dict()[name], value)
        assert torch.equal(back.state_dict()[name], value)
        assert back.state_dict()[name].data_ptr() != value.data_ptr()  # a copy, not shared
    x = torch.randn(B, T, I, dtype=torch.float64)
    torch.testing.assert_close(back(x)[0], ref(x)[0], rtol=0, atol=0)
    torch.testing.assert_close(scratch(x)[0], ref(x)[0], rtol=0, atol=ATOL)


def test_from_torch_refuses_the_wrong_module():
    with pytest.raises(TypeError, match="nn.GRU|GRU"):
        cells.GRU.from_torch(nn.LSTM(2, 3))
    with pytest.raises(ValueError, match="proj_size"):
        cells.LSTM.from_torch(nn.LSTM(2, 3, proj_size=2))


@pytest.mark.parametrize("kind", list(KINDS))
def test_dropout_between_layers_matches_torch(kind):
    ref, scratch = make_pair(kind, num_layers=3, dropout=0.5)
    x, _ = make_inputs(kind, 3, False, False, with_state=False)
    # Eval mode: dropout is off, both must equal each other exactly as without dropout.
    ref.eval()
    scratch.eval()
    torch.testing.assert_close(scratch(x)[0], ref(x)[0], rtol=0, atol=ATOL)
    # Train mode with p=1 is deterministic: every layer but the first sees zeros, the last
    # layer's output is not dropped. A different placement would change the result.
    ref, scratch = make_pair(kind, num_layers=3, dropout=1.0)
    ref.train()
    scratch.train()
    out_ref, h_ref = ref(x)
    out, h = scratch(x)
    assert out.abs().sum() > 0
    torch.testing.assert_close(out, out_ref, rtol=0, atol=ATOL)
    for s, s_ref in zip(_flat_state(h), _flat_state(h_ref), strict=True):
        torch.testing.assert_close(s, s_ref, rtol=0, atol=ATOL)


def test_dropout_is_random_in_training_and_off_in_eval():
    _, scratch = make_pair("gru", num_layers=2, dropout=0.5)
    x, _ = make_inputs("gru", 2, False, False, with_state=False)
    scratch.train()
    first, second = scratch(x)[0], scratch(x)[0]
    assert not torch.allclose(first, second)
    scratch.eval()
    torch.testing.assert_close(scratch(x)[0], scratch(x)[0], rtol=0, atol=0)


def test_bad_shapes_and_arguments_raise_like_torch():
    rnn = cells.RNN(I, H, num_layers=2)
    with pytest.raises(RuntimeError, match="input_size"):
        rnn(torch.randn(T, B, I + 1))
    with pytest.raises(RuntimeError, match="hidden size"):
        rnn(torch.randn(T, B, I), torch.zeros(1, B, H))
    with pytest.raises(ValueError, match="nonlinearity"):
        cells.RNN(I, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="dropout"):
        cells.GRU(I, H, dropout=1.5)
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        cells.LSTM(I, H, dropout=0.5)


def test_cell_functions_equal_torch_cells():
    torch.manual_seed(0)
    x, h, c = (torch.randn(B, n, dtype=torch.float64) for n in (I, H, H))
    for nonlinearity in ["tanh", "relu"]:
        ref = nn.RNNCell(I, H, nonlinearity=nonlinearity, dtype=torch.float64)
        w = (ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh)
        torch.testing.assert_close(
            cells.rnn_cell(x, h, *w, nonlinearity=nonlinearity), ref(x, h), rtol=0, atol=ATOL
        )
    ref = nn.GRUCell(I, H, dtype=torch.float64)
    w = (ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh)
    torch.testing.assert_close(cells.gru_cell(x, h, *w), ref(x, h), rtol=0, atol=ATOL)
    ref = nn.LSTMCell(I, H, dtype=torch.float64)
    w = (ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh)
    for got, want in zip(cells.lstm_cell(x, (h, c), *w), ref(x, (h, c)), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
