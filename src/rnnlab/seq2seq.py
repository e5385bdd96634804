"""A character encoder-decoder: an encoder RNN reads a word, a decoder RNN writes another.

The encoder (embedding -> RNN) reads the padded source; its final state, taken at each row's true
last character, is the decoder's initial state (d2l 10.7). The decoder (embedding -> RNN -> Linear
on every step) is trained with teacher forcing: it reads <bos> y_1 .. y_n and predicts
y_1 .. y_n <eos>, and the loss is the mean cross-entropy over the target symbols that exist, so
padding never counts. At inference it starts from <bos> and feeds back its own choices (greedy,
sampling or beam search from `rnnlab.decoding`) until <eos> or a length limit.

Letters used in shape comments:
    B  pairs per batch          S  source length (padded)      T  target length + 1 (padded)
    V  vocabulary size          E  embedding size              H  hidden units    L  layers

Padding is made harmless, not merely unlikely to matter: the encoder reads a packed sequence
(`pack_padded_sequence`), so pad positions never enter its state; decoder positions after a
target's end come after everything that counts (the RNN is causal), and the loss mask is built
from the lengths, not from the pad ids.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from tqdm import tqdm

import rnnlab
from rnnlab import checkpoint as ckpt
from rnnlab.decoding import DecodeConfig, Hypothesis, StepFn, beam_search, decode, greedy
from rnnlab.errors import CheckpointError, NumericalError, UsageError
from rnnlab.model import CELLS, State
from rnnlab.pairs import (
    BUILTINS,
    Batch,
    Pair,
    PairData,
    PairsConfig,
    PairVocab,
    make_batch,
    pairs_tsv,
)
from rnnlab.vocab import require_known

HELDOUT = "heldout.tsv"
RUN_FILES = (ckpt.CONFIG, ckpt.WEIGHTS, HELDOUT, ckpt.METRICS, ckpt.MANIFEST)
METRICS_HEADER = "epoch,step,train_loss,eval_loss,eval_exact,eval_cer,seconds,lr"
EVAL_BATCH = 256  # pairs decoded at once during evaluation
SAVE_EVERY = 30.0  # seconds between checkpoints while training; the last epoch is always saved


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


@dataclass
class Seq2SeqTrainConfig:
    """How to train: minibatches, optimizer, teacher forcing, budget."""

    batch_size: int = field(default=64, metadata={"help": "pairs per minibatch (B)"})
    lr: float = field(default=0.003, metadata={"help": "Adam learning rate"})
    clip: float = field(default=1.0, metadata={"help": "max global norm of the gradient"})
    epochs: int = field(default=30, metadata={"help": "passes over the training pairs"})
    max_time: float | None = field(
        default=None, metadata={"help": "stop after this many seconds of training"}
    )
    teacher_forcing: float = field(
        default=1.0,
        metadata={
            "help": "probability that the decoder reads the true previous symbol rather "
            "than its own greedy guess (1: always; < 1 decodes step by step, slower)"
        },
    )
    lr_decay: float = field(
        default=1.0,
        metadata={"help": "multiply the learning rate by this after every epoch (1: constant)"},
    )
    seed: int = field(default=0, metadata={"help": "seed for initialisation, order, forcing"})

    def __post_init__(self) -> None:
        for name in ("batch_size", "epochs"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise UsageError(f"--clip must be a positive number, got {self.clip}")
        if not 0.0 <= self.teacher_forcing <= 1.0:
            raise UsageError(f"--teacher-forcing must be in [0, 1], got {self.teacher_forcing}")
        if not 0 < self.lr_decay <= 1:
            raise UsageError(f"--lr-decay must be in (0, 1], got {self.lr_decay}")
        if self.max_time is not None and not (math.isfinite(self.max_time) and self.max_time > 0):
            raise UsageError(
                f"--max-time must be a positive number of seconds, got {self.max_time}"
            )


# -- the model ------------------------------------------------------------------------------------


def make_rnn(config: Seq2SeqConfig) -> nn.Module:
    module = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[config.cell]
    dropout = config.dropout if config.layers > 1 else 0.0  # torch warns on 1-layer dropout
    return module(config.embed, config.hidden, config.layers, batch_first=True, dropout=dropout)


class Encoder(nn.Module):
    """Embedding -> RNN over the source; its job is to leave the whole word in the final state."""

    def __init__(self, vocab_size: int, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, config.embed, padding_idx=PairVocab.pad)
        self.rnn = make_rnn(config)

    def forward(self, src: torch.Tensor, src_len: torch.Tensor) -> State:
        """The state after each row's last real character: (L, B, H) or the LSTM pair."""
        emb = self.embedding(src)  # (B, S, E)
        # Packing runs each row only over its own length; the state comes back in batch order.
        packed = pack_padded_sequence(emb, src_len.cpu(), batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)
        return state


