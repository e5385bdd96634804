"""A simple recurrent network and its hand-written backward pass, in numpy only.

Why numpy: with no autograd in sight, every gradient below is a line a student can read and check
against the chain rule (d2l section 9.7, "Backpropagation Through Time"). The tests then hold this
module to PyTorch's autograd in float64, so the two explanations of BPTT cannot drift apart.
This module must never import torch; a test checks that.

Conventions:
    - Weights use PyTorch's orientation, ``(out_features, in_features)``, so a weight copied from
      ``nn.RNN``/``nn.Linear`` is used as is: ``W_xh: (H, D)``, ``W_hh: (H, H)``, ``W_hy: (V, H)``.
      ``nn.RNN`` has two biases; their sum is our single ``b_h``.
    - Sequences are batch-first, ``X: (B, T, D)``, like the rest of rnnlab. ``srn_forward`` also
      takes an unbatched ``(T, D)`` sequence, which is how the worked example is written.
    - Parameters travel as a plain ``dict`` keyed by ``PARAM_NAMES``; gradients use the same keys.

Letters: B batch, T time steps, D input size, H hidden size, V output size (vocabulary).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARAM_NAMES = ("W_xh", "W_hh", "b_h", "W_hy", "b_y")
ACTIVATIONS = ("identity", "tanh")

Params = dict[str, np.ndarray]


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def init_params(
    input_size: int, hidden_size: int, output_size: int, seed: int = 0, dtype=np.float64
) -> Params:
    """Random parameters drawn like PyTorch's defaults: uniform(-1/sqrt(fan), 1/sqrt(fan)).

    The recurrent layer uses fan = H (as ``nn.RNN``), the output layer fan = H (as ``nn.Linear``).
    """
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(hidden_size)

    def u(*shape: int) -> np.ndarray:
        return rng.uniform(-k, k, size=shape).astype(dtype)

    return {
        "W_xh": u(hidden_size, input_size),
        "W_hh": u(hidden_size, hidden_size),
        "b_h": u(hidden_size),
        "W_hy": u(output_size, hidden_size),
        "b_y": u(output_size),
    }


def srn_forward(
    X: np.ndarray, params: Params, h0: np.ndarray | None = None, activation: str = "tanh"
) -> tuple[np.ndarray, np.ndarray]:
    """Run the simple recurrent network over a sequence and keep every step.

    ``h_t = f(W_xh x_t + W_hh h_{t-1} + b_h)`` and ``y_t = W_hy h_t + b_y``, with f the identity or
    tanh. Keeping all states (not only the last) is what BPTT and the step-by-step demo need.

    Args:
        X: inputs, ``(T, D)`` for one sequence or ``(B, T, D)`` for a batch.
        params: the five arrays named in ``PARAM_NAMES``.
        h0: initial state, ``(H,)`` or ``(B, H)``; zeros when None.
        activation: "identity" or "tanh".

    Returns:
        ``(states, outputs)``: ``(T, H)`` and ``(T, V)``, or ``(B, T, H)`` and ``(B, T, V)``.
    """
    _check_activation(activation)
    X = np.asarray(X)
    unbatched = X.ndim == 2
    if unbatched:
        X = X[None]  # (1, T, D)
        h0 = None if h0 is None else np.asarray(h0)[None]
    B, T, _ = X.shape
    H_size = params["W_hh"].shape[0]
    dtype = np.result_type(X.dtype, params["W_hh"].dtype)  # integer inputs still give float states
    h = np.zeros((B, H_size), dtype=dtype) if h0 is None else np.asarray(h0)  # (B, H)

    states = []
    for t in range(T):
        a = X[:, t] @ params["W_xh"].T + h @ params["W_hh"].T + params["b_h"]  # (B, H)
        h = np.tanh(a) if activation == "tanh" else a
        states.append(h)
    H = np.stack(states, axis=1)  # (B, T, H)
    Y = H @ params["W_hy"].T + params["b_y"]  # (B, T, V)
    if unbatched:
        return H[0], Y[0]
    return H, Y


def worked_example_params() -> Params:
    """The course's worked example: input, hidden and output size 2, every weight 1, biases 0."""
    ones = np.ones((2, 2))
    return {
        "W_xh": ones.copy(),
        "W_hh": ones.copy(),
        "b_h": np.zeros(2),
        "W_hy": ones.copy(),
        "b_y": np.zeros(2),
    }


def worked_example_inputs() -> np.ndarray:
    """The worked example's three inputs ``[1,1], [1,1], [2,2]`` as a ``(T, D) = (3, 2)`` array."""
    return np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]])


def worked_example(activation: str = "identity") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the worked example from a zero state.

    With the identity the numbers can be checked by hand: states [2,2], [6,6], [16,16] and
    outputs [4,4], [12,12], [32,32] (each state is 2*x_t plus twice the sum of the old state).

    Returns:
        ``(X, states, outputs)``, each ``(3, 2)``.
    """
    X = worked_example_inputs()
    states, outputs = srn_forward(X, worked_example_params(), activation=activation)
    return X, states, outputs


def one_hot(ids: np.ndarray, num_classes: int, dtype=np.float64) -> np.ndarray:
    """``(B, T)`` integer ids -> ``(B, T, num_classes)`` one-hot rows, the LM's usual input."""
    return np.eye(num_classes, dtype=dtype)[np.asarray(ids)]


