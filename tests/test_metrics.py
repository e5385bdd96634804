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


def test_parallel_rows_score_every_prediction_once_from_their_own_start():
    """Without warm-up each row is a cold-started stream over its own part: the sum of the
    per-character loop over the parts (3 rows, 301 predictions: parts of 101, 101 and 99)."""
    torch.manual_seed(0)
    model = RNNLM(9, ModelConfig(cell="gru", hidden=16)).eval()
    ids = torch.randint(9, (302,))
    m = evaluate(model, ids, chunk=29, rows=3, warmup=0)
    parts = [ids[0:102], ids[101:203], ids[202:302]]
    total = sum(naive_nll(model, p) for p in parts)
    assert m.chars == 301
    assert abs(m.loss - total / 301) < 1e-6


def test_parallel_rows_with_warmup_equal_one_stream():
    """Warm-up hands each row the recent context: the figure equals the exact stream's."""
    torch.manual_seed(0)
    model = RNNLM(9, ModelConfig(cell="lstm", hidden=16, layers=2)).eval()
    ids = torch.randint(9, (3001,))
    one = evaluate(model, ids)
    cold = evaluate(model, ids, rows=16, warmup=0)
    warm = evaluate(model, ids, rows=16, warmup=64)
    assert warm.chars == cold.chars == one.chars == 3000
    assert abs(warm.loss - one.loss) < 1e-6
    assert abs(cold.loss - one.loss) > 10 * abs(warm.loss - one.loss)  # warm-up matters


def test_short_text_falls_back_to_one_stream():
    torch.manual_seed(0)
    model = RNNLM(9, ModelConfig(cell="gru", hidden=16)).eval()
    ids = torch.randint(9, (100,))
    assert evaluate(model, ids, rows=16, warmup=256) == evaluate(model, ids)


def test_metrics_from_nll_and_overflow():
    m = metrics_from_nll(math.log(4) * 10, 10)
    assert abs(m.ppl - 4) < 1e-12 and abs(m.bpc - 2) < 1e-12
    assert metrics_from_nll(1e6, 1).ppl == math.inf
