"""Regularisation for small texts (AWD-LSTM): DropConnect, locked dropout, tied embeddings,
variable BPTT windows. Each is held to an explicit computation written out step by step, to the
same figures on every `--impl`, to one mask per minibatch, and to being off by default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rnnlab import cells
from rnnlab import checkpoint as ckpt
from rnnlab.batches import (
    MAX_WINDOW_EXTRA,
    MIN_WINDOW,
    batches_per_epoch,
    make_batches,
    mean_window,
    sequential_batches,
    window_length,
)
from rnnlab.cli import main
from rnnlab.errors import UsageError
from rnnlab.model import (
    RNNLM,
    Masks,
    ModelConfig,
    count_parameters,
    forward_check,
    mask_generator,
)
from rnnlab.training import TrainConfig
from rnnlab.training.distributed import World

V, B, T, H = 11, 4, 7, 8
IMPLS = ("torch", "scratch", "fast")
CELL_STEPS = {"rnn": cells.rnn_cell, "gru": cells.gru_cell, "lstm": cells.lstm_cell}
ALL_ON = {"weight_drop": 0.5, "dropout_input": 0.2, "dropout_hidden": 0.3, "dropout_output": 0.4}


def make_model(cell: str = "gru", impl: str = "torch", **options) -> RNNLM:
    torch.manual_seed(0)
    config = {"hidden": H, "layers": 2, "embed": 6, "dropout": 0.0, **options}
    return RNNLM(V, ModelConfig(cell=cell, impl=impl, **config)).double().train()


def ids(shape=(B, T), seed: int = 1) -> torch.Tensor:
    return torch.randint(V, shape, generator=torch.Generator().manual_seed(seed))


def explicit_forward(model: RNNLM, X: torch.Tensor, masks: Masks) -> torch.Tensor:
    """The masked network written out one layer and one step at a time (the oracle): the
    scratch cell functions, W_hh * mask in every step, the locked masks at every step."""
    cfg, core = model.config, model.rnn
    layer_input = model.inputs(X)  # (B, T, E)
    if masks.input is not None:
        layer_input = layer_input * masks.input[:, None]
    for layer in range(cfg.layers):
        w_ih, w_hh, b_ih, b_hh = (getattr(core, f"{n}_l{layer}") for n in cells_names())
        if masks.weight_hh is not None:
            w_hh = w_hh * masks.weight_hh[layer]
        h = c = torch.zeros(X.shape[0], cfg.hidden, dtype=w_hh.dtype)
        outputs = []
        for t in range(X.shape[1]):
            x = layer_input[:, t]  # (B, I)
            if cfg.cell == "lstm":
                h, c = cells.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
            else:
                h = CELL_STEPS[cfg.cell](x, h, w_ih, w_hh, b_ih, b_hh)
            outputs.append(h)
        layer_input = torch.stack(outputs, 1)  # (B, T, H)
        if masks.hidden is not None and layer < cfg.layers - 1:
            layer_input = layer_input * masks.hidden[layer][:, None]
    if masks.output is not None:
        layer_input = layer_input * masks.output[:, None]
    return model.output(layer_input)  # (B, T, V)


def cells_names() -> tuple[str, ...]:
    return ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def loss_and_grads(model: RNNLM, logits: torch.Tensor, Y: torch.Tensor) -> dict:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(logits.reshape(-1, V), Y.reshape(-1)).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


# -- DropConnect ---------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_weight_drop_is_applied_to_w_hh_as_the_explicit_computation(cell, impl):
    """Outputs and every gradient equal autograd's through W_hh * mask, written out by hand
    (one mask for all time steps of the minibatch)."""
    model = make_model(cell, impl, weight_drop=0.5)
    X, Y = ids(), ids(seed=2)
    masks = model.sample_masks(B, mask_generator(0, 0))
    assert masks.input is masks.hidden is masks.output is None
    logits, _ = model(X, None, masks)
    got = loss_and_grads(model, logits, Y)
    want_logits = explicit_forward(model, X, masks)
    want = loss_and_grads(model, want_logits, Y)
    assert torch.allclose(logits, want_logits, atol=1e-10, rtol=0)
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-10, rtol=0), name
    # The mask really acts: a dropped entry of W_hh gets no gradient at all.
    dropped = masks.weight_hh[0] == 0
    assert dropped.any() and (got["rnn.weight_hh_l0"][dropped] == 0).all()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_every_mask_at_once_is_the_explicit_computation(cell, impl):
    model = make_model(cell, impl, **ALL_ON)
    X, Y = ids(), ids(seed=2)
    masks = model.sample_masks(B, mask_generator(3, 5))
    logits, _ = model(X, None, masks)
    got = loss_and_grads(model, logits, Y)
    want_logits = explicit_forward(model, X, masks)
    want = loss_and_grads(model, want_logits, Y)
    assert torch.allclose(logits, want_logits, atol=1e-10, rtol=0)
    assert all(torch.allclose(got[n], want[n], atol=1e-10, rtol=0) for n in want)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_the_three_impls_agree_given_the_same_masks(cell, bidirectional):
    """torch (`_VF` kernels fed the dropped weights), scratch and fast: same logits, state and
    gradients, every option on, three layers (two gaps between layers)."""
    results = []
    for impl in IMPLS:
        model = make_model(cell, impl, layers=3, bidirectional=bidirectional, **ALL_ON)
        masks = model.sample_masks(B, mask_generator(0, 7))
        state = model.begin_state(B)
        state = tuple(s + 0.1 for s in state) if cell == "lstm" else state + 0.1
        logits, final = model(ids(), state, masks)
        results.append((logits, final, loss_and_grads(model, logits, ids(seed=2))))
    (logits0, final0, grads0), *others = results
    for logits, final, grads in others:
        assert torch.allclose(logits, logits0, atol=1e-10, rtol=0)
        finals = zip(final, final0, strict=True) if cell == "lstm" else [(final, final0)]
        assert all(torch.allclose(a, b, atol=1e-10, rtol=0) for a, b in finals)
        assert all(torch.allclose(grads[n], grads0[n], atol=1e-10, rtol=0) for n in grads0)


def test_weight_mask_statistics_and_scale():
    model = make_model("lstm", hidden=64, weight_drop=0.3)
    masks = model.sample_masks(B, mask_generator(0, 0))
    assert [tuple(m.shape) for m in masks.weight_hh] == [(256, 64)] * 2
    m = torch.cat([w.flatten() for w in masks.weight_hh])
    assert abs(float((m == 0).double().mean()) - 0.3) < 0.01
    assert torch.allclose(m[m != 0], torch.tensor(1 / 0.7, dtype=m.dtype))  # as F.dropout scales


@pytest.mark.parametrize("impl", IMPLS)
def test_one_mask_per_minibatch_however_many_forwards(impl):
    """A step's `Masks` is drawn once; every forward given it uses it and draws nothing (so
    chunks of one window see one W_hh), and the mask of a step is a function of (seed, step)."""
    model = make_model("gru", impl, weight_drop=0.5)
    X = ids((B, 12))
    masks = model.sample_masks(B, mask_generator(0, 4))
    rng = torch.get_rng_state()
    whole, _ = model(X, None, masks)
    first, state = model(X[:, :5], None, masks)
    second, _ = model(X[:, 5:], state, masks)
    assert torch.equal(torch.get_rng_state(), rng)  # nothing drawn inside forward
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-12, rtol=0)
    again = model.sample_masks(B, mask_generator(0, 4))
    other = model.sample_masks(B, mask_generator(0, 5))
    assert all(torch.equal(a, b) for a, b in zip(masks.weight_hh, again.weight_hh, strict=True))
    assert not torch.equal(masks.weight_hh[0], other.weight_hh[0])
    # Without masks, each training forward draws its own: one per call.
    a, _ = model(X)
    b, _ = model(X)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("impl", IMPLS)
def test_weight_drop_and_locked_dropout_are_off_in_eval(impl):
    plain = make_model("lstm", impl).eval()
    masked = make_model("lstm", impl, **ALL_ON).eval()
    masked.load_state_dict(plain.state_dict())
    X = ids()
    masks = masked.sample_masks(B, mask_generator(0, 0))
    want, _ = plain(X)
    assert torch.equal(masked(X)[0], want)
    assert torch.equal(masked(X, None, masks)[0], want)  # masks passed in eval are ignored


# -- locked dropout ------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_locked_masks_are_constant_over_time(impl):
    """What the core reads and what the output layer reads: a unit dropped for a sequence is
    dropped at every time step of it, and one kept is kept at every step."""
    model = make_model("gru", impl, dropout_input=0.5, dropout_output=0.5)
    seen = {}
    model.rnn.register_forward_pre_hook(lambda m, args: seen.__setitem__("input", args[0]))
    model.output.register_forward_pre_hook(lambda m, args: seen.__setitem__("output", args[0]))
    X = ids((B, 20))
    masks = model.sample_masks(B, mask_generator(1, 2))
    model(X, None, masks)
    for where in ("input", "output"):
        mask = getattr(masks, where)  # (B, width)
        assert mask.shape == (B, seen[where].shape[-1])
        zero_at = seen[where] == 0  # (B, T, width)
        assert torch.equal(zero_at.all(1), mask == 0)  # dropped: zero at every step
        assert not (zero_at.any(1) & (mask != 0)).any()  # kept: never zero
        assert 0.3 < float((mask == 0).double().mean()) < 0.7


def test_locked_dropout_replaces_plain_dropout_where_it_is_set():
    model = make_model("gru", dropout=0.3, dropout_hidden=0.2, dropout_output=0.1)
    assert model.rnn.dropout == 0.0 and model.drop.p == 0.0
    kept = make_model("gru", dropout=0.3, dropout_input=0.2)
    assert kept.rnn.dropout == 0.3 and kept.drop.p == 0.3
    assert make_model("gru", layers=1, dropout_hidden=0.5).sample_masks(B) is None  # no gap


# -- DDP: the global batch's masks, this rank's rows ---------------------------------------------


def test_rank_rows_of_the_global_masks():
    model = make_model("lstm", **ALL_ON)
    whole = model.sample_masks(8, mask_generator(0, 9))
    for rank in range(2):
        rows = World(rank=rank, size=2).rows(8)
        part = model.sample_masks(8, mask_generator(0, 9), rows=rows)
        assert all(torch.equal(a, b) for a, b in zip(part.weight_hh, whole.weight_hh, strict=True))
        assert torch.equal(part.input, whole.input[rows])
        assert torch.equal(part.hidden[0], whole.hidden[0][rows])
        assert torch.equal(part.output, whole.output[rows])


@pytest.mark.parametrize("impl", IMPLS)
def test_two_ranks_average_to_one_process(impl):
    """What DDP computes (the mean of the ranks' gradients, each on its rows with its rows of
    the masks) equals one process's gradient on the whole minibatch."""
    model = make_model("gru", impl, **ALL_ON)
    X, Y = ids((8, T)), ids((8, T), seed=2)
    logits, _ = model(X, None, model.sample_masks(8, mask_generator(0, 3)))
    want = loss_and_grads(model, logits, Y)
    got = {n: torch.zeros_like(g) for n, g in want.items()}
    for rank in range(2):
        rows = World(rank=rank, size=2).rows(8)
        masks = model.sample_masks(8, mask_generator(0, 3), rows=rows)
        logits, _ = model(X[rows], None, masks)
        for n, g in loss_and_grads(model, logits, Y[rows]).items():
            got[n] += g / 2
    assert all(torch.allclose(got[n], want[n], atol=1e-10, rtol=0) for n in want)


