"""The language model: output on every step, zero begin state, initial loss near ln|V|."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rnnlab.errors import UsageError
from rnnlab.model import RNNLM, ModelConfig, detach_state, forward_check


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_forward_check_every_cell(cell, layers):
    torch.manual_seed(0)
    V, B, T = 28, 4, 9
    model = RNNLM(V, ModelConfig(cell=cell, hidden=32, layers=layers))
    X = torch.randint(V, (B, T))
    Y = torch.randint(V, (B, T))
    result = forward_check(model, X, Y)
    assert result["ok"], result
    assert result["logits_shape"] == (B, T, V)
    assert abs(result["loss"] - math.log(V)) < 0.2


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_begin_state_structure(cell):
    model = RNNLM(10, ModelConfig(cell=cell, hidden=8, layers=3))
    state = model.begin_state(5)
    states = state if cell == "lstm" else (state,)
    assert len(states) == (2 if cell == "lstm" else 1)
    for s in states:
        assert s.shape == (3, 5, 8) and not s.any()


def test_output_layer_applies_to_every_time_step():
    torch.manual_seed(0)
    model = RNNLM(12, ModelConfig(cell="gru", hidden=16, dropout=0.0)).eval()
    X = torch.randint(12, (2, 6))
    logits, _ = model(X)
    outputs, _ = model.rnn(model.inputs(X))
    for t in range(6):
        assert torch.allclose(logits[:, t], model.output(outputs[:, t]))


def test_carrying_state_equals_one_long_call():
    torch.manual_seed(0)
    model = RNNLM(12, ModelConfig(cell="lstm", hidden=16, dropout=0.0)).eval()
    X = torch.randint(12, (3, 10))
    whole, _ = model(X)
    first, state = model(X[:, :4])
    second, _ = model(X[:, 4:], state)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-6)


def test_one_hot_and_embedding_inputs():
    assert RNNLM(28, ModelConfig()).embed_size == 0  # small vocabulary: one-hot, as in d2l
    assert RNNLM(28, ModelConfig(embed=16)).inputs(torch.zeros(1, 2, dtype=torch.long)).shape == (
        1,
        2,
        16,
    )
    big = RNNLM(5000, ModelConfig(hidden=8))
    assert big.embed_size > 0  # Chinese-sized vocabularies are never one-hot by default


def test_one_hot_input_is_the_identity_of_ids():
    model = RNNLM(5, ModelConfig(embed=0, hidden=4))
    X = torch.tensor([[0, 3, 4]])
    assert torch.equal(model.inputs(X)[0], F.one_hot(X[0], 5).float())


def test_detach_state_handles_tensor_and_pair():
    h = torch.ones(1, 2, 3, requires_grad=True) * 2
    assert detach_state(h).grad_fn is None
    pair = detach_state((h, h * 3))
    assert all(s.grad_fn is None for s in pair) and torch.equal(pair[1], h * 3)


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"hidden": 0}, "--hidden"),
        ({"layers": 0}, "--layers"),
        ({"cell": "transformer"}, "cell"),
        ({"dropout": 1.0}, "--dropout"),
    ],
)
def test_model_config_validation(kwargs, flag):
    with pytest.raises(UsageError, match=flag):
        ModelConfig(**kwargs)


def test_read_streams_a_long_input_and_matches_one_call():
    torch.manual_seed(0)
    model = RNNLM(9, ModelConfig(cell="lstm", hidden=8)).eval()
    X = torch.randint(9, (2, 50))
    logits, state = model(X)
    last, state2 = model.read(X, chunk=7)
    assert torch.allclose(last, logits[:, -1], atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(state, state2, strict=True))
