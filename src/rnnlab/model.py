"""The character language model: one-hot or embedding -> recurrent core -> Linear on every step.

Letters used in shape comments:
    B  batch size (rows)            T  time steps (num_steps)
    V  vocabulary size              E  input size (V for one-hot, else the embedding size)
    H  hidden units per layer       L  recurrent layers

The state is exactly what `nn.RNN`/`nn.GRU` take, an (L, B, H) tensor, or for `nn.LSTM` the pair
(h, c) of two such tensors, so the built-in and the from-scratch cores are interchangeable.

Regularisation for small texts, after AWD-LSTM (Merity et al. 2018, salesforce/awd-lstm-lm); each
piece is off by default, and with all of them off the forward pass is the plain one above:

- DropConnect on the recurrent weights (`weight_drop`): every W_hh is multiplied by a Bernoulli
  mask, the same at every time step of a minibatch, and the dropped matrix is handed to the
  kernel (torch's `_VF` kernels, the scratch cells or the fused loops) as an argument. Nothing
  is swapped on the module, so autograd sees `W_hh * mask` and the parameter keeps its name.
- Locked (variational) dropout (`dropout_input`, `dropout_hidden`, `dropout_output`): one mask
  per sequence, shared by all its time steps, on the input vectors, between layers and on the
  top layer's output. Where one is set it replaces plain `dropout` at that place.
- Tied embeddings (`tie_weights`): the input embedding and the output layer share one (V, D*H)
  matrix (Press & Wolf 2017, Inan et al. 2017).

All masks of one optimizer step are one `Masks`, drawn by `RNNLM.sample_masks`. A forward pass
given `masks` uses them and draws nothing, so a step that runs several forwards (chunks of a
long window, accumulated micro-batches) passes the same `Masks` to each: one mask per minibatch.
Given none, a forward pass in training mode draws its own from torch's default generator (one
set per call: enough for a loop that makes one call per step). `mask_generator(seed, step)` is
the generator a training loop should draw with: a pure function of the run's seed and the step,
the same on every process, so DDP ranks agree and an exact resume needs no saved stream.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
from collections.abc import Iterator, Sequence
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
        metadata={
            "help": "dropout between recurrent layers and before the output layer (where "
            "--dropout-hidden / --dropout-output do not replace it)"
        },
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
    weight_drop: float = field(
        default=0.0,
        metadata={
            "help": "DropConnect on the hidden-to-hidden weights: each entry of every W_hh is "
            "zeroed with this probability, one mask per minibatch (AWD-LSTM)"
        },
    )
    dropout_input: float = field(
        default=0.0,
        metadata={
            "help": "locked dropout on the input vectors: one mask per sequence, the same at "
            "every time step"
        },
    )
    dropout_hidden: float = field(
        default=0.0,
        metadata={
            "help": "locked dropout between recurrent layers (above 0 it replaces --dropout "
            "there; none with --layers 1)"
        },
    )
    dropout_output: float = field(
        default=0.0,
        metadata={
            "help": "locked dropout on the top layer's output, before the output layer (above "
            "0 it replaces --dropout there)"
        },
    )
    tie_weights: bool = field(
        default=False,
        metadata={
            "help": "share one matrix between the input embedding and the output layer; needs "
            "--embed equal to --hidden (x2 if bidirectional), which --embed -1 then picks"
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
        for name in ("weight_drop", "dropout_input", "dropout_hidden", "dropout_output"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise UsageError(f"--{name.replace('_', '-')} must be in [0, 1), got {p}")
        if self.tie_weights:
            width = self.output_width
            twice = " x 2 (bidirectional)" if self.bidirectional else ""
            size = f"--hidden {self.hidden}{twice}"
            if self.embed == 0:
                raise UsageError(
                    "--tie-weights shares the input embedding with the output layer, but --embed "
                    f"0 is one-hot and has none: use --embed {width} ({size}) or -1 (auto)"
                )
            if self.embed > 0 and self.embed != width:
                raise UsageError(
                    f"--tie-weights needs --embed equal to the output layer's input size {width} "
                    f"({size}), got --embed {self.embed}: use --embed {width} or -1 (auto)"
                )

    @property
    def output_width(self) -> int:
        """D*H: the width of the top layer's output, which the output layer reads."""
        return self.hidden * (2 if self.bidirectional else 1)

    def input_size(self, vocab_size: int) -> int:
        """E: the width of one input vector once `embed` is resolved for this vocabulary."""
        embed = self.resolved_embed(vocab_size)
        return vocab_size if embed == 0 else embed

    def resolved_embed(self, vocab_size: int) -> int:
        if self.embed >= 0:
            return self.embed
        if self.tie_weights:  # the only size a tied embedding can have
            return self.output_width
        return 0 if vocab_size <= ONE_HOT_MAX_VOCAB else AUTO_EMBED_SIZE

    @property
    def uses_masks(self) -> bool:
        """Whether a training forward pass needs a `Masks` (DropConnect or locked dropout)."""
        return (
            self.weight_drop > 0
            or self.dropout_input > 0
            or (self.dropout_hidden > 0 and self.layers > 1)
            or self.dropout_output > 0
        )


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
    # torch warns on 1-layer dropout; locked dropout between layers replaces the plain one.
    dropout = config.dropout if config.layers > 1 and config.dropout_hidden == 0 else 0.0
    return module(
        input_size,
        config.hidden,
        config.layers,
        batch_first=True,
        dropout=dropout,
        bidirectional=config.bidirectional,
    )