# -- tied embeddings -----------------------------------------------------------------------------


def test_tied_weights_share_one_parameter_and_save_and_load():
    tied = make_model("gru", embed=-1, tie_weights=True)
    untied = make_model("gru", embed=H)
    assert tied.embed_size == H  # auto picks the only size that can be tied
    assert tied.embedding.weight is tied.output.weight
    assert tied.embedding.weight.data_ptr() == tied.output.weight.data_ptr()
    assert count_parameters(tied) == count_parameters(untied) - V * H
    logits, _ = tied(ids())
    grads = loss_and_grads(tied, logits, ids(seed=2))
    assert "output.weight" not in grads  # one parameter, named once, trained by both uses
    # A state dict holds both names (a copy: safetensors refuses shared storage) and loads back.
    state = tied.state_dict()
    assert torch.equal(state["output.weight"], state["embedding.weight"])
    loaded = ckpt.parse_tensors(ckpt.tensors_bytes(state), Path("x"))
    fresh = RNNLM(V, ModelConfig(hidden=H, dropout=0.0, tie_weights=True)).double()
    fresh.load_state_dict(loaded)
    assert fresh.embedding.weight is fresh.output.weight
    assert torch.equal(fresh.output.weight, tied.output.weight)


def test_tied_model_starts_near_a_uniform_guess():
    model = RNNLM(V, ModelConfig(cell="lstm", hidden=32, tie_weights=True))
    assert forward_check(model, ids(), ids(seed=2))["ok"]


