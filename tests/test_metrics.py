"""One metric function, checked against a naive per-character loop."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rnnlab.metrics import evaluate, metrics_from_nll
from rnnlab.model import RNNLM, ModelConfig


def naive_nll(model: RNNLM, ids: torch.Tensor) -> float:
    """Feed one character at a time, carrying the state, summing -log p(next)."""
    state = model.begin_state(1)
    total = 0.0
    with torch.no_grad():
        for t in range(len(ids) - 1):
            logits, state = model(ids[t : t + 1].long().view(1, 1), state)
            total -= F.log_softmax(logits[0, 0].double(), -1)[int(ids[t + 1])].item()
    return total


def test_evaluate_matches_per_character_loop():
    torch.manual_seed(0)
    model = RNNLM(9, ModelConfig(cell="lstm", hidden=16, layers=2)).eval()
    ids = torch.randint(9, (301,), dtype=torch.int32)
    m = evaluate(model, ids, chunk=37)
    total = naive_nll(model, ids)
    assert m.chars == 300
    assert abs(m.loss - total / 300) < 1e-6
    assert abs(m.ppl - math.exp(total / 300)) < 1e-6
    assert abs(m.bpc - total / 300 / math.log(2)) < 1e-6


def test_evaluate_in_parallel_rows_is_close_to_one_stream():
    torch.manual_seed(0)
    model = RNNLM(9, ModelConfig(cell="gru", hidden=16)).eval()
    ids = torch.randint(9, (2001,))
    one = evaluate(model, ids)
    four = evaluate(model, ids, rows=4)
    assert four.chars == 2000 and abs(one.loss - four.loss) < 0.01


def test_metrics_from_nll_and_overflow():
    m = metrics_from_nll(math.log(4) * 10, 10)
    assert abs(m.ppl - 4) < 1e-12 and abs(m.bpc - 2) < 1e-12
    assert metrics_from_nll(1e6, 1).ppl == math.inf
