"""The model as one ONNX file any ONNX runtime can use without rnnlab, checked before it is written.

The file's interface is the same for every cell, so a caller in any language needs no rnnlab code:

    ids         int64   (B, T)            character ids (the `vocabulary` metadata, index order)
    state       float32 (S, L, B, H)      S = 1 (h) for rnn and gru, 2 (h then c) for lstm;
                                          zeros start a text
    logits      float32 (B, T, V)         unnormalised; softmax gives the next-character
                                          probabilities after each position
    next_state  float32 (S, L, B, H)      the state after the last position: feed it back

B and T are dynamic. The graph is PyTorch's own modules (`nn.RNN/GRU/LSTM`, `nn.Linear`) traced
by `torch.onnx.export`'s TorchScript exporter (`dynamo=False`): it maps each recurrent layer
onto ONNX's RNN/GRU/LSTM operator with both dimensions dynamic, needs only the `onnx` package
and takes a fraction of a second, where the torch.export-based exporter also needs onnxscript,
takes seconds, and fixed the time dimension of the logits to the traced example's in our trials
(torch 2.13). A run trained with `--impl scratch` or `fast` is exported through `nn.*` modules
holding its weights: all three share names, layout and equations (`cells.py`).

Before a byte is written, onnxruntime and PyTorch read the same 1,000 held-out characters,
step by step with the state carried and as one sequence, and must agree on every next-character
probability to `TOLERANCE`; then both continue the text greedily for 1,000 characters and must
write the same ones (`check`). A file that fails is never written (`CheckFailed`, exit 1).
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from rnnlab.checkpoint import write_atomic
from rnnlab.corpus import DataConfig
from rnnlab.data import prepare_data
from rnnlab.decoding import greedy, sample
from rnnlab.errors import RnnlabError, UsageError
from rnnlab.export import CheckFailed
from rnnlab.generate import lm_advance
from rnnlab.model import RNNLM, State, eval_mode
from rnnlab.version import __version__
from rnnlab.vocab import UNK, Vocab

RUNTIMES = ("torch", "onnx")
OPSET = 17  # ONNX's RNN/GRU/LSTM operators as every current runtime implements them
TOLERANCE = 1e-5  # largest |p_onnx - p_torch| of any next-character probability
CHECK_CHARS = 1_000  # characters read, and characters continued greedily, by the check
INPUTS = ("ids", "state")
OUTPUTS = ("logits", "next_state")
INSTALL = 'pip install "rnnlab[export]"'


def require(module: str) -> ModuleType:
    """Import onnx or onnxruntime, or say in one line how to install them (exit 2)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(
            f"the ONNX export needs the {module} package, which is not installed: {INSTALL}"
        ) from None


def refuse_bidirectional(model: RNNLM) -> None:
    if model.config.bidirectional:
        raise UsageError(
            "a bidirectional model cannot be exported: its backward pass reads the characters "
            "it must predict, so it cannot continue a text; export a run trained without "
            "--bidirectional"
        )


def torch_twin(model: RNNLM) -> RNNLM:
    """The same weights in PyTorch's own modules, on the CPU, in float32 and evaluation mode."""
    config = dataclasses.replace(model.config, impl="torch")
    twin = RNNLM(model.vocab_size, config)
    twin.load_state_dict({k: v.detach().float().cpu() for k, v in model.state_dict().items()})
    return twin.eval()


def pack_state(state: State) -> torch.Tensor:
    """rnnlab's state (an (L, B, H) tensor, or the LSTM's (h, c)) as the file's (S, L, B, H)."""
    if isinstance(state, tuple):
        return torch.stack(state)
    return state.unsqueeze(0)


def unpack_state(state: torch.Tensor, lstm: bool) -> State:
    """The file's (S, L, B, H) state back as rnnlab's."""
    return (state[0], state[1]) if lstm else state[0]


