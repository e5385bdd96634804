"""Fast RNN and GRU for the CPU: a layer's whole sequence in one autograd node, torch's weights.

Why it is faster than ``nn.GRU`` on a CPU: autograd records every small operation of every time
step and replays them one by one backwards, with small matrix products per step for the weight
gradients. Here each layer's pass over the T steps is one ``torch.autograd.Function`` whose
backward is written out by hand:

- the input projections of all T steps are one matrix product before the loop, and their
  weight gradient one product after it;
- each step costs one matrix product for the recurrent term plus a few element-wise kernels that
  write into preallocated buffers (``out=``): 6 per GRU step forwards, 8 backwards, using
  torch's fused derivative kernels (``tanh_backward``, ``sigmoid_backward``);
- the recurrent weight gradient is one ``(3H, T*B) @ (T*B, H)`` product instead of T small ones;
- the backward pass's gradient buffer is reused from one pass to the next (no page faults);
- the two loops are compiled with TorchScript (once, on first use), which removes Python's
  per-operation overhead; where scripting is unavailable the same code runs as Python.

What limits it (``BENCHMARKS.md`` has the measurements): the three matrix products per step
(forward, backward, weight gradient) are the same as torch's and take about half the time; the
rest is the per-step element-wise kernels, each too small to use both cores.

The modules subclass rnnlab's scratch cores (``rnnlab.cells``): same constructor, parameter
names, initialisation, layer stacking, dropout and state conventions, so a state dict moves
between ``nn.GRU``, ``cells.GRU`` and ``fused.GRU`` unchanged. The tests hold outputs, states and
every gradient equal to torch's (1e-10 in float64, 1e-5 in float32). Inference (no gradient
needed) runs the same forward loop without keeping anything for a backward pass. DropConnect
(``--weight-drop``) needs nothing of its own here: the dropped recurrent matrix is the ``w_hh``
the function receives, and autograd carries its gradient back through the mask.

Letters: T time steps, B batch, I input size, H hidden size.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnlab import cells

_local = threading.local()


def _workspace(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """A scratch buffer for one backward pass, reused by the next one of the same shape.

    A fresh multi-megabyte buffer costs a page fault per 4 KB page on first touch (measured:
    about 600 faults, 6% of a GRU training step at B=32, H=256); the backward pass's gradient
    buffer is dead once the pass returns (every returned gradient is a new tensor), so one per
    thread and shape is kept. The first dimension (time) only grows the buffer: variable-length
    windows (``--variable-window``) reuse the longest one's as a contiguous view.
    """
    cache = _local.__dict__.setdefault("buffers", {})
    key = (shape[1:], like.dtype, like.device)
    buf = cache.get(key)
    if buf is None or buf.shape[0] < shape[0]:
        if buf is None and len(cache) >= 8:  # a few shapes at a time
            cache.clear()
        buf = cache[key] = like.new_empty(shape)
    return buf[: shape[0]]


def _input_gates(X: Tensor, w_ih: Tensor, b_ih: Tensor | None) -> Tensor:
    """All T input projections in one product: ``X (T, B, I) -> (T, B, G)``."""
    T, B, I = X.shape
    X2 = X.reshape(T * B, I)
    gi = X2 @ w_ih.t() if b_ih is None else torch.addmm(b_ih, X2, w_ih.t())
    return gi.view(T, B, -1)


# -- GRU ----------------------------------------------------------------------------------------


def _gru_steps(
    GI: Tensor, Hs: Tensor, w_hh_t: Tensor, b_hn: Tensor, RZ: Tensor, HN: Tensor, N: Tensor
) -> None:
    """The forward loop: fills ``Hs[1:]``, ``RZ``, ``HN``, ``N`` (shapes as in ``gru_forward``)."""
    T, B, H = N.shape
    # One step's W_hh h, reused from step to step: it stays in cache.
    gh = torch.empty(B, 3 * H, dtype=N.dtype, device=N.device)
    for t in range(T):
        h = Hs[t]
        torch.mm(h, w_hh_t, out=gh)  # (B, 3H)
        rz = torch.add(GI[t, :, : 2 * H], gh[:, : 2 * H], out=RZ[t]).sigmoid_()  # (B, 2H)
        hn = torch.add(gh[:, 2 * H :], b_hn, out=HN[t])  # W_hn h + b_hn
        n = torch.addcmul(GI[t, :, 2 * H :], rz[:, :H], hn, out=N[t]).tanh_()
        torch.lerp(n, h, rz[:, H:], out=Hs[t + 1])  # n + z * (h - n) = (1 - z) n + z h


def _gru_steps_backward(
    d_out: Tensor, dh: Tensor, w_hh: Tensor, Hs: Tensor, RZ: Tensor, HN: Tensor, N: Tensor,
    D: Tensor,
) -> Tensor:  # fmt: skip
    """The backward loop: fills ``D (T, B, 4H)`` and returns the gradient reaching h_0.

    Per step, with ``dh`` the gradient reaching h_t, D holds [d r_pre, d z_pre, d hn, d n_pre]:
    its first three blocks are the gradient of the recurrent product ``W_hh h + b_hh``, blocks
    1, 2 and 4 that of the input projection.
    """
    T, B, H = N.shape
    # Per-step scratch, reused: it stays in cache. `rz` holds what reaches [r, z], so that one
    # sigmoid_backward serves both gates.
    a = torch.empty(B, H, dtype=N.dtype, device=N.device)
    rz = torch.empty(B, 2 * H, dtype=N.dtype, device=N.device)
    zero = torch.zeros(B, H, dtype=N.dtype, device=N.device)
    for t in range(T - 1, -1, -1):
        r, z, d = RZ[t, :, :H], RZ[t, :, H:], D[t]
        torch.addcmul(dh, dh, z, value=-1, out=a)  # dh (1 - z): what reaches n
        dn = torch.ops.aten.tanh_backward(a, N[t], grad_input=d[:, 3 * H :])  # d n_pre
        torch.mul(dn, r, out=d[:, 2 * H : 3 * H])  # d hn
        torch.mul(dn, HN[t], out=rz[:, :H])  # what reaches r
        torch.mul(torch.sub(Hs[t], N[t], out=a), dh, out=rz[:, H:])  # dh (h_prev - n): to z
        torch.ops.aten.sigmoid_backward(rz, RZ[t], grad_input=d[:, : 2 * H])  # d [r, z]_pre
        prev = d_out[t - 1] if t > 0 else zero
        dh = torch.addcmul(prev, dh, z).addmm_(d[:, : 3 * H], w_hh)  # reaches h_{t-1}
    return dh


def gru_forward(
    X: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The GRU with torch's equations (see ``cells.GRU``), written into preallocated buffers.

    Returns ``Hs (T+1, B, H)`` = h_0 then the T outputs (so ``Hs[:-1]`` are the previous
    states, with no copy) and what the backward pass needs: the gates ``RZ = [r, z] (T, B, 2H)``,
    ``HN = W_hn h + b_hn (T, B, H)`` and the candidates ``N (T, B, H)``.
    """
    T, B, _ = X.shape
    H = h0.shape[1]
    if b_ih is not None and b_hh is not None:  # b_hr and b_hz simply add to the input side
        b_ih = torch.cat([b_ih[: 2 * H] + b_hh[: 2 * H], b_ih[2 * H :]])
    GI = _input_gates(X, w_ih, b_ih)  # (T, B, 3H): [r, z] pre-activations but W_h h, and W_in x
    b_hn = X.new_zeros(H) if b_hh is None else b_hh[2 * H :]
    RZ = X.new_empty(T, B, 2 * H)
    HN = X.new_empty(T, B, H)
    N = X.new_empty(T, B, H)
    Hs = X.new_empty(T + 1, B, H)
    Hs[0] = h0
    _loops()["gru"](GI, Hs, w_hh.t(), b_hn, RZ, HN, N)
    return Hs, RZ, HN, N