class Decoder(nn.Module):
    """Embedding -> RNN -> Linear on every step, started from the encoder's final state."""

    def __init__(self, vocab_size: int, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, config.embed, padding_idx=PairVocab.pad)
        self.rnn = make_rnn(config)
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
        ids = batch.tgt_in[:, 0]  # (B,) <bos>
        steps = []
        for t in range(T):
            step_logits, state = self.decoder(ids[:, None], state)  # (B, 1, V)
            steps.append(step_logits)
            if t + 1 < T:
                forced = torch.rand(B, generator=generator) < teacher_forcing
                guess = step_logits[:, 0].argmax(dim=-1)
                ids = torch.where(forced, batch.tgt_in[:, t + 1], guess)
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


# -- decoding -------------------------------------------------------------------------------------


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off inside, the caller's train/eval mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def decoder_step_fn(model: Seq2Seq) -> StepFn:
    """The decoder as a step function for `rnnlab.decoding`: ids (B,) -> logits (B, V)."""

    def step(ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        logits, state = model.decoder(ids[:, None], state)  # (B, 1, V)
        return logits[:, 0], state

    return step


def auto_max_len(sources: Sequence[str], max_target_len: int) -> int:
    """A length limit that a correct output never reaches: room for twice the longest source."""
    return max(2 * max(len(s) for s in sources), max_target_len) + 10


def encode_sources(vocab: PairVocab, words: Sequence[str]) -> Batch:
    """User words as a batch (targets empty), refusing characters the model has never seen."""
    if not words:
        raise UsageError("give at least one word to translate")
    for w in words:
        if not w:
            raise UsageError("a word to translate is empty: give at least one character")
        require_known(vocab.unknown_chars(w), repr(w), "the training pairs")
    return make_batch(vocab, [(w, "") for w in words])


@torch.no_grad()
def translate_batch(
    model: Seq2Seq,
    batch: Batch,
    config: DecodeConfig,
    max_len: int,
) -> list[Hypothesis]:
    """The best hypothesis for every source of a batch under `config`'s strategy."""
    with eval_mode(model):
        state = model.encoder(batch.src, batch.src_len)
        start = torch.full((len(batch),), PairVocab.bos, dtype=torch.long)
        return decode(decoder_step_fn(model), state, start, max_len, PairVocab.eos, config)


@dataclass
class Translation:
    source: str
    output: str
    log_prob: float  # natural-log likelihood of output + <eos> under the model
    ended: bool  # False: the length limit cut the output


def translate(
    model: Seq2Seq,
    vocab: PairVocab,
    words: Sequence[str],
    config: DecodeConfig | None = None,
    max_len: int = 0,
    max_target_len: int = 0,
) -> list[Translation]:
    """Translate words with a trained model; `max_len` 0 picks `auto_max_len`."""
    config = config or DecodeConfig()
    batch = encode_sources(vocab, words)
    limit = max_len or auto_max_len(words, max_target_len)
    hyps = translate_batch(model, batch, config, limit)
    return [
        Translation(w, vocab.decode(h.ids), h.log_prob, h.ended)
        for w, h in zip(words, hyps, strict=True)
    ]


# -- evaluation -----------------------------------------------------------------------------------


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: fewest insertions, deletions and substitutions turning a into b."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i]
        for j, cb in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@dataclass
class EvalResult:
    pairs: int
    exact: float  # fraction of outputs equal to the reference
    cer: float  # total edit distance / total reference characters
    loss: float  # teacher-forced cross-entropy per reference symbol (<eos> included), nats
    mean_log_prob: float  # mean log-likelihood of the decoded outputs (what beam search raises)
    outputs: list[Hypothesis]
    texts: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "exact": self.exact,
            "cer": self.cer,
            "loss": self.loss,
            "mean_log_prob": self.mean_log_prob,
        }


