"""The character language model: one-hot or embedding -> recurrent core -> Linear on every step.

Letters used in shape comments:
    B  batch size (rows)            T  time steps (num_steps)
    V  vocabulary size              E  input size (V for one-hot, else the embedding size)
    H  hidden units per layer       L  recurrent layers

The state is exactly what `nn.RNN`/`nn.GRU` take, an (L, B, H) tensor, or for `nn.LSTM` the pair
(h, c) of two such tensors, so the built-in and the from-scratch cores are interchangeable.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.errors import UsageError

CELLS = ("rnn", "gru", "lstm")
IMPLS = ("torch", "scratch", "fast")
ONE_HOT_MAX_VOCAB = 256  # above this, one-hot inputs waste memory and time: embed instead
AUTO_EMBED_SIZE = 128

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

BIDIRECTIONAL_WARNING = (
    "warning: --bidirectional language model: its backward pass reads the very characters it "
    "must predict, so its teacher-forced loss is meaningless and its generated text garbage"
)


@dataclass
class ModelConfig:
    """Shape of the network; `embed` -1 picks one-hot for small vocabularies, else an embedding."""

    cell: str = field(default="gru", metadata={"help": "recurrent unit", "choices": CELLS})
    hidden: int = field(default=256, metadata={"help": "hidden units per layer (H)"})
    layers: int = field(default=2, metadata={"help": "stacked recurrent layers (L)"})
    dropout: float = field(
        default=0.3,
        metadata={"help": "dropout between recurrent layers and before the output layer"},
    )
    embed: int = field(
        default=-1,
        metadata={
            "help": f"0: one-hot input; N: nn.Embedding of size N; -1 (auto): one-hot up to "
            f"{ONE_HOT_MAX_VOCAB} symbols, else an embedding of {AUTO_EMBED_SIZE}"
        },
    )
    bidirectional: bool = field(
        default=False,
        metadata={
            "help": "run a second recurrent pass backwards in time (leaks the future: "
            "a language model trained this way cannot generate)"
        },
    )
    impl: str = field(
        default="torch",
        metadata={
            "help": "torch: nn.RNN/GRU/LSTM; scratch: rnnlab's own cells; fast: rnnlab's fused "
            "RNN/GRU for the CPU (LSTM: nn.LSTM); all three share one weight layout",
            "choices": IMPLS,
        },
    )

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise UsageError(f"unknown cell {self.cell!r}: use one of {', '.join(CELLS)}")
        if self.impl not in IMPLS:
            raise UsageError(f"unknown impl {self.impl!r}: use one of {', '.join(IMPLS)}")
        if self.hidden < 1:
            raise UsageError(f"--hidden must be at least 1, got {self.hidden}")
        if self.layers < 1:
            raise UsageError(f"--layers must be at least 1, got {self.layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.embed < -1:
            raise UsageError(f"--embed must be -1 (auto), 0 (one-hot) or a size, got {self.embed}")

    def input_size(self, vocab_size: int) -> int:
        """E: the width of one input vector once `embed` is resolved for this vocabulary."""
        embed = self.resolved_embed(vocab_size)
        return vocab_size if embed == 0 else embed

    def resolved_embed(self, vocab_size: int) -> int:
        if self.embed >= 0:
            return self.embed
        return 0 if vocab_size <= ONE_HOT_MAX_VOCAB else AUTO_EMBED_SIZE


def make_core(config: ModelConfig, input_size: int) -> nn.Module:
    """The recurrent core: PyTorch's module or rnnlab's scratch twin with the same weights."""
    if config.impl == "torch":
        module = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[config.cell]
    elif config.impl == "fast":
        from rnnlab import fused

        # No fused LSTM: nn.LSTM already trains faster than nn.GRU on the CPU (BENCHMARKS.md).
        module = {"rnn": fused.RNN, "gru": fused.GRU, "lstm": nn.LSTM}[config.cell]
    else:
        from rnnlab import cells

        module = {"rnn": cells.RNN, "gru": cells.GRU, "lstm": cells.LSTM}[config.cell]
    dropout = config.dropout if config.layers > 1 else 0.0  # torch warns on 1-layer dropout
    return module(
        input_size,
        config.hidden,
        config.layers,
        batch_first=True,
        dropout=dropout,
        bidirectional=config.bidirectional,
    )


class RNNLM(nn.Module):
    """A recurrent language model that predicts the next character at every time step."""

    def __init__(self, vocab_size: int, config: ModelConfig) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.config = config
        self.embed_size = config.resolved_embed(vocab_size)
        if self.embed_size > 0:
            self.embedding = nn.Embedding(vocab_size, self.embed_size)
        else:  # not saved with the weights: it is the same for every model of this vocabulary
            self.register_buffer("_eye", torch.eye(vocab_size), persistent=False)
        self.rnn = make_core(config, config.input_size(vocab_size))
        self.drop = nn.Dropout(config.dropout)
        self.num_directions = 2 if config.bidirectional else 1
        self.output = nn.Linear(config.hidden * self.num_directions, vocab_size)

    def inputs(self, X: torch.Tensor) -> torch.Tensor:
        """Ids (B, T) to input vectors (B, T, E)."""
        if self.embed_size > 0:
            return self.embedding(X)  # (B, T, E)
        # Rows of an identity matrix: one indexing kernel, where F.one_hot also scans the ids
        # for their range on every call (it shows at batch 1, one step at a time).
        # The buffer follows the model through .to() and .double().
        return self._eye[X]  # (B, T, V)

    def forward(self, X: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Logits for every position: (B, T) ids -> (B, T, V) logits and the final state."""
        if state is None:
            state = self.begin_state(X.shape[0])
        outputs, state = self.rnn(self.inputs(X), state)  # (B, T, D*H), D = directions
        if self.training:  # (in eval mode dropout is the identity: skip the call)
            outputs = self.drop(outputs)
        return self.output(outputs), state  # (B, T, V)

    def read(
        self, X: torch.Tensor, state: State | None = None, chunk: int = 4096
    ) -> tuple[torch.Tensor, State]:
        """Run a long input in chunks and return only the last step's logits: (B, V), state.

        Memory stays bounded by the chunk whatever the length, because the (B, T, V) logits of
        a whole prefix are never materialised.
        """
        if state is None:
            state = self.begin_state(X.shape[0])
        for piece in X.split(chunk, dim=1):
            outputs, state = self.rnn(self.inputs(piece), state)  # (B, t, D*H)
        return self.output(self.drop(outputs[:, -1])), state  # (B, V)

    def begin_state(self, batch_size: int) -> State:
        """The zero state: (L*D, B, H), or the (h, c) pair for an LSTM (D = 2 if bidirectional)."""
        p = self.output.weight
        shape = (self.config.layers * self.num_directions, batch_size, self.config.hidden)
        h = torch.zeros(shape, dtype=p.dtype, device=p.device)
        if self.config.cell == "lstm":
            return h, torch.zeros_like(h)
        return h


