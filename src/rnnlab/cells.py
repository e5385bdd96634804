"""From-scratch RNN, GRU and LSTM in torch that compute exactly what ``nn.RNN/GRU/LSTM`` compute.

The job of a recurrent cell is to fold one more input into a fixed-size state: ``state_t =
cell(x_t, state_{t-1})``. A recurrent *core* runs the cell along the sequence, stacks layers (each
layer reads the outputs of the one below) and, when bidirectional, runs a second copy backwards
in time and concatenates the two.

Why another implementation: ``nn.RNN`` hides the loop inside a fused kernel. Here the loop, the
gates and the stacking are a page of Python, and because they copy PyTorch's equations, gate
order (GRU r,z,n; LSTM i,f,g,o), packed weight layout, two biases and parameter names
(``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), a state dict moves between the two without
renaming. The tests compare outputs, states and every gradient with PyTorch's in float64.

Beyond torch's contract, ``forward`` takes two keyword-only extras that regularisation needs
(``rnnlab.model``): ``weight_hh``, recurrent matrices to use instead of the parameters for this
call (DropConnect's dropped weights, which autograd traces back to the parameters), and
``between``, locked-dropout masks between layers.

Letters: T time steps, B batch, I input size, H hidden size, L layers, D directions (1 or 2).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NONLINEARITIES = ("tanh", "relu")


def rnn_cell(
    x: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
) -> Tensor:
    """One step of the Elman RNN: ``h' = f(W_ih x + b_ih + W_hh h + b_hh)``.

    Shapes: ``x: (B, I)``, ``h: (B, H)``, ``weight_ih: (H, I)``, ``weight_hh: (H, H)``; returns
    ``(B, H)``.
    """
    a = F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh)  # (B, H)
    if nonlinearity == "tanh":
        return torch.tanh(a)
    if nonlinearity == "relu":
        return torch.relu(a)
    raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")


def gru_cell(
    x: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> Tensor:
    """One GRU step with PyTorch's equations; see ``GRU`` for them.

    The rows of ``weight_ih: (3H, I)`` and ``weight_hh: (3H, H)`` are packed in the order r, z, n.
    """
    r_i, z_i, n_i = F.linear(x, weight_ih, bias_ih).chunk(3, dim=1)  # each (B, H)
    r_h, z_h, n_h = F.linear(h, weight_hh, bias_hh).chunk(3, dim=1)  # each (B, H)
    r = torch.sigmoid(r_i + r_h)  # reset gate: how much of the old state the candidate may see
    z = torch.sigmoid(z_i + z_h)  # update gate: how much of the old state to keep
    # PyTorch (and cuDNN) apply r after W_hn h + b_hn, not to h before the product as in
    # Cho et al. (2014); the two are different functions, and we follow PyTorch.
    n = torch.tanh(n_i + r * n_h)  # candidate state
    return (1 - z) * n + z * h


def lstm_cell(
    x: Tensor,
    state: tuple[Tensor, Tensor],
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One LSTM step with PyTorch's equations; see ``LSTM`` for them.

    ``state`` is ``(h, c)``, each ``(B, H)``. The rows of ``weight_ih: (4H, I)`` and
    ``weight_hh: (4H, H)`` are packed in the order i, f, g, o.
    """
    h, c = state
    gates = F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=1)  # each (B, H)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    # The memory cell is updated by addition, which is what lets gradients survive long spans.
    c_next = f * c + i * g
    h_next = o * torch.tanh(c_next)
    return h_next, c_next


