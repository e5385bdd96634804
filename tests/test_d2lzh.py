"""`rnnlab.d2lzh`: the course's chapter-6 programs run with only their import line changed.

The programs below are the course's lesson on GRU, LSTM, deep and bidirectional networks
(the d2l_jay9460 notebook; the same code as ShusenTang/Dive-into-DL-PyTorch
docs/chapter06_RNN/6.7_gru.md and 6.8_lstm.md), written out as published. The test changes the
line `import d2l_jay9460 as d2l` to `from rnnlab import d2lzh as d2l` and, to keep the suite
fast, the sizes in the hyperparameter lines (`SHRINK`: fewer epochs, fewer hidden units, a
shorter prediction); nothing else. Each program runs twice with the same seeds and must print
the same lines (the seconds aside), and the perplexity it prints must be the course's figure,
exp(total cross-entropy / characters) of the epoch, recomputed here by a loop of our own on the
same model and the same minibatches.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import math
import random
import re
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnlab import d2lzh as d2l
from rnnlab.batches import random_batches, sequential_batches
from rnnlab.errors import UsageError

# -- the course's programs, as published -----------------------------------------------------------

PREAMBLE = """\
import numpy as np
import torch
from torch import nn, optim
import torch.nn.functional as F

import sys
sys.path.append("../input/")
import d2l_jay9460 as d2l
device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')

(corpus_indices, char_to_idx, idx_to_char, vocab_size) = d2l.load_data_jay_lyrics()
"""

GRU_SCRATCH = """\
num_inputs, num_hiddens, num_outputs = vocab_size, 256, vocab_size
print('will use', device)

def get_params():
    def _one(shape):
        ts = torch.tensor(np.random.normal(0, 0.01, size=shape), device=device, dtype=torch.float32) #正态分布
        return torch.nn.Parameter(ts, requires_grad=True)
    def _three():
        return (_one((num_inputs, num_hiddens)),
                _one((num_hiddens, num_hiddens)),
                torch.nn.Parameter(torch.zeros(num_hiddens, device=device, dtype=torch.float32), requires_grad=True))

    W_xz, W_hz, b_z = _three()  # 更新门参数
    W_xr, W_hr, b_r = _three()  # 重置门参数
    W_xh, W_hh, b_h = _three()  # 候选隐藏状态参数

    # 输出层参数
    W_hq = _one((num_hiddens, num_outputs))
    b_q = torch.nn.Parameter(torch.zeros(num_outputs, device=device, dtype=torch.float32), requires_grad=True)
    return nn.ParameterList([W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h, W_hq, b_q])

def init_gru_state(batch_size, num_hiddens, device):   #隐藏状态初始化
    return (torch.zeros((batch_size, num_hiddens), device=device), )

def gru(inputs, state, params):
    W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h, W_hq, b_q = params
    H, = state
    outputs = []
    for X in inputs:
        Z = torch.sigmoid(torch.matmul(X, W_xz) + torch.matmul(H, W_hz) + b_z)
        R = torch.sigmoid(torch.matmul(X, W_xr) + torch.matmul(H, W_hr) + b_r)
        H_tilda = torch.tanh(torch.matmul(X, W_xh) + R * torch.matmul(H, W_hh) + b_h)
        H = Z * H + (1 - Z) * H_tilda
        Y = torch.matmul(H, W_hq) + b_q
        outputs.append(Y)
    return outputs, (H,)

num_epochs, num_steps, batch_size, lr, clipping_theta = 160, 35, 32, 1e2, 1e-2
pred_period, pred_len, prefixes = 40, 50, ['分开', '不分开']

d2l.train_and_predict_rnn(gru, get_params, init_gru_state, num_hiddens,
                          vocab_size, device, corpus_indices, idx_to_char,
                          char_to_idx, False, num_epochs, num_steps, lr,
                          clipping_theta, batch_size, pred_period, pred_len,
                          prefixes)
"""  # noqa: E501  (the course's lines, as published)

GRU_CONCISE = """\
num_hiddens=256
num_epochs, num_steps, batch_size, lr, clipping_theta = 160, 35, 32, 1e2, 1e-2
pred_period, pred_len, prefixes = 40, 50, ['分开', '不分开']

