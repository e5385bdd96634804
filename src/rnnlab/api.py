"""The Python front door: load a run (or train one), then ask it questions from a notebook.

    import rnnlab
    lm = rnnlab.load("runs/timemachine")        # the run's best checkpoint
    lm.next("time traveller", k=5)              # [(char, prob), ...], most likely first
    lm.generate("time traveller", 100)          # the 100 new characters (greedy)
    lm.score("the time machine")                # [(char, bits), ...] surprisal
    lm.evaluate("the time machine")             # Metrics(loss, ppl, bpc, chars)
    lm.states("the time machine")               # (T, L, H) hidden activations
    lm.units("the time machine", "word_position")  # the units that track a pattern

Everything here is a thin layer over the library: prediction is `rnnlab.generate.predict`,
surprisal `rnnlab.generate.score_text`, the figures `rnnlab.metrics.evaluate`, training
`rnnlab.training.session`. The `rnnlab predict/score/evaluate` commands and the `rnnlab serve`
playground call these same methods, so a notebook, a terminal and a browser give the same
numbers, and a mistake raises the same `RnnlabError` with the same one-line message the CLI
prints. The one thing this module computes itself is the inspection of hidden units (`states`,
`pattern_signal`, `rank_units`), which no command needed before.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from rnnlab import checkpoint as ckpt
from rnnlab.corpus import DataConfig, corpus_label
from rnnlab.data import encode_corpus, prepare_data
from rnnlab.devices import resolve_device
from rnnlab.dynamic import DynamicConfig, DynamicReport, training_ids, tune_and_evaluate
from rnnlab.errors import CheckpointError, RnnlabError, UsageError, stderr
from rnnlab.export.onnx import RUNTIMES, CheckReport, OnnxLM, check_text, export_onnx
from rnnlab.generate import GenerateConfig, Prediction, encode_known, predict, score_text
from rnnlab.metrics import PARALLEL_ROWS, Metrics, evaluate
from rnnlab.model import RNNLM, ModelConfig, count_parameters, eval_mode
from rnnlab.options import from_options
from rnnlab.presets import get_preset
from rnnlab.training.config import RuntimeConfig, TrainConfig
from rnnlab.training.runs import LoadedRun, load_run

if TYPE_CHECKING:
    from rnnlab.training.lm import EpochResult

__all__ = [
    "PATTERNS",
    "CheckpointError",
    "GenerateConfig",
    "LanguageModel",
    "Metrics",
    "Prediction",
    "RnnlabError",
    "TrainedRun",
    "UnitScore",
    "UsageError",
    "load",
    "pattern_signal",
    "prediction_dict",
    "rank_units",
    "scores_dict",
    "train",
]


# -- patterns a hidden unit may track ------------------------------------------------------------

# Each pattern turns a text into one number per character: the property of the text *after*
# reading that character, which is what the hidden state at that step can know about. A unit that
# tracks the pattern has activations that correlate with it (Karpathy 2015, "The Unreasonable
# Effectiveness of Recurrent Neural Networks": a unit on inside quotes, one counting the line).
PATTERNS: dict[str, str] = {
    "quotes": 'inside double quotes ("...", \u201c...\u201d, \u300c...\u300d, \u300e...\u300f): 1, '
    "else 0",
    "brackets": "nesting depth of (), [], {} and their full-width forms",
    "word_position": "position in the current word (1 at its first letter, 0 between words)",
    "line_position": "characters since the start of the line",
    "after_space": "1 right after a space or other whitespace (a word starts next), else 0",
    "regex": "1 on every character inside a match of a regular expression you give, else 0",
}
_QUOTE_PAIRS = {"\u201c": "\u201d", "\u300c": "\u300d", "\u300e": "\u300f"}
_OPEN_BRACKETS = "([{\uff08\u3010\uff3b\uff5b"
_CLOSE_BRACKETS = ")]}\uff09\u3011\uff3d\uff5d"
MAX_REGEX = 200  # characters: a pattern is a short probe, not a program


def _inside_quotes(text: str) -> list[float]:
    inside, out = 0, []
    for c in text:
        if c == '"':
            inside = 1 - inside  # an opening quote counts as inside, a closing one as outside
        elif c in _QUOTE_PAIRS:
            inside = 1
        elif c in _QUOTE_PAIRS.values():
            inside = 0
        out.append(float(inside))
    return out


def _bracket_depth(text: str) -> list[float]:
    depth, out = 0, []
    for c in text:
        if c in _OPEN_BRACKETS:
            depth += 1
        elif c in _CLOSE_BRACKETS:
            depth = max(0, depth - 1)
        out.append(float(depth))
    return out


def _word_position(text: str) -> list[float]:
    n, out = 0, []
    for c in text:
        n = n + 1 if c.isalnum() else 0
        out.append(float(n))
    return out


def _line_position(text: str) -> list[float]:
    n, out = 0, []
    for c in text:
        n = 0 if c == "\n" else n + 1
        out.append(float(n))
    return out


def _regex_matches(text: str, regex: str | None) -> list[float]:
    if not regex:
        raise UsageError("pattern 'regex' needs a regular expression: pass regex=...")
    if len(regex) > MAX_REGEX:
        raise UsageError(f"the regular expression is {len(regex)} characters: at most {MAX_REGEX}")
    try:
        compiled = re.compile(regex)
    except re.error as e:
        raise UsageError(f"bad regular expression {regex!r}: {e}") from None
    out = [0.0] * len(text)
    for m in compiled.finditer(text):
        out[m.start() : m.end()] = [1.0] * (m.end() - m.start())
    return out


def pattern_signal(text: str, pattern: str, regex: str | None = None) -> list[float]:
    """One number per character of `text` saying where `pattern` holds (see `PATTERNS`).

    The value at position t describes the text after reading character t, the moment the hidden
    state `states(text)[t]` describes, so the two can be correlated position by position.
    """
    signals: dict[str, Callable[[str], list[float]]] = {
        "quotes": _inside_quotes,
        "brackets": _bracket_depth,
        "word_position": _word_position,
        "line_position": _line_position,
        "after_space": lambda t: [float(c.isspace()) for c in t],
    }
    if pattern == "regex":
        return _regex_matches(text, regex)
    if pattern not in signals:
        raise UsageError(f"unknown pattern {pattern!r}: use one of {', '.join(PATTERNS)}")
    return signals[pattern](text)


@dataclass(frozen=True)
class UnitScore:
    """How well one hidden unit tracks a signal: Pearson's r of its activation with it."""

    layer: int  # 0 = the layer that reads the input
    unit: int  # index in the layer's state (forward units first when bidirectional)
    r: float  # in [-1, 1]; a unit with a constant activation gets 0

    def to_dict(self) -> dict[str, int | float]:
        return dataclasses.asdict(self)