class _RecurrentCore(nn.Module):
    """Shared machinery: parameters, layer stacking, directions, batch_first, dropout, state.

    Subclasses set ``_num_gates``, ``_num_state`` (1 for h, 2 for (h, c)), ``_torch_class`` and
    implement ``_step``. State travels internally as a tuple so the loop is written once.
    """

    _num_gates = 1
    _num_state = 1
    _torch_class: type[nn.Module] = nn.RNNBase

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0 or num_layers <= 0:
            raise ValueError("input_size, hidden_size and num_layers must be greater than zero")
        if isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout should be a number in range [0, 1], got {dropout}")
        if dropout > 0 and num_layers == 1:
            # Same warning as torch: dropout only acts between layers.
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                f"num_layers={num_layers}",
                stacklevel=2,
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        num_directions = 2 if bidirectional else 1
        gate_size = self._num_gates * hidden_size
        factory = {"device": device, "dtype": dtype}
        # Registration order equals torch's, so the same seed gives the same initial weights.
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else hidden_size * num_directions
            for direction in range(num_directions):
                w_ih, w_hh, b_ih, b_hh = self._param_names(layer, direction)
                setattr(
                    self, w_ih, nn.Parameter(torch.empty(gate_size, layer_input_size, **factory))
                )
                setattr(self, w_hh, nn.Parameter(torch.empty(gate_size, hidden_size, **factory)))
                if bias:
                    setattr(self, b_ih, nn.Parameter(torch.empty(gate_size, **factory)))
                    setattr(self, b_hh, nn.Parameter(torch.empty(gate_size, **factory)))
        self.reset_parameters()

    @staticmethod
    def _param_names(layer: int, direction: int) -> tuple[str, str, str, str]:
        suffix = f"l{layer}" + ("_reverse" if direction == 1 else "")
        return (
            f"weight_ih_{suffix}",
            f"weight_hh_{suffix}",
            f"bias_ih_{suffix}",
            f"bias_hh_{suffix}",
        )

    def reset_parameters(self) -> None:
        """Initialise every parameter from uniform(-1/sqrt(H), 1/sqrt(H)), as torch does."""
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -k, k)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s

    def _weights(self, layer: int, direction: int) -> tuple[Tensor | None, ...]:
        # Biases are None when bias=False; F.linear then skips them.
        return tuple(getattr(self, name, None) for name in self._param_names(layer, direction))

    def _step(self, x: Tensor, state: tuple[Tensor, ...], weights: tuple) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def _run_direction(
        self, X: Tensor, state: tuple[Tensor, ...], weights: tuple, reverse: bool
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Apply the cell along time (backwards when ``reverse``); ``X: (T, B, I)``."""
        T = X.shape[0]
        outputs: list[Tensor | None] = [None] * T
        for t in reversed(range(T)) if reverse else range(T):
            state = self._step(X[t], state, weights)
            outputs[t] = state[0]  # the output at t is h_t, stored at t even when run backwards
        return torch.stack(outputs), state  # (T, B, H)

    def _core(
        self,
        input: Tensor,
        hx: tuple[Tensor, ...] | None,
        weight_hh: Sequence[Tensor] | None = None,
        between: Sequence[Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The loop over layers and directions, with torch's shape conventions and checks.

        ``weight_hh``, when given, replaces each recurrent matrix (one per layer and direction,
        in torch's order ``layer * D + direction``) for this call only: DropConnect passes the
        dropped weights here, so the parameters themselves are never swapped. ``between`` holds
        one ``(B, D*H)`` mask per gap between layers, multiplied into every time step of the
        lower layer's output (locked dropout), on top of any plain ``dropout``.
        """
        if input.dim() not in (2, 3):
            raise ValueError(f"Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
        if input.size(-1) != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {input.size(-1)}"
            )
        batched = input.dim() == 3
        if not batched:
            X = input.unsqueeze(1)  # (T, 1, I): one sequence is a batch of one
        else:
            X = input.transpose(0, 1) if self.batch_first else input  # (T, B, I)
        num_directions = 2 if self.bidirectional else 1
        expected = (self.num_layers * num_directions, X.shape[1], self.hidden_size)
        if hx is None:
            zeros = X.new_zeros(expected)
            hx = (zeros,) * self._num_state  # (L*D, B, H) each
        else:
            if not batched:
                hx = tuple(s.unsqueeze(1) for s in hx)
            for s in hx:
                if tuple(s.shape) != expected:
                    raise RuntimeError(f"Expected hidden size {expected}, got {list(s.shape)}")

        finals: list[list[Tensor]] = [[] for _ in range(self._num_state)]
        layer_input = X
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(num_directions):
                k = layer * num_directions + direction  # torch's row of h_n for this layer/dir
                state = tuple(s[k] for s in hx)  # each (B, H)
                weights = self._weights(layer, direction)
                if weight_hh is not None:  # (w_ih, w_hh, b_ih, b_hh) with w_hh replaced
                    weights = (weights[0], weight_hh[k], *weights[2:])
                out, state = self._run_direction(
                    layer_input, state, weights, reverse=direction == 1
                )
                outputs.append(out)
                for part, s in zip(finals, state, strict=True):
                    part.append(s)
            layer_input = torch.cat(outputs, dim=2)  # (T, B, D*H)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
            if between is not None and layer < self.num_layers - 1:
                layer_input = layer_input * between[layer]  # (T, B, D*H) * (B, D*H)
        h_n = tuple(torch.stack(part) for part in finals)  # each (L*D, B, H)

        output = layer_input
        if not batched:
            return output.squeeze(1), tuple(s.squeeze(1) for s in h_n)  # (T, D*H), (L*D, H)
        if self.batch_first:
            output = output.transpose(0, 1)  # (B, T, D*H)
        return output, h_n

    def forward(
        self,
        input: Tensor,
        hx: Tensor | None = None,
        *,
        weight_hh: Sequence[Tensor] | None = None,
        between: Sequence[Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The contract of ``nn.RNN``/``nn.GRU`` (the state is h alone); ``LSTM`` overrides it."""
        output, (h_n,) = self._core(input, None if hx is None else (hx,), weight_hh, between)
        return output, h_n

    @classmethod
    def from_torch(cls, module: nn.Module) -> _RecurrentCore:
        """A scratch copy of a torch ``nn.RNN/GRU/LSTM``: same config, weights, dtype and device."""
        if type(module) is not cls._torch_class:
            raise TypeError(f"{cls.__name__}.from_torch expects {cls._torch_class.__name__}")
        if getattr(module, "proj_size", 0):
            raise ValueError("LSTM with proj_size > 0 has no scratch equivalent")
        weight = next(module.parameters())
        scratch = cls(**_config_of(module), device=weight.device, dtype=weight.dtype)
        scratch.load_state_dict(module.state_dict())
        return scratch.train(module.training)

    def to_torch(self) -> nn.Module:
        """The equivalent torch module, holding a copy of these weights."""
        weight = next(self.parameters())
        module = self._torch_class(**_config_of(self), device=weight.device, dtype=weight.dtype)
        module.load_state_dict(self.state_dict())
        return module.train(self.training)


def _config_of(module: nn.Module) -> dict:
    """Constructor arguments read from a scratch or torch core (their attribute names agree)."""
    names = ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout"]
    config = {name: getattr(module, name) for name in names + ["bidirectional"]}
    if isinstance(module, (RNN, nn.RNN)):
        config["nonlinearity"] = module.nonlinearity
    return config


class RNN(_RecurrentCore):
    r"""Elman RNN, a drop-in for ``nn.RNN``.

    For each layer and step::

        h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)        f = tanh or relu

    where ``x_t`` is the input for layer 0 and the previous layer's output (both directions
    concatenated) above it. Parameters per layer ``k`` (``_reverse`` for the backward direction):
    ``weight_ih_lk: (H, I or D*H)``, ``weight_hh_lk: (H, H)``, ``bias_ih_lk, bias_hh_lk: (H,)``.

    Forward: ``(input, hx=None) -> (output, h_n)`` with input ``(T, B, I)`` (``(B, T, I)`` when
    batch_first, or ``(T, I)`` unbatched), output ``(T, B, D*H)`` and ``hx, h_n: (L*D, B, H)``.
    """

    _torch_class = nn.RNN

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            device, dtype,
        )  # fmt: skip
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.nonlinearity == "tanh" else s + f", nonlinearity={self.nonlinearity!r}"

    def _step(self, x: Tensor, state: tuple[Tensor, ...], weights: tuple) -> tuple[Tensor, ...]:
        return (rnn_cell(x, state[0], *weights, nonlinearity=self.nonlinearity),)


class GRU(_RecurrentCore):
    r"""Gated recurrent unit, a drop-in for ``nn.GRU`` (same equations as torch)::

        r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)      reset gate
        z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)      update gate
        n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))  candidate
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    ``weight_ih_lk = [W_ir; W_iz; W_in]: (3H, I or D*H)``, ``weight_hh_lk = [W_hr; W_hz; W_hn]:
    (3H, H)``, biases ``(3H,)`` packed the same way. Forward contract as ``RNN``.
    """

    _num_gates = 3
    _torch_class = nn.GRU

    def _step(self, x: Tensor, state: tuple[Tensor, ...], weights: tuple) -> tuple[Tensor, ...]:
        return (gru_cell(x, state[0], *weights),)


class LSTM(_RecurrentCore):
    r"""Long short-term memory, a drop-in for ``nn.LSTM`` (same equations as torch)::

        i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)      input gate
        f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)      forget gate
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)         candidate cell
        o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)      output gate
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)

    ``weight_ih_lk = [W_ii; W_if; W_ig; W_io]: (4H, I or D*H)``, ``weight_hh_lk: (4H, H)``, biases
    ``(4H,)`` packed the same way. ``proj_size`` is not supported.

    Forward: ``(input, hx=None) -> (output, (h_n, c_n))`` where ``hx`` is the pair ``(h_0, c_0)``,
    each ``(L*D, B, H)``.
    """

    _num_gates = 4
    _num_state = 2
    _torch_class = nn.LSTM

    def _step(self, x: Tensor, state: tuple[Tensor, ...], weights: tuple) -> tuple[Tensor, ...]:
        return lstm_cell(x, (state[0], state[1]), *weights)

    def forward(
        self,
        input: Tensor,
        hx: tuple[Tensor, Tensor] | None = None,
        *,
        weight_hh: Sequence[Tensor] | None = None,
        between: Sequence[Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if hx is not None and not isinstance(hx, tuple):
            raise TypeError("LSTM expects hx as a tuple (h_0, c_0)")
        output, (h_n, c_n) = self._core(input, hx, weight_hh, between)
        return output, (h_n, c_n)