def detach_state(state: State) -> State:
    """Cut the graph at the minibatch boundary (truncated BPTT) but keep the values."""
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)  # type: ignore[return-value]
    return state.detach()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluation mode (no dropout) for a block, then the mode the model was in before."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def forward_check(model: RNNLM, X: torch.Tensor, Y: torch.Tensor) -> dict[str, Any]:
    """Shapes, zero initial state and the initial loss of an untrained model on one minibatch.

    An untrained model should be no better than a uniform guess, so its loss is about ln |V|:
    far from it means a bug in the wiring (d2l 9.5.3's check), not a bad model.
    """
    model.eval()
    B, T = X.shape
    V = model.vocab_size
    state0 = model.begin_state(B)
    states = state0 if isinstance(state0, tuple) else (state0,)
    zero = all(bool((s == 0).all()) for s in states)
    logits, state = model(X, state0)  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, V), Y.reshape(-1)).item()
    final = state if isinstance(state, tuple) else (state,)
    state_shape = " + ".join(str(tuple(s.shape)) for s in final)
    expected_state = (model.config.layers * model.num_directions, B, model.config.hidden)
    ok = (
        tuple(logits.shape) == (B, T, V)
        and all(tuple(s.shape) == expected_state for s in final)
        and zero
        and abs(loss - math.log(V)) <= 0.2
    )
    return {
        "input_shape": tuple(model.inputs(X).shape),
        "logits_shape": tuple(logits.shape),
        "state_shape": state_shape,
        "zero_state": zero,
        "loss": loss,
        "ok": ok,
    }