@dataclass
class Masks:
    """The dropout masks of one optimizer step, drawn once (`RNNLM.sample_masks`) and reused by
    every forward pass of that step. Each is scaled by 1/(1-p), as `F.dropout` scales, so
    applying one is a multiplication; None where that kind of dropout is off.

    Shapes (B: this process's rows of the minibatch, D*H: the top layer's output width):
        weight_hh  one mask per recurrent matrix, (G*H, H), in torch's order layer * D + direction
        input      (B, E): one per sequence, the same at every time step
        hidden     one (B, D*H) per gap between layers
        output     (B, D*H)
    """

    weight_hh: list[torch.Tensor] | None = None
    input: torch.Tensor | None = None
    hidden: list[torch.Tensor] | None = None
    output: torch.Tensor | None = None


def mask_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator to draw optimizer step `step`'s masks with: a function of (seed, step) alone.

    Why not one stream carried through the run: every process of a DDP run builds the same
    generator, so all draw the global batch's masks alike (each keeps its rows, all share the
    one DropConnect mask); an exact resume rebuilds it from the step counter, with no stream to
    save; and a step whose forward runs twice gets the same masks twice. A CUDA `device` draws
    on the GPU (other masks than the CPU's, as torch's own dropout differs between the two).
    """
    digest = hashlib.blake2b(f"rnnlab-masks:{seed}:{step}".encode(), digest_size=8).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest, "little"))


def run_core(
    core: nn.Module,
    inputs: torch.Tensor,
    state: State,
    weight_hh: Sequence[torch.Tensor] | None = None,
    between: Sequence[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, State]:
    """Run a recurrent core (batch first) with replaced recurrent weights and/or locked masks
    between layers; with neither it is the core's own call.

    Shapes: inputs (B, T, E); `weight_hh` one (G*H, H) per layer and direction (order layer * D
    + direction); `between` one (B, D*H) mask per gap between layers. Returns (B, T, D*H) and
    the final state.
    """
    if weight_hh is None and between is None:
        return core(inputs, state)
    if isinstance(core, nn.RNNBase):
        return _run_torch_core(core, inputs, state, weight_hh, between)
    return core(inputs, state, weight_hh=weight_hh, between=between)  # rnnlab.cells / fused


def _run_torch_core(
    core: nn.RNNBase,
    X: torch.Tensor,
    state: State,
    weight_hh: Sequence[torch.Tensor] | None,
    between: Sequence[torch.Tensor] | None,
) -> tuple[torch.Tensor, State]:
    """`nn.RNN/GRU/LSTM`'s own kernels (cuDNN on a GPU) fed other weights than the module's.

    `torch._VF.gru` and its siblings are what `nn.RNNBase.forward` calls with the module's flat
    weight list; here the list holds the dropped W_hh in place of each parameter (AWD-LSTM's
    `WeightDrop` swaps module attributes instead, which newer PyTorch versions break). With
    `between` masks the layers run one at a time, since the kernel's own dropout between layers
    is drawn afresh at every step, not locked.
    """
    D = 2 if core.bidirectional else 1
    L = core.num_layers
    per_layer: list[list[torch.Tensor]] = []
    for layer in range(L):
        weights = []
        for direction in range(D):
            suffix = f"l{layer}" + ("_reverse" if direction else "")
            w_hh = getattr(core, f"weight_hh_{suffix}")
            if weight_hh is not None:
                w_hh = weight_hh[layer * D + direction]
            weights += [getattr(core, f"weight_ih_{suffix}"), w_hh]
            if core.bias:
                weights += [getattr(core, f"bias_ih_{suffix}"), getattr(core, f"bias_hh_{suffix}")]
        per_layer.append(weights)
    with warnings.catch_warnings():
        # cuDNN wants the module's one contiguous weight buffer and copies the dropped
        # weights into one, warning each time: that copy is the price of DropConnect.
        warnings.filterwarnings("ignore", message="RNN module weights are not part")
        if between is None:
            flat = [w for weights in per_layer for w in weights]
            return _vf_call(core, X, state, flat, L, core.dropout)
        lstm = isinstance(core, nn.LSTM)
        finals: list[State] = []
        outputs = X
        for layer in range(L):
            rows = slice(layer * D, (layer + 1) * D)  # this layer's rows of the (L*D, B, H) state
            hx = (state[0][rows], state[1][rows]) if lstm else state[rows]  # type: ignore[index]
            outputs, h = _vf_call(core, outputs, hx, per_layer[layer], 1, 0.0)
            finals.append(h)
            if layer < L - 1:
                if core.dropout > 0 and core.training:  # plain dropout, as the kernel applies
                    outputs = F.dropout(outputs, core.dropout, training=True)
                mask = between[layer]  # (B, D*H)
                outputs = outputs * (mask[:, None] if core.batch_first else mask)  # (B, T, D*H)
    if lstm:
        h_n = torch.cat([h for h, _ in finals])  # type: ignore[misc]
        c_n = torch.cat([c for _, c in finals])  # type: ignore[misc]
        return outputs, (h_n, c_n)
    return outputs, torch.cat(finals)  # type: ignore[arg-type]


def _vf_call(
    core: nn.RNNBase,
    X: torch.Tensor,
    hx: State,
    weights: list[torch.Tensor],
    num_layers: int,
    dropout: float,
) -> tuple[torch.Tensor, State]:
    """One call of torch's recurrent kernel, with the arguments `nn.RNNBase.forward` passes."""
    args = (weights, core.bias, num_layers, dropout, core.training, core.bidirectional)
    if isinstance(core, nn.LSTM):
        output, h, c = torch._VF.lstm(X, hx, *args, core.batch_first)
        return output, (h, c)
    if isinstance(core, nn.GRU):
        kernel = torch._VF.gru
    else:
        kernel = torch._VF.rnn_tanh if core.nonlinearity == "tanh" else torch._VF.rnn_relu
    output, h = kernel(X, hx, *args, core.batch_first)
    return output, h


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
        # Plain dropout on the output, unless locked dropout replaces it there.
        self.drop = nn.Dropout(config.dropout if config.dropout_output == 0 else 0.0)
        self.num_directions = 2 if config.bidirectional else 1
        self.output = nn.Linear(config.hidden * self.num_directions, vocab_size)
        if config.tie_weights:
            self._tie_weights()

    def _tie_weights(self) -> None:
        """One (V, D*H) matrix for the input embedding and the output layer.

        It keeps the output layer's initialisation, uniform(+-1/sqrt(D*H)): an embedding's
        N(0, 1) rows would make the first logits about sqrt(D*H) times too large. In a state
        dict the output layer's entry is a copy (safetensors refuses two names for one storage),
        and loading writes both names into the one parameter.
        """
        if self.embed_size != self.output.in_features:  # ModelConfig refuses this first
            raise UsageError(
                f"--tie-weights needs --embed {self.output.in_features}, got {self.embed_size}"
            )
        self.embedding.weight = self.output.weight

        def copy_tied(module: nn.Module, state_dict: dict, prefix: str, metadata: Any) -> None:
            key = prefix + "output.weight"
            if key in state_dict:
                state_dict[key] = state_dict[key].clone()

        self.register_state_dict_post_hook(copy_tied)

    def recurrent_weights(self) -> list[nn.Parameter]:
        """Every W_hh of the core, in torch's order layer * D + direction (what DropConnect
        drops)."""
        suffixes = ("", "_reverse")[: self.num_directions]
        return [
            getattr(self.rnn, f"weight_hh_l{layer}{suffix}")
            for layer in range(self.config.layers)
            for suffix in suffixes
        ]

    def sample_masks(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        rows: slice | None = None,
    ) -> Masks | None:
        """The dropout masks of one optimizer step; None (and nothing drawn) when all are off.

        Args:
            batch_size: rows of the global minibatch (every process's together).
            generator: what to draw from (`mask_generator(seed, step)` in a training loop);
                None: torch's default generator of the model's device.
            rows: this process's rows of the global minibatch (`World.rows`); None: all. Every
                process draws the whole batch's masks and keeps its rows, so N processes train
                on exactly the masks one process would, and all share one DropConnect mask.
        """
        c = self.config
        if not c.uses_masks:
            return None
        p = self.output.weight
        device = p.device if generator is None else generator.device

        def draw(shape: tuple[int, ...], prob: float) -> torch.Tensor:
            keep = 1.0 - prob
            u = torch.rand(shape, generator=generator, device=device)
            return (u < keep).to(device=p.device, dtype=p.dtype).div_(keep)

        def per_row(width: int, prob: float) -> torch.Tensor:
            mask = draw((batch_size, width), prob)  # (B, width): the global batch's
            return mask if rows is None else mask[rows]

        width = self.output.in_features  # D*H
        weight_hh = input_mask = hidden = output = None
        if c.weight_drop > 0:
            weight_hh = [draw(tuple(w.shape), c.weight_drop) for w in self.recurrent_weights()]
        if c.dropout_input > 0:
            input_mask = per_row(self.rnn.input_size, c.dropout_input)
        if c.dropout_hidden > 0 and c.layers > 1:
            hidden = [per_row(width, c.dropout_hidden) for _ in range(c.layers - 1)]
        if c.dropout_output > 0:
            output = per_row(width, c.dropout_output)
        return Masks(weight_hh, input_mask, hidden, output)

    def inputs(self, X: torch.Tensor) -> torch.Tensor:
        """Ids (B, T) to input vectors (B, T, E)."""
        if self.embed_size > 0:
            return self.embedding(X)  # (B, T, E)
        # Rows of an identity matrix: one indexing kernel, where F.one_hot also scans the ids
        # for their range on every call (it shows at batch 1, one step at a time).
        # The buffer follows the model through .to() and .double().
        return self._eye[X]  # (B, T, V)

    def forward(
        self, X: torch.Tensor, state: State | None = None, masks: Masks | None = None
    ) -> tuple[torch.Tensor, State]:
        """Logits for every position: (B, T) ids -> (B, T, V) logits and the final state.

        `masks` (`sample_masks`) are this step's DropConnect and locked-dropout masks, used in
        training mode only; None in training mode draws fresh ones for this call. In eval mode
        no dropout of any kind applies, whatever is passed.
        """
        if state is None:
            state = self.begin_state(X.shape[0])
        if self.training and self.config.uses_masks:
            return self._masked_forward(X, state, masks)
        outputs, state = self.rnn(self.inputs(X), state)  # (B, T, D*H), D = directions
        if self.training:  # (in eval mode dropout is the identity: skip the call)
            outputs = self.drop(outputs)
        return self.output(outputs), state  # (B, T, V)

    def _masked_forward(
        self, X: torch.Tensor, state: State, masks: Masks | None
    ) -> tuple[torch.Tensor, State]:
        """The training forward pass with DropConnect and locked dropout (AWD-LSTM)."""
        if masks is None:
            masks = self.sample_masks(X.shape[0])
            assert masks is not None  # uses_masks
        inputs = self.inputs(X)  # (B, T, E)
        if masks.input is not None:
            inputs = inputs * masks.input[:, None]  # (B, 1, E): the same at every step
        weight_hh = None
        if masks.weight_hh is not None:  # the dropped copies go into the kernel, not the module
            weights = self.recurrent_weights()
            weight_hh = [w * m for w, m in zip(weights, masks.weight_hh, strict=True)]
        outputs, state = run_core(self.rnn, inputs, state, weight_hh, masks.hidden)
        if masks.output is not None:
            outputs = outputs * masks.output[:, None]  # (B, T, D*H)
        else:
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


