"""Make a tiny character language model memorise one sentence, then recite it.

Training is next-character prediction: the input is the sentence without its last character,
the target the sentence without its first (teacher forcing: the true previous character is fed
at every step). Reciting is different: we give only the first character and feed each
prediction back in, carrying the state from step to step (greedy decoding). It succeeds only if
the state has learned where in the sentence it is; "o" is followed by ",", "w" and "u", and only
the state can tell which.

Run: python examples/memorize_sentence.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SENTENCE = "Hello, how are you?"


class CharRNN(nn.Module):
    """ids -> embedding -> one-layer RNN -> scores over the vocabulary at every step."""

    def __init__(self, vocab_size: int, embed_size: int = 16, num_hiddens: int = 64) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.RNN(embed_size, num_hiddens, batch_first=True)
        self.readout = nn.Linear(num_hiddens, vocab_size)

    def forward(
        self, X: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.embedding(X)  # (B, T, E)
        H, state = self.rnn(emb, state)  # (B, T, H), (1, B, H)
        return self.readout(H), state  # (B, T, V)


def recite(model: CharRNN, chars: list[str], prefix: str, num_preds: int) -> str:
    """Greedy decoding: read ``prefix``, then feed each prediction back in ``num_preds`` times."""
    ids = [chars.index(c) for c in prefix]
    with torch.no_grad():
        logits, state = model(torch.tensor([ids]))  # the prefix sets the state
        out = list(prefix)
        for _ in range(num_preds):
            next_id = int(logits[0, -1].argmax())
            out.append(chars[next_id])
            # Only the new character goes in; the state carries everything before it.
            logits, state = model(torch.tensor([[next_id]]), state)
    return "".join(out)


def main(seed: int = 0, num_epochs: int = 200, lr: float = 0.01) -> dict:
    """Train on the sentence and return ``{"text", "target", "loss", "epochs"}``."""
    torch.manual_seed(seed)
    chars = sorted(set(SENTENCE))
    ids = torch.tensor([[chars.index(c) for c in SENTENCE]])  # (1, T+1)
    X, Y = ids[:, :-1], ids[:, 1:]  # (1, T) each: predict every next character
    model = CharRNN(len(chars))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(num_epochs):
        logits, _ = model(X)  # (1, T, V)
        loss = F.cross_entropy(logits.reshape(-1, len(chars)), Y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    text = recite(model, chars, SENTENCE[0], num_preds=len(SENTENCE) - 1)
    return {"text": text, "target": SENTENCE, "loss": loss.item(), "epochs": num_epochs}


if __name__ == "__main__":
    result = main()
    print(f"recited: {result['text']!r}")
    print(f"target : {result['target']!r}  (final training loss {result['loss']:.4f})")