lr = 1e-2 # 注意调整学习率
gru_layer = nn.GRU(input_size=vocab_size, hidden_size=num_hiddens)
model = d2l.RNNModel(gru_layer, vocab_size).to(device)
d2l.train_and_predict_rnn_pytorch(model, num_hiddens, vocab_size, device,
                                corpus_indices, idx_to_char, char_to_idx,
                                num_epochs, num_steps, lr, clipping_theta,
                                batch_size, pred_period, pred_len, prefixes)
"""

LSTM_SCRATCH = """\
num_inputs, num_hiddens, num_outputs = vocab_size, 256, vocab_size
print('will use', device)

def get_params():
    def _one(shape):
        ts = torch.tensor(np.random.normal(0, 0.01, size=shape), device=device, dtype=torch.float32)
        return torch.nn.Parameter(ts, requires_grad=True)
    def _three():
        return (_one((num_inputs, num_hiddens)),
                _one((num_hiddens, num_hiddens)),
                torch.nn.Parameter(torch.zeros(num_hiddens, device=device, dtype=torch.float32), requires_grad=True))

    W_xi, W_hi, b_i = _three()  # 输入门参数
    W_xf, W_hf, b_f = _three()  # 遗忘门参数
    W_xo, W_ho, b_o = _three()  # 输出门参数
    W_xc, W_hc, b_c = _three()  # 候选记忆细胞参数

    # 输出层参数
    W_hq = _one((num_hiddens, num_outputs))
    b_q = torch.nn.Parameter(torch.zeros(num_outputs, device=device, dtype=torch.float32), requires_grad=True)
    return nn.ParameterList([W_xi, W_hi, b_i, W_xf, W_hf, b_f, W_xo, W_ho, b_o, W_xc, W_hc, b_c, W_hq, b_q])

def init_lstm_state(batch_size, num_hiddens, device):
    return (torch.zeros((batch_size, num_hiddens), device=device),
            torch.zeros((batch_size, num_hiddens), device=device))

def lstm(inputs, state, params):
    [W_xi, W_hi, b_i, W_xf, W_hf, b_f, W_xo, W_ho, b_o, W_xc, W_hc, b_c, W_hq, b_q] = params
    (H, C) = state
    outputs = []
    for X in inputs:
        I = torch.sigmoid(torch.matmul(X, W_xi) + torch.matmul(H, W_hi) + b_i)
        F = torch.sigmoid(torch.matmul(X, W_xf) + torch.matmul(H, W_hf) + b_f)
        O = torch.sigmoid(torch.matmul(X, W_xo) + torch.matmul(H, W_ho) + b_o)
        C_tilda = torch.tanh(torch.matmul(X, W_xc) + torch.matmul(H, W_hc) + b_c)
        C = F * C + I * C_tilda
        H = O * C.tanh()
        Y = torch.matmul(H, W_hq) + b_q
        outputs.append(Y)
    return outputs, (H, C)

num_epochs, num_steps, batch_size, lr, clipping_theta = 160, 35, 32, 1e2, 1e-2
pred_period, pred_len, prefixes = 40, 50, ['分开', '不分开']

d2l.train_and_predict_rnn(lstm, get_params, init_lstm_state, num_hiddens,
                          vocab_size, device, corpus_indices, idx_to_char,
                          char_to_idx, False, num_epochs, num_steps, lr,
                          clipping_theta, batch_size, pred_period, pred_len,
                          prefixes)
"""  # noqa: E501  (the course's lines, as published)

LSTM_CONCISE = """\
num_hiddens=256
num_epochs, num_steps, batch_size, lr, clipping_theta = 160, 35, 32, 1e2, 1e-2
pred_period, pred_len, prefixes = 40, 50, ['分开', '不分开']

lr = 1e-2 # 注意调整学习率
lstm_layer = nn.LSTM(input_size=vocab_size, hidden_size=num_hiddens)
model = d2l.RNNModel(lstm_layer, vocab_size)
d2l.train_and_predict_rnn_pytorch(model, num_hiddens, vocab_size, device,
                                corpus_indices, idx_to_char, char_to_idx,
                                num_epochs, num_steps, lr, clipping_theta,
                                batch_size, pred_period, pred_len, prefixes)
"""

DEEP = """\
num_hiddens=256
num_epochs, num_steps, batch_size, lr, clipping_theta = 160, 35, 32, 1e2, 1e-2
pred_period, pred_len, prefixes = 40, 50, ['分开', '不分开']

lr = 1e-2 # 注意调整学习率

