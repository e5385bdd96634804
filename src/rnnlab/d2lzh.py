"""The course's helper module, chapter 6: `from rnnlab import d2lzh as d2l`, nothing else changed.

The Chinese edition of *Dive into Deep Learning* for PyTorch ships `d2lzh_pytorch` (the course
copies it as `d2l_jay9460`); its chapter-6 code calls ten helpers. They are here with the same
names, the same arguments in the same order, the same return values and the same printed lines
(``epoch 40, perplexity 150.546513, time 1.06 sec`` then `` - 分开 ...`` per prefix), so a
student's own `rnn(inputs, state, params)`, `get_params()`, `init_rnn_state(...)` and `nn.Module`s
run unchanged. Underneath they run rnnlab's tested parts:

- minibatches: `rnnlab.batches.random_batches` / `sequential_batches` (property-tested), drawn
  from Python's `random` so that `random.seed` repeats them, as it did in the course;
- clipping: `torch.nn.utils.clip_grad_norm_`, the clipping of rnnlab's `train_step`;
- prediction: the prefix read one character at a time, then `rnnlab.decoding.greedy`;
- perplexity: `rnnlab.metrics.metrics_from_nll`, exp(total cross-entropy / characters).

Where the course's code and this module differ, on purpose (docs/course.md has the list):

- `load_data_jay_lyrics` numbers the characters by frequency (ties by code point) instead of by
  `list(set(...))`, whose order changes from one Python process to the next; it falls back to
  rnnlab's Song ci when the course's lyrics file is not on the machine.
- The iterators start at a random offset below `num_steps` (rnnlab's schemes, d2l 2.0's too)
  and yield int64 ids, not float32; every full minibatch is used.
- `train_and_predict_rnn_pytorch` really clips: the course passes `model.parameters()`, a
  generator that its `grad_clipping` empties while measuring the norm, so it never scaled.
- `RNNModel` one-hots with its own `vocab_size` (the course's read a global variable).
- Prediction runs without autograd and, for an `nn.Module`, in evaluation mode (no dropout).
"""

from __future__ import annotations

import random
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnlab.batches import random_batches, sequential_batches
from rnnlab.corpus import read_builtin
from rnnlab.decoding import greedy
from rnnlab.errors import UsageError
from rnnlab.metrics import metrics_from_nll
from rnnlab.model import eval_mode
from rnnlab.vocab import require_known

__all__ = [
    "JAY_LYRICS_PATHS",
    "RNNModel",
    "data_iter_consecutive",
    "data_iter_random",
    "grad_clipping",
    "load_data_jay_lyrics",
    "one_hot",
    "predict_rnn",
    "predict_rnn_pytorch",
    "sgd",
    "to_onehot",
    "train_and_predict_rnn",
    "train_and_predict_rnn_pytorch",
]

# Where the course keeps the lyrics, in the order they are tried: the course platform's input
# folder, the book's repository (the notebooks run from code/chapter06_RNN), and beside the
# notebook. A .zip must hold jaychou_lyrics.txt, as the book's does.
JAY_LYRICS_PATHS: tuple[str, ...] = (
    "/home/kesci/input/jaychou_lyrics4703/jaychou_lyrics.txt",
    "../input/jaychou_lyrics4703/jaychou_lyrics.txt",
    "../../data/jaychou_lyrics.txt.zip",
    "../data/jaychou_lyrics.txt.zip",
    "data/jaychou_lyrics.txt.zip",
    "jaychou_lyrics.txt.zip",
    "jaychou_lyrics.txt",
)
FALLBACK_CORPUS = "songci"  # rnnlab's built-in Chinese text: Song-dynasty ci
COURSE_CHARS = 10_000  # the course keeps the first 10,000 characters

State = Any  # whatever the student's init_rnn_state returns: a tuple of (B, H) tensors, usually


def _default_device(device: torch.device | str | None) -> torch.device:
    if device is None:  # the course's rule: the GPU when there is one
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# -- 6.3 the data set and its minibatches ----------------------------------------------------------


def _read_lyrics(path: Path) -> str:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zin, zin.open("jaychou_lyrics.txt") as f:
            return f.read().decode("utf-8")
    return path.read_text(encoding="utf-8")