@pytest.mark.parametrize(
    "options, words",
    [
        ({"embed": 0}, "--embed 0 is one-hot"),
        ({"embed": 7}, "--tie-weights needs --embed equal to the output layer's input size 16"),
        ({"embed": 16, "bidirectional": True}, "32 (--hidden 16 x 2 (bidirectional))"),
    ],
)
def test_tie_weights_with_sizes_that_differ_is_refused(options, words):
    with pytest.raises(UsageError, match=re.escape(words)):
        ModelConfig(hidden=16, tie_weights=True, **options)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("data") / "tiny.txt"
    f.write_text("the cat sat on the mat. the dog sat on the log. " * 40, encoding="utf-8")
    return f


TINY = ["--hidden", "16", "--batch-size", "4", "--num-steps", "8"]


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--tie-weights", "--embed", "7"], "--tie-weights needs --embed equal to"),
        (["--tie-weights", "--embed", "0"], "--tie-weights shares the input embedding"),
        (["--weight-drop", "1"], "--weight-drop must be in [0, 1), got 1.0"),
        (["--dropout-hidden", "-0.1"], "--dropout-hidden must be in [0, 1)"),
        (["--sampling", "random", "--variable-window"], "use it with --sampling sequential"),
    ],
)
def test_cli_refuses_bad_options_in_one_line(tmp_path, corpus, capsys, flags, words):
    out = tmp_path / "r"
    args = ["train", "--corpus", str(corpus), "--out", str(out), "--quiet", *TINY, *flags]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0]
    assert not out.exists()