@torch.no_grad()
def evaluate_pairs(
    model: Seq2Seq,
    vocab: PairVocab,
    pairs: Sequence[Pair],
    config: DecodeConfig | None = None,
    max_len: int = 0,
    max_target_len: int = 0,
) -> EvalResult:
    """Exact match, character error rate and loss of `model` on `pairs` (decoded in batches)."""
    if not pairs:
        raise UsageError("no pairs to evaluate")
    config = config or DecodeConfig()
    hyps: list[Hypothesis] = []
    total_nll, symbols = 0.0, 0
    with eval_mode(model):
        for i in range(0, len(pairs), EVAL_BATCH):
            chunk = pairs[i : i + EVAL_BATCH]
            batch = make_batch(vocab, chunk)
            logits = model(batch)  # (B, T, V) teacher-forced: the loss of the references
            total_nll += masked_nll(logits, batch.tgt_out, batch.mask).item()
            symbols += int(batch.mask.sum())
            limit = max_len or auto_max_len([s for s, _ in chunk], max_target_len)
            hyps += translate_batch(model, batch, config, limit)
    texts = [vocab.decode(h.ids) for h in hyps]
    refs = [t for _, t in pairs]
    exact = sum(o == r for o, r in zip(texts, refs, strict=True)) / len(pairs)
    errors = sum(edit_distance(o, r) for o, r in zip(texts, refs, strict=True))
    return EvalResult(
        pairs=len(pairs),
        exact=exact,
        cer=errors / sum(len(r) for r in refs),
        loss=total_nll / symbols,
        mean_log_prob=sum(h.log_prob for h in hyps) / len(hyps),
        outputs=hyps,
        texts=texts,
    )


@torch.no_grad()
def beam_vs_greedy(
    model: Seq2Seq,
    vocab: PairVocab,
    pairs: Sequence[Pair],
    beam: int,
    length_norm: float = 0.0,
    max_target_len: int = 0,
) -> dict[str, Any]:
    """Log-likelihood of beam search's and greedy's outputs on the same sources, pair by pair.

    Where both write the same output their log-likelihoods agree up to float noise (different
    batch shapes), so those pairs count as `same_output`; the others are compared.
    """
    greedy_hyps: list[Hypothesis] = []
    beam_hyps: list[Hypothesis] = []
    step = decoder_step_fn(model)
    with eval_mode(model):
        for i in range(0, len(pairs), EVAL_BATCH):
            chunk = pairs[i : i + EVAL_BATCH]
            batch = make_batch(vocab, chunk)
            limit = auto_max_len([s for s, _ in chunk], max_target_len)
            start = torch.full((len(chunk),), PairVocab.bos, dtype=torch.long)
            state = model.encoder(batch.src, batch.src_len)
            greedy_hyps += greedy(step, state, start, limit, PairVocab.eos)
            beams = beam_search(step, state, start, beam, limit, PairVocab.eos, length_norm)
            beam_hyps += [hyps[0] for hyps in beams]
    both = list(zip(beam_hyps, greedy_hyps, strict=True))
    differ = [(b.log_prob, g.log_prob) for b, g in both if (b.ids, b.ended) != (g.ids, g.ended)]
    return {
        "beam": beam,
        "length_norm": length_norm,
        "pairs": len(pairs),
        "greedy_mean_log_prob": sum(g.log_prob for g in greedy_hyps) / len(pairs),
        "beam_mean_log_prob": sum(b.log_prob for b in beam_hyps) / len(pairs),
        "same_output": len(both) - len(differ),
        "beam_higher": sum(b > g for b, g in differ),
        "beam_lower": sum(b < g for b, g in differ),
    }