def load_data_jay_lyrics(
    path: str | Path | None = None,
) -> tuple[list[int], dict[str, int], list[str], int]:
    """The course's lyrics as (corpus_indices, char_to_idx, idx_to_char, vocab_size).

    Reads `path` if given (jaychou_lyrics.txt or the book's jaychou_lyrics.txt.zip), else the
    first of `JAY_LYRICS_PATHS` that exists; without any, rnnlab's built-in Song ci, with a
    one-line notice on stderr. As in the course: line breaks become spaces and the first 10,000
    characters are kept. Characters are numbered by descending frequency (ties by code point), so
    the numbering is the same in every process.
    """
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"lyrics file {str(path)!r} does not exist: give the path of "
                             "jaychou_lyrics.txt or jaychou_lyrics.txt.zip")  # fmt: skip
        text = _read_lyrics(p)
    else:
        found = next((Path(c) for c in JAY_LYRICS_PATHS if Path(c).is_file()), None)
        if found is not None:
            text = _read_lyrics(found)
        else:
            print(
                "note: jaychou_lyrics.txt not found (looked in rnnlab.d2lzh.JAY_LYRICS_PATHS); "
                f"using rnnlab's built-in Chinese corpus '{FALLBACK_CORPUS}' (Song ci) instead",
                file=sys.stderr,
            )
            text = read_builtin(FALLBACK_CORPUS)
    corpus_chars = text.replace("\n", " ").replace("\r", " ")[:COURSE_CHARS]
    counts = Counter(corpus_chars)
    idx_to_char = sorted(counts, key=lambda c: (-counts[c], ord(c)))
    char_to_idx = {c: i for i, c in enumerate(idx_to_char)}
    corpus_indices = [char_to_idx[c] for c in corpus_chars]
    return corpus_indices, char_to_idx, idx_to_char, len(char_to_idx)