_LOOPS = {
    "gru": "_gru_steps",
    "gru_backward": "_gru_steps_backward",
    "rnn": "_rnn_steps",
    "rnn_backward": "_rnn_steps_backward",
}
_compiled: dict[str, Callable] = {}


def _loops() -> dict[str, Callable]:
    """The step loops compiled with TorchScript, which runs them without Python's per-operation
    overhead (measured: about 1 ms of a 5 ms GRU forward pass at B=32, H=256); plain Python
    where scripting fails. Compiled once, on first use (about a second)."""
    if not _compiled:
        loops = {key: globals()[name] for key, name in _LOOPS.items()}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.script is deprecated but still works
                _compiled.update({key: torch.jit.script(fn) for key, fn in loops.items()})
        except Exception:  # noqa: BLE001 - any scripting failure: the same code, in Python
            _compiled.update(loops)
    return _compiled


class _GRUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, X, h0, w_ih, w_hh, b_ih, b_hh):  # type: ignore[override]
        Hs, RZ, HN, N = gru_forward(X, h0, w_ih, w_hh, b_ih, b_hh)
        ctx.save_for_backward(X, w_ih, w_hh, Hs, RZ, HN, N)
        ctx.has_bias = b_ih is not None
        return Hs[1:], Hs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT):  # type: ignore[override]
        X, w_ih, w_hh, Hs, RZ, HN, N = ctx.saved_tensors
        T, B, H = N.shape
        D = _workspace((T, B, 4 * H), N)
        dh = torch.add(d_out[T - 1], d_hT)  # the gradient reaching h_T (unused outputs: zeros)
        dh = _loops()["gru_backward"](d_out.contiguous(), dh, w_hh, Hs, RZ, HN, N, D)
        D2 = D.view(T * B, 4 * H)
        dGI_blocks = [D2[:, : 2 * H], D2[:, 3 * H :]]  # r, z and n, as W_ih's rows
        grads = _parameter_grads(ctx, X, w_ih, Hs, D2[:, : 3 * H], D2, dGI_blocks)
        return grads[0], dh if ctx.needs_input_grad[1] else None, *grads[1:]