# The fields that fix a model's weights' shapes: fine-tuning keeps them (dropout and the
# implementation may change, since the weights fit any of them).
ARCHITECTURE = ("cell", "hidden", "layers", "embed", "bidirectional", "tie_weights")


def load_with_new_rows(model: nn.Module, trained: dict[str, torch.Tensor], old_vocab: int) -> int:
    """Load `trained` weights of the same architecture into `model`, whose vocabulary is the
    trained one with characters appended (fine-tuning on a new text, `vocab.extend_vocab`).

    Every tensor of the same shape is copied whole. A tensor with one vocabulary-sized
    dimension (embedding and output rows, a one-hot input's columns, the output bias) gets the
    trained slice for the first `old_vocab` ids, so every character both texts share keeps its
    trained rows bit for bit; the new ids keep their fresh initialisation. Returns the number
    of tensors copied only in part.
    """
    state = model.state_dict()
    grown = 0
    for name, new in state.items():
        old = trained[name]
        if old.shape == new.shape:
            state[name] = old.to(new.dtype)
            continue
        differ = [d for d in range(new.dim()) if old.shape[d] != new.shape[d]]
        if old.dim() != new.dim() or len(differ) != 1 or old.shape[differ[0]] != old_vocab:
            raise ValueError(f"{name}: {tuple(old.shape)} does not grow into {tuple(new.shape)}")
        part = new.clone()
        part.narrow(differ[0], 0, old_vocab).copy_(old)
        state[name] = part
        grown += 1
    model.load_state_dict(state)
    return grown


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