gru_layer = nn.LSTM(input_size=vocab_size, hidden_size=num_hiddens,num_layers=2)
model = d2l.RNNModel(gru_layer, vocab_size).to(device)
d2l.train_and_predict_rnn_pytorch(model, num_hiddens, vocab_size, device,
                                corpus_indices, idx_to_char, char_to_idx,
                                num_epochs, num_steps, lr, clipping_theta,
                                batch_size, pred_period, pred_len, prefixes)

gru_layer = nn.LSTM(input_size=vocab_size, hidden_size=num_hiddens,num_layers=6)
model = d2l.RNNModel(gru_layer, vocab_size).to(device)
d2l.train_and_predict_rnn_pytorch(model, num_hiddens, vocab_size, device,
                                corpus_indices, idx_to_char, char_to_idx,
                                num_epochs, num_steps, lr, clipping_theta,
                                batch_size, pred_period, pred_len, prefixes)
"""

BIDIRECTIONAL = """\
num_hiddens=128
num_epochs, num_steps, batch_size, lr, clipping_theta = 160, 35, 32, 1e-2, 1e-2
pred_period, pred_len, prefixes = 40, 50, ['分开', '不分开']

lr = 1e-2 # 注意调整学习率

gru_layer = nn.GRU(input_size=vocab_size, hidden_size=num_hiddens,bidirectional=True)
model = d2l.RNNModel(gru_layer, vocab_size).to(device)
d2l.train_and_predict_rnn_pytorch(model, num_hiddens, vocab_size, device,
                                corpus_indices, idx_to_char, char_to_idx,
                                num_epochs, num_steps, lr, clipping_theta,
                                batch_size, pred_period, pred_len, prefixes)
"""

PROGRAMS = {
    "gru_scratch": GRU_SCRATCH,
    "gru_concise": GRU_CONCISE,
    "lstm_scratch": LSTM_SCRATCH,
    "lstm_concise": LSTM_CONCISE,
    "deep": DEEP,
    "bidirectional": BIDIRECTIONAL,
}

# The only edits: the import line, and sizes a test can afford (2 epochs, printed after each).
IMPORT = ("import d2l_jay9460 as d2l", "from rnnlab import d2lzh as d2l")
SHRINK = {
    "vocab_size, 256, vocab_size": "vocab_size, 32, vocab_size",
    "num_hiddens=256": "num_hiddens=32",
    "num_hiddens=128": "num_hiddens=16",
    "= 160, 35, 32,": "= 2, 35, 32,",
    "= 40, 50, ['分开', '不分开']": "= 1, 10, ['分开', '不分开']",
}
EPOCH_LINE = re.compile(r"^epoch (\d+), perplexity (\d+\.\d{6}), time \d+\.\d\d sec$")
SEED = 0


def source(name: str) -> str:
    code = PREAMBLE + PROGRAMS[name]
    assert code.count(IMPORT[0]) == 1
    code = code.replace(*IMPORT)
    for old, new in SHRINK.items():
        code = code.replace(old, new)
    assert "160, 35" not in code and "256" not in code  # every size line was shrunk
    return code


def reseed() -> None:
    """The seeds a student would set: Python's (batches), numpy's (get_params), torch's."""
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)


