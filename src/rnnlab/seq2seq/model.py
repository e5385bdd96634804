"""A character encoder-decoder: an encoder RNN reads a word, a decoder RNN writes another.

The encoder (embedding -> RNN) reads the padded source; its final state, taken at each row's true
last character, is the decoder's initial state (d2l 10.7). The decoder (embedding -> RNN -> Linear
on every step) is trained with teacher forcing: it reads <bos> y_1 .. y_n and predicts
y_1 .. y_n <eos>, and the loss is the mean cross-entropy over the target symbols that exist, so
padding never counts. At inference it starts from <bos> and feeds back its own choices (greedy,
sampling or beam search from `rnnlab.decoding`, see `rnnlab.seq2seq.evaluate`) until <eos> or a
length limit.

Letters used in shape comments:
    B  pairs per batch          S  source length (padded)      T  target length + 1 (padded)
    V  vocabulary size          E  embedding size              H  hidden units    L  layers

Padding is made harmless, not merely unlikely to matter: the encoder reads a packed sequence
(`pack_padded_sequence`), so pad positions never enter its state; decoder positions after a
target's end come after everything that counts (the RNN is causal), and the loss mask is built
from the lengths, not from the pad ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from rnnlab.errors import UsageError
from rnnlab.model import CELLS, ModelConfig, State, make_core
from rnnlab.seq2seq.pairs import Batch, PairVocab


@dataclass
class Seq2SeqConfig:
    """Shape of the encoder and the decoder (both get the same cell, width and depth)."""

    cell: str = field(default="gru", metadata={"help": "recurrent unit", "choices": CELLS})
    hidden: int = field(default=256, metadata={"help": "hidden units per layer (H)"})
    layers: int = field(default=1, metadata={"help": "stacked recurrent layers (L)"})
    embed: int = field(default=32, metadata={"help": "character embedding size (E)"})
    dropout: float = field(
        default=0.0,
        metadata={"help": "dropout between recurrent layers and before the output layer"},
    )

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise UsageError(f"unknown cell {self.cell!r}: use one of {', '.join(CELLS)}")
        for name in ("hidden", "layers", "embed"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout}")

    def core_config(self) -> ModelConfig:
        """The recurrent core as the language model describes it: PyTorch's own module, since
        the encoder reads packed sequences, which only nn.RNN/GRU/LSTM accept."""
        return ModelConfig(
            cell=self.cell,
            hidden=self.hidden,
            layers=self.layers,
            dropout=self.dropout,
            embed=self.embed,
            impl="torch",
        )


class Encoder(nn.Module):
    """Embedding -> RNN over the source; its job is to leave the whole word in the final state."""

    def __init__(self, vocab_size: int, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, config.embed, padding_idx=PairVocab.pad)
        self.rnn = make_core(config.core_config(), config.embed)

    def forward(self, src: torch.Tensor, src_len: torch.Tensor) -> State:
        """The state after each row's last real character: (L, B, H) or the LSTM pair."""
        emb = self.embedding(src)  # (B, S, E)
        # Packing runs each row only over its own length; the state comes back in batch order.
        # (The lengths are read on the CPU: `Batch.to` leaves them there.)
        packed = pack_padded_sequence(emb, src_len.cpu(), batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)
        return state


class Decoder(nn.Module):
    """Embedding -> RNN -> Linear on every step, started from the encoder's final state."""

    def __init__(self, vocab_size: int, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, config.embed, padding_idx=PairVocab.pad)
        self.rnn = make_core(config.core_config(), config.embed)
        self.drop = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.hidden, vocab_size)

    def forward(self, Y_in: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """(B, T) input ids and a state -> (B, T, V) logits and the new state."""
        outputs, state = self.rnn(self.embedding(Y_in), state)  # (B, T, H)
        return self.output(self.drop(outputs)), state  # (B, T, V)


class Seq2Seq(nn.Module):
    """Encoder and decoder over one shared character vocabulary."""

    def __init__(self, vocab_size: int, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.config = config
        self.encoder = Encoder(vocab_size, config)
        self.decoder = Decoder(vocab_size, config)

    @property
    def device(self) -> torch.device:
        """Where the weights are: batches and start tokens are put there."""
        return self.decoder.output.weight.device

    def forward(
        self,
        batch: Batch,
        teacher_forcing: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) for every target position of a batch.

        With teacher_forcing 1 the decoder reads the true targets in one call. Below 1 it runs
        step by step, and each row reads the true previous symbol with that probability, else
        its own greedy guess (what it will have to do at inference).
        """
        state = self.encoder(batch.src, batch.src_len)
        if teacher_forcing >= 1.0:
            logits, _ = self.decoder(batch.tgt_in, state)  # (B, T, V)
            return logits
        B, T = batch.tgt_in.shape
        # Every coin flip at once, from the CPU generator (the same draws on every device, and
        # the generator a checkpoint saves), then one copy to the device. Drawn row after row,
        # they are exactly the draws of one rand(B) per step.
        forced = torch.rand(T - 1, B, generator=generator) < teacher_forcing  # (T-1, B)
        forced = forced.to(batch.tgt_in.device)
        ids = batch.tgt_in[:, 0]  # (B,) <bos>
        steps = []
        for t in range(T):
            step_logits, state = self.decoder(ids[:, None], state)  # (B, 1, V)
            steps.append(step_logits)
            if t + 1 < T:
                guess = step_logits[:, 0].argmax(dim=-1)
                ids = torch.where(forced[t], batch.tgt_in[:, t + 1], guess)
        return torch.cat(steps, dim=1)  # (B, T, V)


def masked_nll(logits: torch.Tensor, Y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over the positions where `mask` is True (pad positions weigh 0).

    Shapes:
        logits: (B, T, V); Y, mask: (B, T)
    """
    nll = F.cross_entropy(logits.flatten(0, 1), Y.flatten(), reduction="none")  # (B*T,)
    return (nll * mask.flatten().to(nll.dtype)).sum()


def masked_loss(
    model: Seq2Seq,
    batch: Batch,
    teacher_forcing: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean cross-entropy per real target symbol (<eos> included, padding excluded)."""
    logits = model(batch, teacher_forcing, generator)  # (B, T, V)
    mask = batch.mask
    return masked_nll(logits, batch.tgt_out, mask) / mask.sum()