def softmax_cross_entropy(logits: np.ndarray, Y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy over all B*T predictions, and its gradient with respect to the logits.

    Averaging over B*T (not summing over T) matches ``F.cross_entropy`` on the flattened logits,
    so the loss, and therefore the gradients, do not grow with the window length.

    Args:
        logits: ``(B, T, V)``.
        Y: ``(B, T)`` integer targets.

    Returns:
        ``(loss, dlogits)`` with ``dlogits: (B, T, V)``.
    """
    B, T, V = logits.shape
    shifted = logits - logits.max(axis=-1, keepdims=True)  # subtracting the max avoids overflow
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # (B, T, V)
    Y = np.asarray(Y)
    picked = np.take_along_axis(log_probs, Y[..., None], axis=-1)[..., 0]  # (B, T)
    loss = -picked.mean()
    # d(-log softmax_y)/dlogits = softmax - onehot(y); the 1/(B*T) comes from the mean.
    dlogits = np.exp(log_probs)
    dlogits[np.arange(B)[:, None], np.arange(T)[None, :], Y] -= 1.0
    return float(loss), dlogits / (B * T)


@dataclass
class BPTTResult:
    """Everything one forward + backward pass over a window produces.

    Attributes:
        loss: mean cross-entropy over the B*T predictions.
        grads: gradients keyed like ``PARAM_NAMES``, each shaped like its parameter.
        dh0: ``(B, H)`` gradient with respect to the initial state.
        dh_norms: ``(T,)`` Frobenius norm over the batch of the full gradient dL/dh_t (from the
            output at t and from every later step); plotted against t it shows gradients
            vanishing (or exploding) as they travel back in time.
        states: ``(B, T, H)`` hidden states; ``states[:, -1]`` is the state to carry into the
            next window.
        logits: ``(B, T, V)``.
    """

    loss: float
    grads: Params
    dh0: np.ndarray
    dh_norms: np.ndarray
    states: np.ndarray
    logits: np.ndarray


def bptt(
    X: np.ndarray,
    Y: np.ndarray,
    params: Params,
    h0: np.ndarray | None = None,
    activation: str = "tanh",
) -> BPTTResult:
    """Loss and exact gradients of an RNN language model over one window, by hand.

    Model: ``h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h)``, ``logits_t = W_hy h_t + b_y``, and the
    loss is the softmax cross-entropy of every step averaged over B*T.

    Truncation: the window given is the whole graph. ``h0`` is treated as a constant input, so
    gradients stop there (we still report dL/dh0, for testing). Truncated BPTT over a long text
    is this function called on consecutive windows, passing ``states[:, -1]`` as the next h0:
    the numpy equivalent of ``h.detach()`` in the torch training loop.

    Args:
        X: ``(B, T, D)`` inputs, one-hot (see ``one_hot``) or dense.
        Y: ``(B, T)`` integer targets.
        params: the five arrays named in ``PARAM_NAMES``.
        h0: ``(B, H)`` initial state; zeros when None.
        activation: "tanh" (the vanilla RNN) or "identity".

    Returns:
        A ``BPTTResult``.
    """
    _check_activation(activation)
    X = np.asarray(X)
    B, T, _ = X.shape
    W_hh, W_hy = params["W_hh"], params["W_hy"]
    if h0 is None:
        h0 = np.zeros((B, W_hh.shape[0]), dtype=X.dtype)
    H, logits = srn_forward(X, params, h0=h0, activation=activation)  # (B, T, H), (B, T, V)
    loss, dlogits = softmax_cross_entropy(logits, Y)  # dlogits: (B, T, V)

    # The output layer is applied independently at every step: sum its gradients over B and T.
    grads = {name: np.zeros_like(params[name]) for name in PARAM_NAMES}
    grads["W_hy"] = np.einsum("btv,bth->vh", dlogits, H)
    grads["b_y"] = dlogits.sum(axis=(0, 1))

    dh_norms = np.zeros(T, dtype=X.dtype)
    dh_next = np.zeros_like(h0)  # dL/dh_t arriving from step t+1; nothing comes after the window
    for t in reversed(range(T)):
        dh = dlogits[:, t] @ W_hy + dh_next  # (B, H): from the output at t and from the future
        dh_norms[t] = np.linalg.norm(dh)
        # Through the nonlinearity: tanh'(a) = 1 - tanh(a)^2, which is where gradients shrink.
        da = dh * (1.0 - H[:, t] ** 2) if activation == "tanh" else dh  # (B, H)
        h_prev = H[:, t - 1] if t > 0 else h0  # (B, H)
        # The same weights act at every step, so their gradient is the sum over steps.
        grads["W_xh"] += da.T @ X[:, t]
        grads["W_hh"] += da.T @ h_prev
        grads["b_h"] += da.sum(axis=0)
        dh_next = da @ W_hh  # (B, H): send the gradient one step back in time
    return BPTTResult(
        loss=loss, grads=grads, dh0=dh_next, dh_norms=dh_norms, states=H, logits=logits
    )


def clip_grads(grads: Params, max_norm: float) -> tuple[Params, float]:
    """Scale all gradients together so their global L2 norm is at most ``max_norm``.

    Same rule as ``torch.nn.utils.clip_grad_norm_``: the norm is taken over all gradients as one
    vector, the scale is ``min(1, max_norm / (norm + 1e-6))``, and the pre-clip norm is returned
    (worth logging: a spike says an exploding gradient was just cut). Scaling everything by one
    factor keeps the step's direction, unlike clipping each entry.

    Returns:
        ``(clipped, total_norm)``; ``clipped`` holds new arrays, ``grads`` is left untouched.
    """
    total_norm = float(np.sqrt(sum(float(np.sum(g * g)) for g in grads.values())))
    scale = min(1.0, max_norm / (total_norm + 1e-6))
    return {name: g * scale for name, g in grads.items()}, total_norm