def run_program(name: str) -> tuple[str, dict]:
    reseed()
    namespace: dict = {"__name__": "__course__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source(name), f"<{name}>", "exec"), namespace)
    return out.getvalue(), namespace


def without_seconds(text: str) -> str:
    return re.sub(r"time \d+\.\d\d sec", "time - sec", text)


def printed_perplexities(text: str) -> list[float]:
    return [float(m.group(2)) for line in text.splitlines() if (m := EPOCH_LINE.match(line))]


@pytest.fixture(scope="module")
def outputs() -> dict[str, tuple[str, str, dict]]:
    """Each program run twice from the same seeds: (first output, second output, namespace)."""
    runs = {}
    for name in PROGRAMS:
        first, _ = run_program(name)
        second, namespace = run_program(name)
        runs[name] = (first, second, namespace)
    return runs


@pytest.mark.slow  # the six programs, twice each: about 10 s on one thread
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_course_program_runs_and_repeats_itself(outputs, name):
    first, second, _ = outputs[name]
    assert without_seconds(first) == without_seconds(second)
    lines = first.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    models = 2 if name == "deep" else 1
    assert len(epochs) == 2 * models
    assert all(EPOCH_LINE.match(line) for line in epochs), epochs
    # After each epoch line, one line per prefix: " - " then the prefix and 10 characters.
    for i, line in enumerate(lines):
        if line.startswith("epoch "):
            assert lines[i + 1].startswith(" - 分开") and len(lines[i + 1]) == 3 + 2 + 10
            assert lines[i + 2].startswith(" - 不分开") and len(lines[i + 2]) == 3 + 3 + 10
    ppl = printed_perplexities(first)
    vocab_size = outputs[name][2]["vocab_size"]
    assert all(1 < p < 2 * vocab_size for p in ppl)  # from about |V| down, and never NaN


def _course_clip(params: list[torch.Tensor], theta: float) -> None:
    """The course's grad_clipping, written out: scale by theta / norm when norm > theta."""
    norm = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params))
    if norm > theta:
        for p in params:
            p.grad.mul_(theta / norm)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "rnn", "init"),
    [("gru_scratch", "gru", "init_gru_state"), ("lstm_scratch", "lstm", "init_lstm_state")],
)
def test_scratch_perplexity_is_exp_of_the_mean_cross_entropy(outputs, name, rnn, init):
    text, _, ns = outputs[name]
    reseed()
    params = list(ns["get_params"]())  # the same initial weights (numpy's seed)
    V, H = ns["vocab_size"], ns["num_hiddens"]
    B, T = ns["batch_size"], ns["num_steps"]
    ours = []
    for _ in range(ns["num_epochs"]):
        state = ns[init](B, H, ns["device"])
        total, chars = 0.0, 0
        for X, Y in d2l.data_iter_consecutive(ns["corpus_indices"], B, T, ns["device"]):
            state = tuple(s.detach() for s in state)
            inputs = [F.one_hot(X[:, t], V).float() for t in range(T)]
            outs, state = ns[rnn](inputs, state, params)
            logits = torch.stack(outs, dim=1)  # (B, T, V)
            loss = F.cross_entropy(logits.reshape(-1, V), Y.reshape(-1))
            total += float(
                F.cross_entropy(
                    logits.detach().double().reshape(-1, V), Y.reshape(-1), reduction="sum"
                )
            )
            chars += Y.numel()
            for p in params:
                p.grad = None
            loss.backward()
            _course_clip(params, ns["clipping_theta"])
            with torch.no_grad():
                for p in params:
                    p -= ns["lr"] * p.grad
        ours.append(math.exp(total / chars))
    assert printed_perplexities(text) == pytest.approx(ours, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "layer"), [("gru_concise", nn.GRU), ("lstm_concise", nn.LSTM)])
def test_concise_perplexity_is_exp_of_the_mean_cross_entropy(outputs, name, layer):
    text, _, ns = outputs[name]
    reseed()
    V, H = ns["vocab_size"], ns["num_hiddens"]
    B, T = ns["batch_size"], ns["num_steps"]
    core = layer(input_size=V, hidden_size=H)  # drawn from torch's seed as the program's was
    dense = nn.Linear(H, V)
    params = [*core.parameters(), *dense.parameters()]
    optimizer = torch.optim.Adam(params, lr=ns["lr"])
    state = None
    ours = []
    for _ in range(ns["num_epochs"]):
        total, chars = 0.0, 0
        for X, Y in d2l.data_iter_consecutive(ns["corpus_indices"], B, T, ns["device"]):
            if state is not None:
                state = (
                    tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
                )
            hidden, state = core(F.one_hot(X.T, V).float(), state)  # (T, B, H)
            logits = dense(hidden)  # (T, B, V)
            loss = F.cross_entropy(logits.reshape(-1, V), Y.T.reshape(-1))
            total += float(
                F.cross_entropy(
                    logits.detach().double().reshape(-1, V), Y.T.reshape(-1), reduction="sum"
                )
            )
            chars += Y.numel()
            optimizer.zero_grad()
            loss.backward()
            _course_clip(params, ns["clipping_theta"])
            optimizer.step()
        ours.append(math.exp(total / chars))
    assert printed_perplexities(text) == pytest.approx(ours, rel=1e-5)


# -- the helpers one by one ------------------------------------------------------------------------