def _ids(corpus_indices: Sequence[int] | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(corpus_indices, dtype=torch.long, device=device)  # (N,)


def _generator() -> torch.Generator:
    """A torch generator seeded from Python's `random`: `random.seed(s)` repeats the batches."""
    return torch.Generator().manual_seed(random.getrandbits(63))


def data_iter_random(
    corpus_indices: Sequence[int] | torch.Tensor,
    batch_size: int,
    num_steps: int,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Random sampling: X, Y (batch_size, num_steps) windows in a random order, Y = X shifted.

    rnnlab's `random_batches`: disjoint windows from a random offset; a state must start from
    zero for each minibatch, because neighbouring rows are not neighbouring text.
    """
    ids = _ids(corpus_indices, _default_device(device))
    return random_batches(ids, batch_size, num_steps, _generator())


def data_iter_consecutive(
    corpus_indices: Sequence[int] | torch.Tensor,
    batch_size: int,
    num_steps: int,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Sequential partitioning: row j of each minibatch continues row j of the one before.

    rnnlab's `sequential_batches`, so the state may be carried from minibatch to minibatch
    (detached from the graph between them).
    """
    ids = _ids(corpus_indices, _default_device(device))
    return sequential_batches(ids, batch_size, num_steps, _generator())


# -- 6.4 the network from scratch -----------------------------------------------------------------


def one_hot(x: torch.Tensor, n_class: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Ids (batch,) to one-hot rows (batch, n_class)."""
    x = x.long()
    res = torch.zeros(x.shape[0], n_class, dtype=dtype, device=x.device)
    return res.scatter_(1, x.view(-1, 1), 1)


def to_onehot(X: torch.Tensor, n_class: int) -> list[torch.Tensor]:
    """Ids (batch, num_steps) to a list of num_steps one-hot matrices (batch, n_class)."""
    return [one_hot(X[:, i], n_class) for i in range(X.shape[1])]


def sgd(params: Iterable[torch.Tensor], lr: float, batch_size: int) -> None:
    """Minibatch SGD as the course writes it: the gradient divided by `batch_size`."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size


def grad_clipping(
    params: Iterable[torch.Tensor], theta: float, device: torch.device | str | None = None
) -> None:
    """Scale the gradients by theta / norm when their global norm exceeds theta.

    `torch.nn.utils.clip_grad_norm_`, as in rnnlab's training step (it adds 1e-6 to the norm,
    so the scaled norm is theta to within 1e-6). `params` may be a generator (`model.parameters()`)
    and `device` is accepted for the course's signature; the norm is computed where the
    gradients are.
    """
    grads = [p for p in params if p.grad is not None]
    if grads:
        torch.nn.utils.clip_grad_norm_(grads, theta)


def _detached(state: State) -> State:
    """The state cut from the graph, keeping its values and its type (truncated BPTT)."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, list | tuple):
        return type(state)(_detached(s) for s in state)
    return state  # None: nn.RNN/GRU/LSTM's zero state


def _predict(
    step: Callable[[torch.Tensor, State], tuple[torch.Tensor, State]],
    state: State,
    prefix: str,
    num_chars: int,
    device: torch.device,
    idx_to_char: Sequence[str],
    char_to_idx: dict[str, int],
) -> str:
    """The prefix read one character at a time from `state`, then `num_chars` greedy ones."""
    if not prefix:
        raise UsageError("the prefix is empty: give at least one character")
    require_known([c for c in dict.fromkeys(prefix) if c not in char_to_idx], f"prefix {prefix!r}")
    ids = [char_to_idx[c] for c in prefix]
    with torch.no_grad():
        for i in ids[:-1]:  # warm the state up on the prefix, as the course's loop does
            _, state = step(torch.tensor([i], device=device), state)
        start = torch.tensor([ids[-1]], device=device)  # (1,)
        (hyp,) = greedy(step, state, start, num_chars)
    return prefix + "".join(idx_to_char[i] for i in hyp.ids)


def predict_rnn(
    prefix: str,
    num_chars: int,
    rnn: Callable[..., tuple[list[torch.Tensor], State]],
    params: Sequence[torch.Tensor],
    init_rnn_state: Callable[..., State],
    num_hiddens: int,
    vocab_size: int,
    device: torch.device | str,
    idx_to_char: Sequence[str],
    char_to_idx: dict[str, int],
) -> str:
    """`prefix` followed by the `num_chars` characters a from-scratch network predicts.

    `rnn(inputs, state, params)` is the student's network: a list of (batch, vocab_size) inputs
    in, a list of outputs and the new state out.
    """
    device = torch.device(device)

    def step(ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        outputs, state = rnn(to_onehot(ids.view(1, 1), vocab_size), state, params)
        return outputs[0], state  # (1, V)

    state = init_rnn_state(1, num_hiddens, device)
    return _predict(step, state, prefix, num_chars, device, idx_to_char, char_to_idx)


def _report(
    epoch: int,
    total_nll: float,
    chars: int,
    seconds: float,
    prefixes: Sequence[str],
    predict: Callable[[str], str],
) -> None:
    """The course's lines: the epoch's perplexity on the training text, then each prefix
    continued. The perplexity is exp(total cross-entropy / characters predicted)."""
    ppl = metrics_from_nll(total_nll, chars).ppl
    print(f"epoch {epoch}, perplexity {ppl:f}, time {seconds:.2f} sec")
    for prefix in prefixes:
        print(" -", predict(prefix))


def train_and_predict_rnn(
    rnn: Callable[..., tuple[list[torch.Tensor], State]],
    get_params: Callable[[], Sequence[torch.Tensor]],
    init_rnn_state: Callable[..., State],
    num_hiddens: int,
    vocab_size: int,
    device: torch.device | str,
    corpus_indices: Sequence[int],
    idx_to_char: Sequence[str],
    char_to_idx: dict[str, int],
    is_random_iter: bool,
    num_epochs: int,
    num_steps: int,
    lr: float,
    clipping_theta: float,
    batch_size: int,
    pred_period: int,
    pred_len: int,
    prefixes: Sequence[str],
) -> None:
    """Train a from-scratch network with SGD; every `pred_period` epochs print its perplexity
    on the training text and continue each prefix by `pred_len` characters.

    Random sampling starts every minibatch from a zero state; sequential partitioning starts
    each epoch from one and carries it, detached, from minibatch to minibatch.
    """
    data_iter_fn = data_iter_random if is_random_iter else data_iter_consecutive
    params = get_params()
    loss = nn.CrossEntropyLoss()
    state: State = None
    for epoch in range(num_epochs):
        if not is_random_iter:  # sequential: a zero state at the start of each epoch
            state = init_rnn_state(batch_size, num_hiddens, device)
        l_sum, n, start = 0.0, 0, time.time()
        for X, Y in data_iter_fn(corpus_indices, batch_size, num_steps, device):
            if is_random_iter:  # random: a zero state for every minibatch
                state = init_rnn_state(batch_size, num_hiddens, device)
            else:  # keep the values, cut the graph: gradients stop at this minibatch
                state = _detached(state)
            inputs = to_onehot(X, vocab_size)
            outputs, state = rnn(inputs, state, params)  # num_steps x (batch, vocab_size)
            outputs = torch.cat(outputs, dim=0)  # (num_steps * batch, vocab_size), time-major
            y = torch.transpose(Y, 0, 1).contiguous().view(-1)  # the same time-major order
            l = loss(outputs, y.long())  # noqa: E741  (the course's name) mean cross-entropy
            for param in params:
                param.grad = None
            l.backward()
            grad_clipping(params, clipping_theta, device)
            sgd(params, lr, 1)  # the loss is already a mean: no further division
            l_sum += l.item() * y.shape[0]
            n += y.shape[0]
        if (epoch + 1) % pred_period == 0:
            _report(epoch + 1, l_sum, n, time.time() - start, prefixes, lambda prefix: predict_rnn(
                prefix, pred_len, rnn, params, init_rnn_state, num_hiddens, vocab_size, device,
                idx_to_char, char_to_idx))  # fmt: skip


# -- 6.5 the concise version ----------------------------------------------------------------------


class RNNModel(nn.Module):
    """`nn.RNN`/`nn.GRU`/`nn.LSTM` (time-major, as the course builds them) plus a Linear output.

    forward(inputs (batch, num_steps) ids, state) -> (num_steps * batch, vocab_size) scores,
    time-major like the from-scratch version, and the new state.
    """

    def __init__(self, rnn_layer: nn.Module, vocab_size: int) -> None:
        super().__init__()
        self.rnn = rnn_layer
        self.hidden_size = rnn_layer.hidden_size * (2 if rnn_layer.bidirectional else 1)
        self.vocab_size = vocab_size
        self.dense = nn.Linear(self.hidden_size, vocab_size)
        self.state: State = None

    def forward(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        X = torch.stack(to_onehot(inputs, self.vocab_size))  # (num_steps, batch, vocab_size)
        Y, self.state = self.rnn(X, state)  # (num_steps, batch, hidden_size)
        output = self.dense(Y.view(-1, Y.shape[-1]))  # (num_steps * batch, vocab_size)
        return output, self.state


def predict_rnn_pytorch(
    prefix: str,
    num_chars: int,
    model: nn.Module,
    vocab_size: int,
    device: torch.device | str,
    idx_to_char: Sequence[str],
    char_to_idx: dict[str, int],
) -> str:
    """`prefix` followed by the `num_chars` characters an `RNNModel` predicts (greedy)."""
    device = torch.device(device)

    def step(ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        Y, state = model(ids.view(1, 1), state)
        return Y, state  # (1, V)

    with eval_mode(model):
        return _predict(step, None, prefix, num_chars, device, idx_to_char, char_to_idx)


def train_and_predict_rnn_pytorch(
    model: nn.Module,
    num_hiddens: int,
    vocab_size: int,
    device: torch.device | str,
    corpus_indices: Sequence[int],
    idx_to_char: Sequence[str],
    char_to_idx: dict[str, int],
    num_epochs: int,
    num_steps: int,
    lr: float,
    clipping_theta: float,
    batch_size: int,
    pred_period: int,
    pred_len: int,
    prefixes: Sequence[str],
) -> None:
    """Train an `RNNModel` with Adam on sequential minibatches, the state carried (detached)
    from one minibatch to the next and across epochs, as in the course; print as
    `train_and_predict_rnn` does.
    """
    loss = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.to(device)
    state: State = None
    for epoch in range(num_epochs):
        l_sum, n, start = 0.0, 0, time.time()
        for X, Y in data_iter_consecutive(corpus_indices, batch_size, num_steps, device):
            state = _detached(state)  # truncated BPTT: values kept, graph cut
            output, state = model(X, state)  # (num_steps * batch, vocab_size)
            y = torch.transpose(Y, 0, 1).contiguous().view(-1)
            l = loss(output, y.long())  # noqa: E741  (the course's name)
            optimizer.zero_grad()
            l.backward()
            grad_clipping(model.parameters(), clipping_theta, device)
            optimizer.step()
            l_sum += l.item() * y.shape[0]
            n += y.shape[0]
        if (epoch + 1) % pred_period == 0:
            _report(epoch + 1, l_sum, n, time.time() - start, prefixes, lambda prefix: (
                predict_rnn_pytorch(prefix, pred_len, model, vocab_size, device, idx_to_char,
                                    char_to_idx)))  # fmt: skip