# -- Elman RNN ----------------------------------------------------------------------------------


def _rnn_steps(GI: Tensor, Hs: Tensor, w_hh_t: Tensor, relu: bool) -> None:
    """The forward loop: fills ``Hs[1:]``; ``GI (T, B, H)`` holds W_ih x + b_ih + b_hh."""
    for t in range(GI.shape[0]):
        h = torch.addmm(GI[t], Hs[t], w_hh_t, out=Hs[t + 1])  # (B, H) pre-activation
        if relu:
            h.relu_()
        else:
            h.tanh_()


def _rnn_steps_backward(
    d_out: Tensor, dh: Tensor, w_hh: Tensor, Hs: Tensor, D: Tensor, relu: bool
) -> Tensor:
    """The backward loop: fills ``D (T, B, H)`` (d pre-activation), returns d h_0."""
    T = D.shape[0]
    zero = torch.zeros_like(dh)
    for t in range(T - 1, -1, -1):
        d = D[t]
        if relu:  # the derivative is 1 where the output is positive
            torch.ops.aten.threshold_backward(dh, Hs[t + 1], 0.0, grad_input=d)
        else:
            torch.ops.aten.tanh_backward(dh, Hs[t + 1], grad_input=d)
        prev = d_out[t - 1] if t > 0 else zero
        dh = torch.addmm(prev, d, w_hh)  # reaches h_{t-1}
    return dh


def rnn_forward(
    X: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None,
    relu: bool = False,
) -> Tensor:  # fmt: skip
    """The Elman RNN with torch's equations; returns ``Hs (T+1, B, H)``: h_0 then the outputs."""
    T, B, _ = X.shape
    bias = None if b_ih is None or b_hh is None else b_ih + b_hh  # both biases add to one term
    GI = _input_gates(X, w_ih, bias)  # (T, B, H)
    Hs = X.new_empty(T + 1, B, h0.shape[1])
    Hs[0] = h0
    _loops()["rnn"](GI, Hs, w_hh.t(), relu)
    return Hs