def test_cli_trains_and_resumes_exactly_with_every_model_option_on(tmp_path, corpus, capsys):
    """DropConnect, locked dropout and tied weights through `rnnlab train`: checkpoints save
    (the tied matrix too), and 12 steps taken as 5 + a resume mid-epoch end bit for bit where
    12 straight do (the masks come from torch's checkpointed stream)."""
    options = ["--weight-drop", "0.3", "--dropout-input", "0.1", "--dropout-hidden", "0.2"]
    options += ["--dropout-output", "0.2", "--tie-weights"]
    args = ["train", "--corpus", str(corpus), "--quiet", *TINY, *options]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main([*args, "--out", str(straight), "--max-steps", "12"]) == 0
    assert main([*args, "--out", str(split), "--max-steps", "5"]) == 0
    assert main(["train", "--out", str(split), "--resume", "--max-steps", "12", "--quiet"]) == 0
    capsys.readouterr()
    weights = []
    for run in (straight, split):
        step, path = ckpt.list_checkpoints(run)[-1]
        assert step == 12
        weights.append(ckpt.read_tensors(path, ckpt.WEIGHTS))
    a, b = weights
    assert torch.equal(a["embedding.weight"], a["output.weight"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- variable-length BPTT windows ----------------------------------------------------------------


def test_window_lengths_follow_awd_lstms_distribution():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([window_length(70, gen) for _ in range(20_000)], dtype=torch.float64)
    assert lengths.min() >= MIN_WINDOW and lengths.max() <= 70 + MAX_WINDOW_EXTRA
    half = lengths < 52  # T/2 + 17: 3.4 standard deviations from either centre
    assert abs(float(half.double().mean()) - 0.05) < 0.006
    # int() truncates toward zero: each centre's mean lands about half a step below it.
    assert abs(float(lengths[~half].mean()) - 69.5) < 0.15
    assert abs(float(lengths[~half].std()) - 5.0) < 0.15
    assert abs(float(lengths[half].mean()) - 34.5) < 0.6
    assert window_length(3, gen) <= 3 + MAX_WINDOW_EXTRA and mean_window(40) == pytest.approx(39.0)


def variable_epoch(seed: int, n: int = 3000, b: int = 4, t: int = 12) -> list:
    data = torch.arange(n, dtype=torch.int32)  # id == position
    gen = torch.Generator().manual_seed(seed)
    return list(make_batches(data, b, t, "sequential", gen, variable_window=True))


def test_variable_windows_cover_every_stream_to_its_end():
    n, b = 3000, 4
    for seed in range(5):
        batches = variable_epoch(seed, n, b)
        rows = torch.cat([X for X, _ in batches], dim=1)  # (B, N/B): the streams, rebuilt
        offset, width = int(rows[0, 0]), rows.shape[1]
        assert offset < 12 and width == (n - offset - 1) // b
        assert torch.equal(rows, offset + torch.arange(b * width).view(b, width))  # contiguous
        assert all(torch.equal(Y, X + 1) for X, Y in batches)
        assert all(X.shape[1] >= MIN_WINDOW for X, _ in batches)  # a short tail was merged
        assert len({X.shape[1] for X, _ in batches}) > 3
        expected = batches_per_epoch(n, b, 12, "sequential", variable_window=True)
        assert abs(len(batches) - expected) <= 0.15 * expected


def test_variable_windows_replay_from_a_generator_state():
    """The loop's exact resume: the epoch's generator state and the count of batches done give
    the rest of the epoch, window lengths included; DDP ranks agree the same way."""
    first = variable_epoch(3)
    assert [X.shape[1] for X, _ in variable_epoch(3)] == [X.shape[1] for X, _ in first]
    data = torch.arange(3000, dtype=torch.int32)
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    batches = make_batches(data, 4, 12, "sequential", gen, variable_window=True)
    for _ in range(10):
        next(batches)
    gen.set_state(state)  # a new process: the epoch's start, then skip what was trained
    replay = make_batches(data, 4, 12, "sequential", gen, variable_window=True)
    for _ in range(10):
        next(replay)
    rest = list(replay)
    assert len(rest) == len(first) - 10
    assert all(torch.equal(X, Xf) for (X, _), (Xf, _) in zip(rest, first[10:], strict=True))


def test_variable_window_needs_sequential_sampling():
    with pytest.raises(UsageError, match="--sampling sequential"):
        TrainConfig(sampling="random", variable_window=True)
    with pytest.raises(UsageError, match="--sampling sequential"):
        make_batches(torch.arange(500), 4, 7, "random", torch.Generator(), variable_window=True)


# -- off by default: today's computation, bit for bit --------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_everything_off_by_default_is_the_plain_forward_bit_for_bit(impl):
    torch.manual_seed(0)
    model = RNNLM(V, ModelConfig(impl=impl, hidden=H))  # the defaults: plain dropout 0.3
    assert model.sample_masks(B) is None and not model.config.uses_masks
    assert set(model.state_dict()) == {
        *(f"rnn.{w}_l{k}" for w in cells_names() for k in range(2)),
        "output.weight",
        "output.bias",
    }
    X = ids()
    torch.manual_seed(5)
    got, _ = model(X)
    torch.manual_seed(5)
    outputs, _ = model.rnn(model.inputs(X), model.begin_state(B))  # the forward pass before
    assert torch.equal(got, model.output(model.drop(outputs)))
    assert model.rnn.dropout == 0.3 and model.drop.p == 0.3


def test_fixed_windows_draw_only_the_offset():
    data = torch.arange(1000, dtype=torch.int32)
    gen = torch.Generator().manual_seed(0)
    list(sequential_batches(data, 4, 7, gen))
    reference = torch.Generator().manual_seed(0)
    torch.randint(7, (1,), generator=reference)
    assert torch.equal(gen.get_state(), reference.get_state())