# -- training -------------------------------------------------------------------------------------


@dataclass
class EpochRecord:
    epoch: int
    step: int
    train_loss: float  # mean per target symbol over the epoch, as trained (teacher forcing)
    eval: EvalResult  # on the held-out pairs, or the training pairs when none are held out
    seconds: float
    lr: float


class Seq2SeqTrainer:
    """The training loop of one run: Adam, masked mean cross-entropy, clipping, per-epoch eval."""

    def __init__(
        self,
        model: Seq2Seq,
        data: PairData,
        config: Seq2SeqTrainConfig,
        run_dir: Path | None,
        run_config: dict[str, Any],
        progress: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        self.model = model
        self.data = data
        self.config = config
        self.run_dir = run_dir
        self.run_config = run_config
        self.progress = progress
        self.log = log
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        self.gen = torch.Generator().manual_seed(config.seed)  # pair order and forcing draws
        self.eval_pairs = data.heldout or data.train
        self.max_target_len = max(len(t) for _, t in data.train)
        self.epoch = 0
        self.step = 0
        self.history: list[EpochRecord] = []
        self.metrics_rows = [METRICS_HEADER]

    def run_epoch(self, deadline: float | None) -> float:
        """One pass over the training pairs in a fresh random order; the mean training loss."""
        cfg, model = self.config, self.model
        model.train()
        order = torch.randperm(len(self.data.train), generator=self.gen).tolist()
        starts = range(0, len(order), cfg.batch_size)
        total, symbols = 0.0, 0
        bar = tqdm(
            starts,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            disable=not self.progress,
            leave=False,
            unit="batch",
        )
        for i in bar:
            chosen = [self.data.train[j] for j in order[i : i + cfg.batch_size]]
            batch = make_batch(self.data.vocab, chosen)  # (B, S), (B, T) padded
            loss = masked_loss(model, batch, cfg.teacher_forcing, self.gen)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # Clipping bounds the step when the gradient explodes through many time steps.
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip))
            if not (math.isfinite(loss.item()) and math.isfinite(norm)):
                raise NumericalError(
                    f"loss {loss.item()} / gradient norm {norm} at step {self.step + 1}: "
                    "lower --lr or --clip"
                )
            self.optimizer.step()
            self.step += 1
            n = int(batch.mask.sum())
            total += loss.item() * n
            symbols += n
            if self.progress:
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if deadline is not None and time.perf_counter() >= deadline:
                break
        bar.close()
        return total / max(symbols, 1)

    def fit(self) -> EpochRecord:
        """Train for `epochs` or `max_time`; evaluate every epoch; save every 30 s and at the end.

        The saved weights are the last epoch's: no checkpoint is chosen by its held-out score, so
        the held-out figures are not tuned on.
        """
        cfg = self.config
        deadline = None if cfg.max_time is None else time.perf_counter() + cfg.max_time
        last_save, unsaved = time.perf_counter(), False
        while self.epoch < cfg.epochs:
            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss = self.run_epoch(deadline)
            seconds = time.perf_counter() - t0
            result = evaluate_pairs(
                self.model, self.data.vocab, self.eval_pairs, max_target_len=self.max_target_len
            )
            self.epoch += 1
            record = EpochRecord(self.epoch, self.step, train_loss, result, seconds, lr)
            self.history.append(record)
            self.metrics_rows.append(
                f"{self.epoch},{self.step},{train_loss:.6f},{result.loss:.6f},"
                f"{result.exact:.6f},{result.cer:.6f},{seconds:.3f},{lr:.6g}"
            )
            for group in self.optimizer.param_groups:
                group["lr"] *= cfg.lr_decay
            unsaved = True
            if self.run_dir is not None and time.perf_counter() - last_save >= SAVE_EVERY:
                self.save()
                last_save, unsaved = time.perf_counter(), False
            what = "held-out" if self.data.heldout else "train"
            self.log(
                f"epoch {self.epoch:3d}  train loss {train_loss:.4f}  {what} loss "
                f"{result.loss:.4f}  exact {result.exact:6.1%}  CER {result.cer:.4f}  "
                f"{seconds:.1f} s"
            )
            if deadline is not None and time.perf_counter() >= deadline:
                break
        if self.run_dir is not None and unsaved:
            self.save()
        return self.history[-1]

    def save(self) -> None:
        assert self.run_dir is not None
        files = {
            ckpt.WEIGHTS: ckpt.tensors_bytes(dict(self.model.state_dict())),
            ckpt.CONFIG: ckpt.json_bytes(self.run_config),
            HELDOUT: pairs_tsv(self.data.heldout).encode("utf-8"),
        }
        ckpt.save_files(self.run_dir, files)
        csv = "\n".join(self.metrics_rows) + "\n"
        ckpt.write_atomic(self.run_dir / ckpt.METRICS, csv.encode("utf-8"))