class _FileInterface(nn.Module):
    """`RNNLM` behind the file's interface: (ids, state (S, L, B, H)) -> (logits, next_state)."""

    def __init__(self, model: RNNLM) -> None:
        super().__init__()
        self.model = model
        self.lstm = model.config.cell == "lstm"

    def forward(self, ids: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, new = self.model(ids, unpack_state(state, self.lstm))  # (B, T, V)
        return logits, pack_state(new)


def metadata(model: RNNLM, vocab: Vocab, corpus: str) -> dict[str, str]:
    """The file's `metadata_props`: what a caller needs to turn text into ids and back."""
    config = model.config
    return {
        "vocabulary": json.dumps(vocab.idx_to_token, ensure_ascii=False),
        "unknown": UNK,  # the symbol at index 0: every character not in the vocabulary
        "cell": config.cell,
        "layers": str(config.layers),
        "hidden": str(config.hidden),
        "state": "S=2: h then c" if config.cell == "lstm" else "S=1: h",
        "corpus": corpus,
        "rnnlab_version": __version__,
    }


def onnx_bytes(model: RNNLM, vocab: Vocab, props: dict[str, str]) -> bytes:
    """The serialized ONNX model of `model` with `props` as its metadata."""
    onnx = require("onnx")
    refuse_bidirectional(model)
    twin = _FileInterface(torch_twin(model)).eval()
    lstm = model.config.cell == "lstm"
    X = torch.zeros(1, 2, dtype=torch.long)  # (B, T): any example; both dimensions are dynamic
    state = pack_state(twin.model.begin_state(1))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter announces its own deprecation and traces nn.RNN's shape
        # checks; neither concerns a caller, and the check below is the real test.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            twin, (X, state), buffer, dynamo=False, opset_version=OPSET,
            input_names=list(INPUTS), output_names=list(OUTPUTS),
            dynamic_axes={
                "ids": {0: "batch", 1: "time"}, "state": {2: "batch"},
                "logits": {0: "batch", 1: "time"}, "next_state": {2: "batch"},
            },
        )  # fmt: skip
    proto = onnx.load_from_string(buffer.getvalue())
    proto.doc_string = (
        f"rnnlab character language model ({model.config.cell}, {model.config.layers} x "
        f"{model.config.hidden}). ids int64 (batch, time); state float32 (S, layers, batch, "
        f"hidden), S={2 if lstm else 1}, zeros start a text -> logits float32 (batch, time, "
        "vocabulary), softmax gives the next-character probabilities; next_state as state."
    )
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def read_metadata(data: bytes) -> dict[str, str]:
    """An ONNX file's metadata_props as a dict."""
    onnx = require("onnx")
    return {p.key: p.value for p in onnx.load_from_string(data).metadata_props}