# The course's signatures (d2lzh_pytorch/utils.py), argument for argument.
COURSE_SIGNATURES = {
    "load_data_jay_lyrics": [],
    "one_hot": ["x", "n_class", "dtype"],
    "to_onehot": ["X", "n_class"],
    "data_iter_random": ["corpus_indices", "batch_size", "num_steps", "device"],
    "data_iter_consecutive": ["corpus_indices", "batch_size", "num_steps", "device"],
    "sgd": ["params", "lr", "batch_size"],
    "grad_clipping": ["params", "theta", "device"],
    "predict_rnn": [
        "prefix", "num_chars", "rnn", "params", "init_rnn_state", "num_hiddens", "vocab_size",
        "device", "idx_to_char", "char_to_idx",
    ],
    "train_and_predict_rnn": [
        "rnn", "get_params", "init_rnn_state", "num_hiddens", "vocab_size", "device",
        "corpus_indices", "idx_to_char", "char_to_idx", "is_random_iter", "num_epochs",
        "num_steps", "lr", "clipping_theta", "batch_size", "pred_period", "pred_len", "prefixes",
    ],
    "predict_rnn_pytorch": [
        "prefix", "num_chars", "model", "vocab_size", "device", "idx_to_char", "char_to_idx",
    ],
    "train_and_predict_rnn_pytorch": [
        "model", "num_hiddens", "vocab_size", "device", "corpus_indices", "idx_to_char",
        "char_to_idx", "num_epochs", "num_steps", "lr", "clipping_theta", "batch_size",
        "pred_period", "pred_len", "prefixes",
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(COURSE_SIGNATURES))
def test_signatures_are_the_courses(name):
    params = list(inspect.signature(getattr(d2l, name)).parameters)
    extra = params[len(COURSE_SIGNATURES[name]) :]
    assert params[: len(COURSE_SIGNATURES[name])] == COURSE_SIGNATURES[name]
    assert extra in ([], ["path"])  # only load_data_jay_lyrics takes one more, optional
    assert list(inspect.signature(d2l.RNNModel).parameters) == ["rnn_layer", "vocab_size"]


def test_lyrics_are_read_from_the_path_given_or_the_course_folders(tmp_path, monkeypatch, capsys):
    lyrics = "想要有直升机\n想要和你飞到宇宙去\r\n" * 3
    archive = tmp_path / "book" / "jaychou_lyrics.txt.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("jaychou_lyrics.txt", lyrics)
    corpus, char_to_idx, idx_to_char, vocab_size = d2l.load_data_jay_lyrics(archive)
    text = "".join(idx_to_char[i] for i in corpus)
    assert text == lyrics.replace("\n", " ").replace("\r", " ")
    assert vocab_size == len(idx_to_char) == len(char_to_idx) == len(set(text))
    assert idx_to_char[:3] == [" ", "想", "要"]  # by frequency (9, 6, 6), ties by code point
    assert capsys.readouterr().err == ""
    # Where the book's notebooks find it: ../../data/ from code/chapter06_RNN.
    notebook_dir = tmp_path / "code" / "chapter06_RNN"
    notebook_dir.mkdir(parents=True)
    (tmp_path / "data").mkdir()
    archive.rename(tmp_path / "data" / "jaychou_lyrics.txt.zip")
    monkeypatch.chdir(notebook_dir)
    assert d2l.load_data_jay_lyrics()[2] == idx_to_char
    assert capsys.readouterr().err == ""
    assert "../../data/jaychou_lyrics.txt.zip" in d2l.JAY_LYRICS_PATHS


def test_without_the_lyrics_the_songci_is_used_with_a_one_line_notice(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(d2l, "JAY_LYRICS_PATHS", ("jaychou_lyrics.txt",))
    corpus, char_to_idx, idx_to_char, vocab_size = d2l.load_data_jay_lyrics()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "songci" in err and "JAY_LYRICS_PATHS" in err
    assert len(corpus) == 10_000 and vocab_size == len(idx_to_char) == 1681
    assert "\n" not in idx_to_char and all(char_to_idx[c] == i for i, c in enumerate(idx_to_char))


def test_a_missing_lyrics_path_is_one_line_naming_it(tmp_path):
    with pytest.raises(
        UsageError, match=r"^lyrics file '.*nope.txt' does not exist: give the path"
    ):
        d2l.load_data_jay_lyrics(tmp_path / "nope.txt")


def test_iterators_are_rnnlabs_drawn_from_pythons_random():
    ids = list(range(500))
    random.seed(3)
    got = list(d2l.data_iter_consecutive(ids, 4, 7, "cpu"))
    seed = random.Random(3).getrandbits(63)
    want = list(sequential_batches(torch.tensor(ids), 4, 7, torch.Generator().manual_seed(seed)))
    assert len(got) == len(want) > 0
    assert all(
        torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(got, want, strict=True)
    )
    random.seed(3)
    got = list(d2l.data_iter_random(ids, 4, 7, "cpu"))
    want = list(random_batches(torch.tensor(ids), 4, 7, torch.Generator().manual_seed(seed)))
    assert all(
        torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(got, want, strict=True)
    )
    X, Y = got[0]
    assert X.shape == (4, 7) and torch.equal(Y, X + 1)  # the ids are positions: Y is X shifted


def test_one_hot_is_the_courses():
    X = torch.tensor([[0, 2], [1, 1]])
    inputs = d2l.to_onehot(X, 3)
    assert len(inputs) == 2 and inputs[0].dtype == torch.float32
    assert inputs[0].tolist() == [[1, 0, 0], [0, 1, 0]] and inputs[1].tolist() == [
        [0, 0, 1],
        [0, 1, 0],
    ]


def test_grad_clipping_clips_a_generator_of_parameters_too():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    model(torch.randn(4, 5)).pow(2).sum().backward()
    before = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert before > 0.1
    d2l.grad_clipping(model.parameters(), 0.1, "cpu")  # the course passes a generator
    after = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert after == pytest.approx(0.1, rel=1e-4)
    d2l.grad_clipping(model.parameters(), 1.0, "cpu")  # under theta: untouched
    assert torch.cat([p.grad.flatten() for p in model.parameters()]).norm() == after


def _course_predict_rnn(prefix, num_chars, rnn, params, init_rnn_state, num_hiddens, vocab_size,
                        device, idx_to_char, char_to_idx):  # fmt: skip
    """The course's predict_rnn, as published: the oracle for rnnlab's greedy decoding."""
    state = init_rnn_state(1, num_hiddens, device)
    output = [char_to_idx[prefix[0]]]
    for t in range(num_chars + len(prefix) - 1):
        X = d2l.to_onehot(torch.tensor([[output[-1]]], device=device), vocab_size)
        (Y, state) = rnn(X, state, params)
        if t < len(prefix) - 1:
            output.append(char_to_idx[prefix[t + 1]])
        else:
            output.append(int(Y[0].argmax(dim=1).item()))
    return "".join([idx_to_char[i] for i in output])


def _course_predict_rnn_pytorch(prefix, num_chars, model, vocab_size, device, idx_to_char,
                                char_to_idx):  # fmt: skip
    state = None
    output = [char_to_idx[prefix[0]]]
    for t in range(num_chars + len(prefix) - 1):
        X = torch.tensor([output[-1]], device=device).view(1, 1)
        (Y, state) = model(X, state)
        if t < len(prefix) - 1:
            output.append(char_to_idx[prefix[t + 1]])
        else:
            output.append(int(Y.argmax(dim=1).item()))
    return "".join([idx_to_char[i] for i in output])


def test_predictions_are_the_courses_on_random_networks():
    torch.manual_seed(1)
    idx_to_char = list("abcdefgh")
    char_to_idx = {c: i for i, c in enumerate(idx_to_char)}
    V, H = len(idx_to_char), 6
    W_xh, W_hh, W_hq = torch.randn(V, H), torch.randn(H, H), torch.randn(H, V)
    params = [W_xh, W_hh, W_hq]

    def rnn(inputs, state, params):
        W_xh, W_hh, W_hq = params
        (Hs,) = state
        outputs = []
        for X in inputs:
            Hs = torch.tanh(X @ W_xh + Hs @ W_hh)
            outputs.append(Hs @ W_hq)
        return outputs, (Hs,)

    def init(batch_size, num_hiddens, device):
        return (torch.zeros(batch_size, num_hiddens, device=device),)

    for prefix in ["a", "hg", "abcab"]:
        args = (prefix, 12, rnn, params, init, H, V, "cpu", idx_to_char, char_to_idx)
        assert d2l.predict_rnn(*args) == _course_predict_rnn(*args)
    model = d2l.RNNModel(nn.LSTM(V, H, num_layers=2), V)
    for prefix in ["a", "hg", "abcab"]:
        args = (prefix, 12, model, V, "cpu", idx_to_char, char_to_idx)
        assert d2l.predict_rnn_pytorch(*args) == _course_predict_rnn_pytorch(*args)
    with pytest.raises(
        UsageError, match=r"^prefix 'az' has characters not in the model's vocabulary: 'z'"
    ):
        d2l.predict_rnn_pytorch("az", 3, model, V, "cpu", idx_to_char, char_to_idx)