def rank_units(states: torch.Tensor, signal: Sequence[float], top: int = 10) -> list[UnitScore]:
    """The `top` units whose activations correlate most with `signal` (by |r|, strongest first).

    Pearson's r over the T positions, computed for every unit of every layer at once in float64;
    ties keep the order layer by layer, unit by unit.

    Shapes:
        states: (T, L, H) as returned by `LanguageModel.states`; signal: T numbers.
    """
    T, L, H = states.shape
    if len(signal) != T:
        raise UsageError(f"the signal has {len(signal)} values for {T} characters: give one each")
    if top < 1:
        raise UsageError(f"top must be at least 1, got {top}")
    s = torch.tensor([float(v) for v in signal], dtype=torch.float64)  # (T,)
    if not torch.isfinite(s).all():
        raise UsageError("the signal holds a value that is not a finite number")
    s = s - s.mean()
    if float(s.norm()) == 0.0:
        raise UsageError(
            "the pattern is the same at every character of this text: choose a text where it "
            "changes, or another pattern"
        )
    A = states.detach().to("cpu", torch.float64).reshape(T, L * H)  # (T, L*H)
    A = A - A.mean(dim=0)
    denom = A.norm(dim=0) * s.norm()  # (L*H,)
    r = torch.where(denom > 0, (A.T @ s) / denom.clamp_min(1e-300), 0.0).clamp(-1.0, 1.0)
    order = r.abs().argsort(descending=True, stable=True)[: min(top, L * H)]
    return [UnitScore(int(i) // H, int(i) % H, float(r[i])) for i in order]


# -- JSON shapes shared by `--json`, the playground and notebooks ---------------------------------


def prediction_dict(pred: Prediction) -> dict[str, Any]:
    """A prediction as `rnnlab predict --json` prints it and `POST /api/predict` answers it."""
    return {
        "prefix": pred.prefix,
        "next": [{"char": c, "prob": p} for c, p in pred.next],
        "continuation": pred.continuation,
        "log_prob": pred.log_prob,
    }


def scores_dict(text: str, scores: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """Surprisal as `rnnlab score --json` prints it: each character's bits and their mean."""
    return {
        "text": text,
        "chars": [{"char": c, "bits": b} for c, b in scores],
        "mean_bits": sum(b for _, b in scores) / len(scores),
    }


# -- the loaded model -----------------------------------------------------------------------------

_TORCH_CORES = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
GENERATE_CHARS = 100  # what `generate` writes when not told how many: a sentence or two


class LanguageModel:
    """A trained run, loaded: ask it for next characters, continuations, surprisal and states.

    Build one with `rnnlab.load` (or `rnnlab.train`). `run` is the `LoadedRun` underneath: the
    `RNNLM` (`.model`), its `Vocab` (`.vocab`) and the configs it was trained with.
    """

    def __init__(self, run: LoadedRun) -> None:
        self.run = run
        self.model: RNNLM = run.model
        self.vocab = run.vocab

    @property
    def name(self) -> str:
        """The run directory's name: what the playground lists the run as."""
        return self.run.run_dir.name

    @property
    def device(self) -> torch.device:
        return self.model.output.weight.device

    def __repr__(self) -> str:
        c = self.run.model_config
        return (
            f"LanguageModel({self.name!r}: {c.cell} {c.layers}x{c.hidden}, vocabulary "
            f"{len(self.vocab)}, {corpus_label(self.run.data.corpus)}, {self.device})"
        )

    def _repr_html_(self) -> str:
        """How Jupyter shows the model: a table of what it is and its best held-out figures.

        `rnnlab.display` has the playground's other pictures (`show_surprisal`, `show_units`,
        `show_training`, `show_next`).
        """
        from rnnlab import display  # on first use: only notebooks draw

        return display.model_html(self)

    # -- prediction --------------------------------------------------------------------------

    def predict(
        self,
        prefixes: str | Sequence[str],
        config: GenerateConfig | None = None,
        **options: Any,
    ) -> list[Prediction]:
        """Next-character candidates and a `num_preds`-character continuation of each prefix.

        What `rnnlab predict` prints, for several prefixes at once (batched). `config`, or the
        fields of `GenerateConfig` as keywords (the names of `rnnlab predict`'s flags, with `_`
        for `-`; `steps=` is `num_preds=`), not both.
        """
        if config is not None and options:
            raise UsageError("give either a GenerateConfig or its fields as keywords, not both")
        if config is None:
            config = from_options(GenerateConfig, options)
        if isinstance(prefixes, str):
            prefixes = [prefixes]
        return predict(self.model, self.vocab, list(prefixes), config)

    def next(self, prefix: str, k: int = GenerateConfig.show) -> list[tuple[str, float]]:
        """The `k` most likely next characters after `prefix`, most likely first."""
        return self.predict(prefix, show=k)[0].next

    def generate(self, prefix: str, num_preds: int | None = None, **options: Any) -> str:
        """The `num_preds` (default 100) characters the model writes after `prefix`.

        The prefix is not repeated. The other keywords are `predict`'s (strategy, temperature,
        top_k, top_p, beam, length_norm, seed; `steps=` is `num_preds=`): greedy unless a
        sampling option or `strategy` ("greedy", "sample", "beam") says otherwise, exactly as
        `rnnlab predict --num-preds`; a `seed` makes sampling repeatable.
        """
        if num_preds is not None:
            options = {"num_preds": num_preds, **options}
        config = from_options(GenerateConfig, options, defaults={"num_preds": GENERATE_CHARS})
        return self.predict(prefix, config)[0].continuation

    # -- reading a text ----------------------------------------------------------------------

    def score(self, text: str) -> list[tuple[str, float]]:
        """Surprisal, -log2 p(c_t | c_<t), of every character of `text` after the first.

        The first character is context only; the mean of the bits is the text's bits/char.
        """
        return score_text(self.model, self.vocab, text)

    @torch.no_grad()
    def alternatives(self, text: str, k: int = 3) -> list[list[tuple[str, float]]]:
        """What the model expected at each character `score` rates: its `k` likeliest guesses.

        Entry t-1 lists the candidates for character t (t >= 1), from the same left-to-right
        read of `text` as `score`, so the probability of the character that came, when it is
        among them, is 2 ** -bits. Only the top `k` per position are returned, never the whole
        distribution (a Chinese model has thousands of symbols).
        """
        if len(text) < 2:
            raise UsageError(
                "text to score needs at least two characters (the first is only context)"
            )
        if k < 1:
            raise UsageError(f"k must be at least 1, got {k}")
        ids = encode_known(self.vocab, text, "text").to(self.device)
        with eval_mode(self.model):
            logits, _ = self.model(ids[:-1].unsqueeze(0))  # (1, T-1, V)
        tokens = self.vocab.idx_to_token
        out = []
        for piece in logits[0].split(512):  # (t, V): float64 a piece at a time, not (T, V) at once
            top = torch.softmax(piece.double(), dim=-1).topk(min(k, len(self.vocab)), dim=-1)
            out += [
                [(tokens[i], p) for p, i in zip(ps, ix, strict=True)]
                for ps, ix in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            ]
        return out

    def evaluate(
        self,
        text: str | None = None,
        *,
        corpus: str | Path | list[str | Path] | None = None,
        cleaning: str | None = None,
        encoding: str = "utf-8",
        dynamic: bool | DynamicConfig = False,
    ) -> Metrics | DynamicReport:
        """Loss (nats/char), perplexity and bits/char of the model on a text.

        With `text`, on that string (characters the model never saw are refused, as in
        `score`); with `corpus`, on the whole of a built-in corpus or a file, as
        `rnnlab evaluate RUN --corpus` (a large file is streamed); with neither, on the held-out
        split of the corpus the run was trained on. The state is carried along the text.

        `dynamic=True` (or a `DynamicConfig`) returns a `DynamicReport` instead: the same static
        figures (`.static`) and beside them the dynamic-evaluation figures (`.dynamic`), eta and
        lambda tuned first on the end of the run's training text (`rnnlab.dynamic`). The model
        is not changed.
        """
        if text is not None and corpus is not None:
            raise UsageError("give a text or a corpus to evaluate on, not both")
        if text is not None:
            ids = encode_known(self.vocab, text, "text")
        elif corpus is not None:
            cfg = dataclasses.replace(
                self.run.data, corpus=corpus, cleaning=cleaning, encoding=encoding
            )
            ids = encode_corpus(cfg, self.vocab)
        else:
            ids = prepare_data(self.run.data, vocab=self.vocab).valid_ids
        if len(ids) < 2:
            raise UsageError("text is too short to evaluate: it needs at least two characters")
        if not dynamic:
            return evaluate(self.model, ids, rows=PARALLEL_ROWS)
        config = DynamicConfig() if dynamic is True else dynamic
        if not isinstance(config, DynamicConfig):
            raise UsageError(f"dynamic must be True, False or a DynamicConfig, got {dynamic!r}")
        train_ids = training_ids(self.run.data, self.vocab)
        return tune_and_evaluate(self.model, train_ids, ids, config, static_rows=PARALLEL_ROWS)

    @torch.no_grad()
    def states(self, text: str) -> torch.Tensor:
        """The hidden state of every layer after each character of `text`: (T, L, H), on the CPU.

        Row t is what the model holds after reading text[:t+1]; layer L-1's row is what the
        output layer reads to predict character t+1. An LSTM gives its h (not its cell c); a
        bidirectional model gives (T, L, 2H), forward units first.

        The core is run one layer at a time as a one-layer `nn.RNN/GRU/LSTM` holding that
        layer's weights (every implementation shares torch's names and layout), which yields
        each layer's whole sequence of states in one call where the stacked core only returns the
        top layer's. Dropout between layers is off, as in evaluation.
        """
        if not text:
            raise UsageError("the text is empty: give at least one character")
        X = encode_known(self.vocab, text, "text").to(self.device).unsqueeze(0)  # (1, T)
        model, cfg = self.model, self.run.model_config
        core = model.rnn
        weights = core.state_dict()
        p = model.output.weight
        inputs = model.inputs(X)  # (1, T, E)
        layers = []
        for layer in range(cfg.layers):
            extra = {"nonlinearity": core.nonlinearity} if cfg.cell == "rnn" else {}
            one = _TORCH_CORES[cfg.cell](
                inputs.shape[-1], cfg.hidden, 1, batch_first=True, bias=getattr(core, "bias", True),
                bidirectional=cfg.bidirectional, device=p.device, dtype=p.dtype, **extra,
            )  # fmt: skip
            own = re.compile(rf"^(.*_l){layer}((_reverse)?)$")
            one.load_state_dict(
                {own.sub(r"\g<1>0\2", k): v for k, v in weights.items() if own.match(k)}
            )
            inputs, _ = one(inputs)  # (1, T, D*H), from the zero state
            layers.append(inputs[0])
        return torch.stack(layers, dim=1).cpu()  # (T, L, D*H)

    def units(
        self,
        text: str,
        pattern: str | Sequence[float],
        regex: str | None = None,
        top: int = 10,
    ) -> list[UnitScore]:
        """The hidden units that track `pattern` best on `text`, strongest first.

        `pattern` is a name from `PATTERNS` ("quotes", "brackets", "word_position", ...; with
        "regex", give `regex=`) or your own numbers, one per character.
        """
        signal = pattern_signal(text, pattern, regex) if isinstance(pattern, str) else pattern
        return rank_units(self.states(text), signal, top)

    # -- taking the model elsewhere -----------------------------------------------------------

    def export_onnx(self, path: str | Path, force: bool = False) -> CheckReport:
        """Write the model as one ONNX file, once onnxruntime agrees with PyTorch on it.

        The file's interface and the check are `rnnlab.export.onnx`'s (what
        `rnnlab export RUN --format onnx` runs); the report holds the check's figures. A failed
        check raises `CheckFailed` and writes nothing. Needs `pip install "rnnlab[export]"`.
        """
        text = check_text(self.run.data, self.vocab, self.model)
        label = corpus_label(self.run.data.corpus)
        return export_onnx(self.model, self.vocab, label, text, path, force)

    def with_runtime(self, runtime: str) -> LanguageModel:
        """This model answered by "torch" (itself) or "onnx": its exported graph in onnxruntime.

        The onnx twin runs on the CPU through the same decoding code, so `predict`, `next`,
        `generate`, `score` and `evaluate` of the two can be compared; `states` and `units`
        read the layers themselves and stay with PyTorch.
        """
        if runtime not in RUNTIMES:
            raise UsageError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
        if runtime == "torch":
            return self
        onnx_model = OnnxLM.from_model(self.model, self.vocab, corpus_label(self.run.data.corpus))
        return LanguageModel(dataclasses.replace(self.run, model=onnx_model))

    # -- the run's record --------------------------------------------------------------------

    def training_log(self) -> list[dict[str, int | float | None]]:
        """The run's metrics.csv, one dict per epoch (train and held-out figures); [] if none.

        An empty or non-numeric field (a diverged epoch) becomes None.
        """
        path = self.run.run_dir / ckpt.METRICS
        if not path.is_file():
            return []
        rows = []
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                rows.append({k: _number(v) for k, v in row.items() if k is not None})
        return rows

    def describe(self) -> dict[str, Any]:
        """What the run is, as JSON-ready data: its configs, vocabulary size and checkpoint.

        The corpus is named by its label (a file by its stem) and no local path appears, so the
        result may be shown to anyone.
        """
        data = dataclasses.asdict(self.run.data)
        data["corpus"] = corpus_label(self.run.data.corpus)
        checkpoint = self.run.checkpoint
        return {
            "name": self.name,
            "corpus": data["corpus"],
            "vocab_size": len(self.vocab),
            "parameters": count_parameters(self.model),
            "checkpoint": checkpoint.name if checkpoint is not None else None,
            "data": data,
            "model": dataclasses.asdict(self.run.model_config),
            "train": dataclasses.asdict(self.run.train_config),
        }


def _number(value: str | None) -> int | float | None:
    """A metrics.csv field as a number: int for counts (epoch, step), None for blank/inf/nan."""
    if value is None or value == "":
        return None
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def load(
    path: str | Path,
    device: str | torch.device = "auto",
    impl: str | None = None,
    warn: Callable[[str], None] = stderr,
) -> LanguageModel:
    """The best checkpoint of a run directory (or the checkpoint directory given), verified.

    Args:
        path: a run directory written by `rnnlab train` / `rnnlab.train`, or RUN/checkpoints/
            step-NNNNNNNN for one checkpoint.
        device: "auto" (the accelerator if there is one), "cpu", "cuda", "cuda:N" or "mps".
        impl: load the weights into another recurrent implementation ("torch", "scratch",
            "fast"); the default is the run's own.
        warn: where a note about a skipped damaged checkpoint goes (stderr by default).

    Raises:
        CheckpointError: the run is missing, incomplete or corrupt (the CLI exits 3).
    """
    resolve_device(device)  # a device that is not there is refused before any file is read
    return LanguageModel(load_run(path, warn=warn, impl=impl, device=device))


# -- training -------------------------------------------------------------------------------------

_CONFIGS: tuple[type, ...] = (DataConfig, ModelConfig, TrainConfig, RuntimeConfig)


def _route(options: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """Split keyword options among the four configs by field name (the CLI's flag names)."""
    routed: tuple[dict[str, Any], ...] = ({}, {}, {}, {})
    owner = {f.name: i for i, cls in enumerate(_CONFIGS) for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in options if k not in owner)
    if unknown:
        raise UsageError(
            f"unknown training option {', '.join(map(repr, unknown))}: use the names of "
            "`rnnlab train`'s flags with _ for - (e.g. batch_size), or out, preset, force, "
            "resume, quiet, progress"
        )
    for k, v in options.items():
        routed[owner[k]][k] = v
    return routed


@dataclass
class TrainedRun:
    """What `rnnlab.train` returns: the trained model, loaded, and the record of its training."""

    model: LanguageModel  # the run's best checkpoint, as `rnnlab.load` gives it
    summary: dict[str, Any]  # the figures `rnnlab train --json` prints
    history: list[EpochResult]  # the trainer's per-epoch results (train and held-out)

    @property
    def run_dir(self) -> Path:
        return self.model.run.run_dir


def train(
    *,
    out: str | Path | None = None,
    preset: str | None = None,
    force: bool = False,
    resume: bool = False,
    quiet: bool = False,
    progress: bool = True,
    **options: Any,
) -> TrainedRun:
    """Train a language model as `rnnlab train` does, then load its best checkpoint.

    Every other keyword is a field of `DataConfig`, `ModelConfig`, `TrainConfig` or
    `RuntimeConfig` (device, precision, ...), named as the CLI's flags with `_` for `-`
    (`corpus="alphabet"`, `hidden=64`, `batch_size=16`), with the same defaults; an unknown name
    is a `UsageError`. The same arguments as `rnnlab train --json` train the same weights and
    give the same summary (the time aside); the model comes back loaded on the training device.

    Args:
        out: the run directory (default runs/CORPUS-CELL-TIME); refused if not empty unless
            `force`; with `resume`, the run to continue.
        preset: start from a named configuration, as `--preset`; keywords override it.
        quiet: True prints nothing: no progress bar, no per-epoch lines.
        progress: a progress bar during each epoch (on by default: a notebook shows a widget,
            through `tqdm.auto`, a terminal a text bar); False keeps the per-epoch lines only.
            The command line differs on purpose: `rnnlab train` draws its bar only on a
            terminal, so that logs and pipes get plain lines.
    """
    # The loop, tqdm and the multi-process code are imported on first use: loading a model
    # for questions (`load`) needs none of them.
    from rnnlab.training.lm import run_summary, start_lm_run
    from rnnlab.training.start import finish_run

    data_values, model_values, train_values, runtime_values = _route(options)
    if resume and out is None:
        raise UsageError("resume=True needs out= naming the run to continue")

    def log(message: str) -> None:
        if not quiet:
            print(message)

    trainer = start_lm_run(
        get_preset(preset) if preset else None, data_values, model_values, train_values,
        RuntimeConfig(**runtime_values), None if out is None else Path(out), force=force,
        resume=resume, progress=progress and not quiet, log=log, warn=stderr,
    )  # fmt: skip
    result = finish_run(trainer)
    model = load(trainer.run_dir, device=trainer.runtime.device)
    return TrainedRun(model, run_summary(result), trainer.history)