class OnnxLM(nn.Module):
    """An exported graph run by onnxruntime, behind `RNNLM`'s calls (forward, read, begin_state).

    rnnlab's decoding, scoring and evaluation take it where they take an `RNNLM`, so the two
    runtimes answer every question through the same code, which is what `check` and
    `rnnlab predict --runtime onnx` compare. It runs on the CPU, with torch's thread count.
    """

    def __init__(self, data: bytes, config: Any, vocab_size: int) -> None:
        super().__init__()
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self.config = config
        self.vocab_size = vocab_size
        self.lstm = config.cell == "lstm"
        self.register_buffer("_cpu", torch.zeros(0), persistent=False)

    @classmethod
    def from_model(cls, model: RNNLM, vocab: Vocab, corpus: str = "") -> OnnxLM:
        data = onnx_bytes(model, vocab, metadata(model, vocab, corpus))
        return cls(data, model.config, model.vocab_size)

    @property
    def output(self) -> SimpleNamespace:
        # Decoding asks `model.output.weight.device` where its tensors go: the CPU here.
        return SimpleNamespace(weight=self._cpu)

    @property
    def rnn(self) -> nn.Module:
        # `LanguageModel.states` reads every layer's states from the recurrent core; the graph
        # gives out only the logits and the last state.
        raise UsageError(
            "hidden states come from the PyTorch model: the ONNX runtime gives only the logits "
            "and the final state; ask the model loaded without runtime='onnx'"
        )

    def forward(self, X: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """(B, T) ids -> (B, T, V) logits and the state after the last position, as `RNNLM`."""
        if state is None:
            state = self.begin_state(X.shape[0])
        logits, new = self.session.run(
            list(OUTPUTS),
            {
                "ids": np.ascontiguousarray(X.detach().cpu().long().numpy()),
                "state": np.ascontiguousarray(pack_state(state).detach().cpu().float().numpy()),
            },
        )
        return torch.from_numpy(logits), unpack_state(torch.from_numpy(new), self.lstm)

    def read(
        self, X: torch.Tensor, state: State | None = None, chunk: int = 4096
    ) -> tuple[torch.Tensor, State]:
        """The last step's logits (B, V) and the state after a long input, read in chunks."""
        for piece in X.split(chunk, dim=1):
            logits, state = self(piece, state)  # (B, t, V)
        return logits[:, -1], state  # type: ignore[return-value]

    def begin_state(self, batch_size: int) -> State:
        h = torch.zeros(self.config.layers, batch_size, self.config.hidden)
        return (h, torch.zeros_like(h)) if self.lstm else h


# -- the check ------------------------------------------------------------------------------------


@dataclass
class CheckText:
    """The characters the check reads, and where they come from (said beside the figures)."""

    ids: torch.Tensor  # (N,) int64
    source: str


def check_text(data: DataConfig, vocab: Vocab, model: RNNLM, n: int = CHECK_CHARS) -> CheckText:
    """The first `n` held-out characters of the run's corpus (topped up from its training text).

    When the corpus cannot be read here (a file left on the training machine), `n` characters
    the model samples itself (seed 0) stand in, and the source says so.
    """
    try:
        split = prepare_data(data, vocab=vocab)
    except RnnlabError:
        with eval_mode(model):
            start = torch.ones(1, dtype=torch.long, device=model.output.weight.device)
            hyp = sample(
                lm_advance(model), model.begin_state(1), start, n,
                generator=torch.Generator().manual_seed(0),
            )[0]  # fmt: skip
        source = f"{n:,} characters the model sampled (seed 0): its corpus is not readable here"
        return CheckText(torch.tensor(hyp.ids, dtype=torch.long), source)
    valid = split.valid_ids[:n].long()
    if len(valid) >= n:
        return CheckText(valid, f"the first {n:,} held-out characters")
    more = split.train_ids[: n - len(valid)].long()
    return CheckText(
        torch.cat([valid, more]),
        f"the {len(valid):,} held-out characters and the first {len(more):,} training characters",
    )


@dataclass
class CheckReport:
    """How closely onnxruntime follows PyTorch on one text (the figures the export prints)."""

    chars: int  # characters read
    source: str
    tolerance: float
    step_prob: float  # max |p_onnx - p_torch| over every position and character, step by step
    step_state: float  # max |state difference| after the last step
    sequence_prob: float  # the same, the text given as one sequence
    sequence_state: float
    greedy_chars: int  # characters continued greedily by each runtime
    greedy_same: int  # how many of them agree before the first difference
    onnxruntime: str
    torch: str

    @property
    def passed(self) -> bool:
        return (
            self.step_prob <= self.tolerance
            and self.sequence_prob <= self.tolerance
            and self.greedy_same == self.greedy_chars
        )

    def lines(self) -> list[str]:
        greedy_line = (
            "identical"
            if self.greedy_same == self.greedy_chars
            else f"DIFFERENT from character {self.greedy_same + 1}"
        )
        return [
            f"check: onnxruntime {self.onnxruntime} against PyTorch {self.torch} on {self.source}",
            f"  step by step, state carried: max |p difference| {self.step_prob:.2e}, "
            f"final state {self.step_state:.2e}",
            f"  as one sequence:             max |p difference| {self.sequence_prob:.2e}, "
            f"final state {self.sequence_state:.2e}",
            f"  greedy continuation of {self.greedy_chars:,} characters: {greedy_line}",
            f"  tolerance {self.tolerance:g} on every probability, greedy text identical: "
            + ("passed" if self.passed else "FAILED"),
        ]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed}


def _max_diff(a: State, b: State) -> float:
    pairs = zip(a, b, strict=True) if isinstance(a, tuple) else [(a, b)]
    return max(float((x.double() - y.double()).abs().max()) for x, y in pairs)  # type: ignore[union-attr]