# -- run directories ------------------------------------------------------------------------------


def default_run_dir(pairs: PairsConfig, model: Seq2SeqConfig) -> Path:
    name = pairs.pairs if pairs.pairs in BUILTINS else Path(pairs.pairs).stem or "pairs"
    return Path("runs") / f"seq2seq-{name}-{model.cell}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_config(
    pairs: PairsConfig,
    model: Seq2SeqConfig,
    train: Seq2SeqTrainConfig,
    data: PairData,
) -> dict[str, Any]:
    """Everything needed to rebuild the model and understand the run, as JSON-ready data."""
    return {
        "kind": "seq2seq",
        "rnnlab_version": rnnlab.__version__,
        "torch_version": torch.__version__,
        "pairs": dataclasses.asdict(pairs),
        "model": dataclasses.asdict(model),
        "train": dataclasses.asdict(train),
        "vocab": data.vocab.to_json(),
        "resolved": {
            "valid_fraction": pairs.resolved_valid_fraction,
            "train_pairs": len(data.train),
            "heldout_pairs": len(data.heldout),
            "vocab_size": len(data.vocab),
            "max_target_len": max(len(t) for _, t in data.train),
        },
    }


@dataclass
class LoadedSeq2Seq:
    run_dir: Path
    model: Seq2Seq
    vocab: PairVocab
    pairs: PairsConfig
    model_config: Seq2SeqConfig
    train_config: Seq2SeqTrainConfig
    heldout: list[Pair]
    max_target_len: int


def load_seq2seq(run_dir: str | Path) -> LoadedSeq2Seq:
    """The model of a seq2seq run directory with its vocabulary, configs and held-out pairs."""
    run_dir = Path(run_dir)
    config = ckpt.read_json(run_dir, ckpt.CONFIG)
    if not isinstance(config, dict) or config.get("kind") != "seq2seq":
        raise CheckpointError(
            f"{str(run_dir)!r} is not a seq2seq run (a language model? use `rnnlab predict`)"
        )
    try:
        pairs = PairsConfig(**config["pairs"])
        model_config = Seq2SeqConfig(**config["model"])
        train_config = Seq2SeqTrainConfig(**config["train"])
        vocab = PairVocab.from_json(config["vocab"])
        max_target_len = int(config["resolved"]["max_target_len"])
    except (KeyError, TypeError, ValueError, UsageError) as e:
        raise CheckpointError(f"checkpoint config is not one rnnlab can read: {e}") from None
    model = Seq2Seq(len(vocab), model_config)
    try:
        model.load_state_dict(ckpt.read_tensors(run_dir, ckpt.WEIGHTS))
    except RuntimeError:
        raise CheckpointError(
            f"weights in {str(run_dir / ckpt.WEIGHTS)!r} do not fit the model in config.json"
        ) from None
    model.eval()
    heldout_text = ckpt.read_verified(run_dir, HELDOUT).decode("utf-8")
    heldout = []
    for line in heldout_text.splitlines():
        fields = line.split("\t")
        if len(fields) != 2:
            raise CheckpointError(f"{str(run_dir / HELDOUT)!r} is corrupt: a line is not a pair")
        heldout.append((fields[0], fields[1]))
    return LoadedSeq2Seq(
        run_dir, model, vocab, pairs, model_config, train_config, heldout, max_target_len
    )
