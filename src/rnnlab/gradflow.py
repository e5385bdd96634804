"""How far back a gradient reaches: the norm of dL/dh_t against the distance to the loss.

Backpropagation through time multiplies one Jacobian per step. For a plain tanh RNN those factors
are usually smaller than one, so the gradient of a loss at step T with respect to the state T - k
steps earlier shrinks roughly geometrically in k (vanishing gradients) or, with large recurrent
weights, grows (exploding: the reason for gradient clipping). Gated cells (GRU, LSTM) *can* copy
their state almost unchanged through the gates, but whether a trained model does depends on what
its gates learned: `rnnlab demo bptt` measures it rather than assuming it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rnnlab.model import RNNLM, eval_mode


def gradflow_windows(
    ids: torch.Tensor, num_steps: int, count: int = 32, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`count` windows of `num_steps` inputs and their targets, at starts drawn from `seed`.

    The same seed gives the same windows, so curves measured on them compare models only.
    Returns None when the text is too short for one window and its target.

    Shapes:
        ids: (N,) ids of one text. Returns X, Y: (count, num_steps) int64.
    """
    if len(ids) < num_steps + 2:
        return None
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(len(ids) - num_steps - 1, (count,), generator=gen)
    idx = starts[:, None] + torch.arange(num_steps)  # (B, T)
    return ids[idx].long(), ids[idx + 1].long()


def hidden_grad_norms(model: RNNLM, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ||dL/dh_t|| for the loss of the last prediction only.

    The sequence runs one step at a time so that every intermediate state is a node of the graph
    whose gradient can be read; h_t is the whole state after input t (all layers; for an LSTM
    h and c concatenated), and the loss is the prediction made after input T-1.

    Shapes:
        X, Y: (B, T) ids. Returns (T-1,): entry k-1 is the norm for the state k steps back,
        i.e. h_{T-1-k}, the state that entered the step k inputs before the prediction.
    """
    with eval_mode(model):  # no dropout: measure the network, not the noise
        state = model.begin_state(X.shape[0])
        kept = []
        logits = None
        for t in range(X.shape[1]):
            logits, state = model(X[:, t : t + 1], state)  # (B, 1, V)
            if t < X.shape[1] - 1:  # the final state feeds nothing the loss sees
                parts = state if isinstance(state, tuple) else (state,)
                for s in parts:
                    s.retain_grad()
                kept.append(parts)
        assert logits is not None
        loss = F.cross_entropy(logits[:, -1], Y[:, -1])  # the prediction after the last input
        loss.backward()
        norms = []
        for parts in kept:
            # Each state is (L*D, B, H); per row, the norm over every layer and part of the state.
            g = torch.cat([s.grad.transpose(0, 1).reshape(X.shape[0], -1) for s in parts], dim=1)
            norms.append(g.norm(dim=1).mean())
        model.zero_grad(set_to_none=True)
        return torch.stack(norms).flip(0).detach()  # (T-1,) index k-1 = k steps back