def _probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.double(), dim=-1)


@torch.no_grad()
def check(
    model: RNNLM, runtime: OnnxLM, text: CheckText, tolerance: float = TOLERANCE
) -> CheckReport:
    """Compare `runtime` with PyTorch's `model` on `text` (see the module's docstring)."""
    ort = require("onnxruntime")
    twin = torch_twin(model)
    X = text.ids.long().unsqueeze(0)  # (1, N)
    # Step by step, each runtime carrying its own state.
    s_torch, s_onnx = twin.begin_state(1), runtime.begin_state(1)
    step_prob = 0.0
    for t in range(X.shape[1]):
        a, s_torch = twin(X[:, t : t + 1], s_torch)  # (1, 1, V)
        b, s_onnx = runtime(X[:, t : t + 1], s_onnx)
        step_prob = max(step_prob, float((_probs(a) - _probs(b)).abs().max()))
    step_state = _max_diff(s_torch, s_onnx)
    # The whole text at once.
    a, seq_torch = twin(X, twin.begin_state(1))  # (1, N, V)
    b, seq_onnx = runtime(X, runtime.begin_state(1))
    sequence_prob = float((_probs(a) - _probs(b)).abs().max())
    # Both continue the text greedily from where they stand after it: the last character is
    # fed again from the state before it, as `rnnlab predict` starts from a prefix.
    start = X[:, -1]  # (1,)
    continued = []
    for m in (twin, runtime):
        state = m.begin_state(1)
        if X.shape[1] > 1:
            _, state = m(X[:, :-1], state)
        continued.append(greedy(lm_advance(m), state, start, CHECK_CHARS)[0].ids)  # type: ignore[arg-type]
    ids_torch, ids_onnx = continued
    same = next(
        (i for i, (p, q) in enumerate(zip(ids_torch, ids_onnx, strict=True)) if p != q),
        len(ids_torch),
    )
    return CheckReport(
        chars=X.shape[1], source=text.source, tolerance=tolerance,
        step_prob=step_prob, step_state=step_state,
        sequence_prob=sequence_prob, sequence_state=_max_diff(seq_torch, seq_onnx),
        greedy_chars=len(ids_torch), greedy_same=same,
        onnxruntime=ort.__version__, torch=torch.__version__.split("+")[0],
    )  # fmt: skip


# -- the export -----------------------------------------------------------------------------------


def check_destination(out: Path, force: bool) -> None:
    """Refuse to overwrite a file without `force`, and never replace a directory (exit 2)."""
    if out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a directory: give the path of the .onnx file")
    if out.exists() and not force:
        raise UsageError(
            f"{str(out)!r} exists: pass --force to overwrite it, or choose another --out"
        )


def export_onnx(
    model: RNNLM, vocab: Vocab, corpus: str, text: CheckText, out: str | Path, force: bool = False
) -> CheckReport:
    """Write `model` to `out` as an ONNX file once onnxruntime has passed the check on `text`.

    Raises:
        UsageError: `out` exists (without `force`) or is a directory; a bidirectional model.
        CheckFailed: onnxruntime disagrees with PyTorch (`.report` holds the figures); nothing
            is written.
    """
    out = Path(out)
    refuse_bidirectional(model)
    check_destination(out, force)
    data = onnx_bytes(model, vocab, metadata(model, vocab, corpus))
    report = check(model, OnnxLM(data, model.config, model.vocab_size), text)
    if not report.passed:
        raise CheckFailed(
            f"onnxruntime does not answer as PyTorch does (max |p difference| "
            f"{max(report.step_prob, report.sequence_prob):.2e}, tolerance {report.tolerance:g}; "
            f"greedy text agrees for {report.greedy_same:,} of {report.greedy_chars:,} "
            f"characters): nothing was written to {str(out)!r}",
            report,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, data)
    return report


def size_label(n: int) -> str:
    """Bytes as a reader wants them: 812 B, 46.1 kB, 2.48 MB."""
    if n < 1000:
        return f"{n} B"
    exp = min(int(math.log10(n) // 3), 3)
    return f"{n / 1000**exp:.3g} {['B', 'kB', 'MB', 'GB'][exp]}"