class _RNNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, X, h0, w_ih, w_hh, b_ih, b_hh, relu):  # type: ignore[override]
        Hs = rnn_forward(X, h0, w_ih, w_hh, b_ih, b_hh, relu)
        ctx.save_for_backward(X, w_ih, w_hh, Hs)
        ctx.has_bias, ctx.relu = b_ih is not None, relu
        return Hs[1:], Hs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT):  # type: ignore[override]
        X, w_ih, w_hh, Hs = ctx.saved_tensors
        T, B, H = Hs.shape[0] - 1, Hs.shape[1], Hs.shape[2]
        D = _workspace((T, B, H), Hs)  # d pre-activation: the gradient of both projections
        dh = torch.add(d_out[T - 1], d_hT)
        dh = _loops()["rnn_backward"](d_out.contiguous(), dh, w_hh, Hs, D, ctx.relu)
        D2 = D.view(T * B, H)
        grads = _parameter_grads(ctx, X, w_ih, Hs, D2, D2, [D2])
        return grads[0], dh if ctx.needs_input_grad[1] else None, *grads[1:], None


def _parameter_grads(
    ctx, X: Tensor, w_ih: Tensor, Hs: Tensor, dGH: Tensor, dGI: Tensor, dGI_blocks: list[Tensor]
) -> tuple[Tensor | None, ...]:
    """Gradients of X, W_ih, W_hh, b_ih, b_hh: each one product (or sum) over all T*B rows.

    ``dGH (T*B, G)`` is the gradient of the recurrent product ``W_hh h + b_hh``, ``dGI`` that of
    the input projection, also given as its gate blocks in the order of W_ih's rows (so that a
    strided layout needs no copy).
    """
    T, B = Hs.shape[0] - 1, Hs.shape[1]
    X2 = X.reshape(T * B, -1)
    dX = dw_ih = dw_hh = db_ih = db_hh = None
    if ctx.needs_input_grad[0]:
        rows = w_ih.split([blk.shape[1] for blk in dGI_blocks])
        dX = sum(blk @ w for blk, w in zip(dGI_blocks, rows, strict=True)).view(T, B, -1)
    if ctx.needs_input_grad[2]:
        dw_ih = torch.cat([blk.t() @ X2 for blk in dGI_blocks])  # (G, I)
    if ctx.needs_input_grad[3]:
        dw_hh = dGH.t() @ Hs[:-1].reshape(T * B, -1)  # (G, H): one product for all steps
    if ctx.has_bias:
        db_ih = torch.cat([blk.sum(0) for blk in dGI_blocks]) if ctx.needs_input_grad[4] else None
        db_hh = dGH.sum(0) if ctx.needs_input_grad[5] else None
    return dX, dw_ih, dw_hh, db_ih, db_hh


def _needs_graph(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _run(
    function: type[torch.autograd.Function],
    forward: Callable[..., Tensor],
    X: Tensor,
    h0: Tensor,
    weights: tuple,
    reverse: bool,
    *extra: object,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One direction of one layer: ``X (T, B, I)``, ``h0 (B, H)`` -> outputs ``(T, B, H)``, h_T."""
    if reverse:  # the backward direction reads the sequence from its end
        X = X.flip(0)
    if X.shape[0] == 0:
        raise ValueError("Expected sequence length to be larger than 0 in RNN")
    if _needs_graph(X, h0, *weights):
        out, h = function.apply(X, h0, *weights, *extra)
    else:  # inference: the same loop, no graph and nothing kept for a backward pass
        out = forward(X, h0, *weights, *extra)[1:]
        h = out[-1]
    return (out.flip(0) if reverse else out), (h,)


class RNN(cells.RNN):
    """A drop-in for ``nn.RNN`` (equations and contract as ``cells.RNN``), fast on the CPU."""

    def _run_direction(
        self, X: Tensor, state: tuple[Tensor, ...], weights: tuple, reverse: bool
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        relu = self.nonlinearity == "relu"
        return _run(_RNNFunction, rnn_forward, X, state[0], weights, reverse, relu)


def _gru_outputs(*args: object) -> Tensor:
    return gru_forward(*args)[0]  # type: ignore[arg-type]


class GRU(cells.GRU):
    """A drop-in for ``nn.GRU`` (equations and contract as ``cells.GRU``), fast on the CPU."""

    def _run_direction(
        self, X: Tensor, state: tuple[Tensor, ...], weights: tuple, reverse: bool
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        return _run(_GRUFunction, _gru_outputs, X, state[0], weights, reverse)
