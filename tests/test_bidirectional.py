"""A bidirectional language model sees the character it must predict: the leak, demonstrated."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rnnlab.cli import main
from rnnlab.model import RNNLM, ModelConfig
from rnnlab.training import TrainConfig, lm_trainer

V = 8


def train_on_random_text(tmp_path, bidirectional: bool) -> tuple[RNNLM, torch.Tensor]:
    # Uniform random characters: no causal model can do better than ln V per character.
    ids = torch.randint(V, (6000,), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    torch.manual_seed(0)
    model = RNNLM(V, ModelConfig(cell="gru", hidden=32, dropout=0.0, bidirectional=bidirectional))
    cfg = TrainConfig(batch_size=16, num_steps=16, sampling="random", epochs=4, lr=0.01)
    lm_trainer(
        model, cfg, ids[:5000], ids[5000:], tmp_path, {}, progress=False, log=lambda s: None
    ).fit()
    return model.eval(), ids[5000:5400]


@torch.no_grad()
def prefix_only_loss(model: RNNLM, ids: torch.Tensor) -> float:
    """The loss when each prediction sees only the past, as it does during generation."""
    total = 0.0
    for t in range(1, 100):
        logits, _ = model(ids[:t].long().view(1, -1))
        total += F.cross_entropy(logits[0, -1:], ids[t : t + 1].long()).item()
    return total / 99


@torch.no_grad()
def teacher_forced_loss(model: RNNLM, ids: torch.Tensor) -> float:
    logits, _ = model(ids[:100].long().view(1, -1))
    return F.cross_entropy(logits[0, :-1], ids[1:100].long()).item()


def test_bidirectional_leak(tmp_path):
    causal, held_out = train_on_random_text(tmp_path / "c", bidirectional=False)
    leaky, _ = train_on_random_text(tmp_path / "b", bidirectional=True)
    # The unidirectional model is honest: about ln V either way.
    assert abs(teacher_forced_loss(causal, held_out) - math.log(V)) < 0.15
    # The bidirectional one "predicts" unpredictable text by reading the answer ...
    assert teacher_forced_loss(leaky, held_out) < 0.5 * math.log(V)
    # ... and is no better than a uniform guess once the future is hidden, as in generation.
    assert prefix_only_loss(leaky, held_out) > math.log(V)


def test_training_a_bidirectional_lm_warns(tmp_path, capsys):
    f = tmp_path / "t.txt"
    f.write_text("abcdefgh" * 100)
    args = [
        "train",
        "--corpus",
        str(f),
        "--out",
        str(tmp_path / "r"),
        "--bidirectional",
        "--hidden",
        "8",
        "--batch-size",
        "4",
        "--num-steps",
        "8",
        "--epochs",
        "1",
        "--quiet",
    ]
    assert main(args) == 0
    assert "warning: --bidirectional" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "r"), "--prefix", "abc"]) == 0
    assert "warning: --bidirectional" in capsys.readouterr().err
