"""The sweep report: its discussion says only what its table supports, and it writes its files.

Hand-made result tables where longer windows are better, worse, flat or U-shaped; each rule's
sentences are checked both for what they must say and for what they must not.
"""

from __future__ import annotations

import math

import pytest

from rnnlab.experiments import rules
from rnnlab.experiments.markdown import write_report
from rnnlab.experiments.report_data import Context, SweepData, aggregate, trend
from rnnlab.experiments.rules import discussion

PNG = b"\x89PNG\r\n\x1a\n"


def row(
    T: int,
    loss: float,
    *,
    sampling: str = "random",
    cell: str = "gru",
    corpus: str = "timemachine",
    seed: int = 0,
    reset: float | None = None,
    train: float | None = None,
    clip: float = 0.0,
    grad: float = 0.5,
    cps: float = 50_000.0,
    rss: float = 300.0,
    impl: str = "torch",
    chars: int = 1_048_576,
    status: str = "ok",
) -> dict:
    """One results.csv row, as `rnnlab sweep` writes it (B = 32)."""
    reset = loss + 0.2 / T if reset is None else reset
    train = loss - 0.1 if train is None else train
    steps = chars // (32 * T)
    figures = {}
    for name, value in (("heldout_carried", loss), ("heldout_reset", reset)):
        figures |= {
            f"{name}_loss": value,
            f"{name}_ppl": math.exp(value),
            f"{name}_bpc": value / math.log(2),
        }
    return {
        "key": f"{corpus}-{cell}-L1-{impl}-auto-{sampling}-T{T}-s{seed}",
        "corpus": corpus,
        "cell": cell,
        "layers": 1,
        "impl": impl,
        "embed": -1,
        "sampling": sampling,
        "num_steps": T,
        "seed_index": seed,
        "seed": seed,
        "status": status,
        "params": 54_000,
        "vocab_size": 28,
        "threads": 1,
        "chars_trained": chars,
        "steps": steps,
        "epochs": chars / 150_000,
        "heldout_chars": 17_000,
        **figures,
        "train_final_loss": train,
        "train_final_ppl": math.exp(train),
        "grad_norm": grad,
        "clip_fraction": clip,
        "time_train_s": chars / cps,
        "time_chars_per_s": cps,
        "time_setting_s": chars / cps + 3,
        "mem_peak_rss_mib": rss,
    }


def curve(losses: dict[int, float], **kw) -> list[dict]:
    return [row(T, loss, **kw) for T, loss in losses.items()]


def seeded(losses: dict[int, list[float]], **kw) -> list[dict]:
    """Several seeds per num_steps."""
    return [row(T, v, seed=i, **kw) for T, vals in losses.items() for i, v in enumerate(vals)]


def ctx(rows: list[dict], **kw) -> Context:
    return Context(groups=aggregate(rows), budget={"kind": "chars", "amount": 1e6}, **kw)


def texts(claims) -> str:
    return "\n".join(c.text for c in claims)


# -- the context rule: longer windows better, worse, flat, U-shaped -------------------------------


def test_longer_is_better_then_flat():
    c = rules.rule_context(ctx(curve({1: 2.30, 4: 1.90, 16: 1.60, 64: 1.601})))
    text = texts(c)
    assert "falls as num_steps grows from 9.974 at 1 to 4.953 at 16, then flattens" in text
    assert "worse" not in text and "U-shape" not in text and "no clear difference" not in text
    assert c[0].evidence == "Table 1, heldout.png"


def test_longer_is_better_throughout():
    text = texts(rules.rule_context(ctx(curve({1: 2.3, 4: 2.0, 16: 1.8, 64: 1.6}))))
    assert "falls as num_steps grows" in text and "still falling at the longest window" in text
    assert "flattens" not in text and "worse" not in text


def test_longer_is_worse():
    text = texts(rules.rule_context(ctx(curve({1: 1.5, 4: 1.7, 16: 1.9, 64: 2.2}))))
    assert "longer windows are worse" in text
    assert "lowest at num_steps 1" in text and "clearly higher from 4 on" in text
    assert "falls" not in text and "better" not in text


def test_flat_within_one_percent_with_one_seed():
    text = texts(rules.rule_context(ctx(curve({1: 1.700, 4: 1.705, 16: 1.698, 64: 1.702}))))
    assert "no clear difference" in text
    assert "falls" not in text and "worse" not in text


def test_u_shape():
    text = texts(rules.rule_context(ctx(curve({1: 2.2, 4: 1.8, 16: 1.6, 64: 1.9}))))
    assert "U-shape" in text and "lowest" not in text
    assert "falls from 9.025 at 1 to 4.953 at 16, then rises again (6.686 at 64)" in text


def test_differences_within_the_seed_spread_are_no_clear_difference():
    # Means fall by 0.05, but seeds scatter by ~0.2: nothing is clear.
    noisy = seeded({1: [1.9, 1.7, 2.1], 4: [1.85, 1.65, 2.05], 16: [1.8, 1.6, 2.0]})
    assert "no clear difference" in texts(rules.rule_context(ctx(noisy)))
    # The same means with tight seeds: the fall is clear.
    tight = seeded({1: [1.9, 1.901, 1.899], 4: [1.85, 1.851, 1.849], 16: [1.8, 1.801, 1.799]})
    text = texts(rules.rule_context(ctx(tight)))
    assert "falls as num_steps grows" in text and "no clear difference" not in text


def test_trend_kinds():
    def kind(losses):
        groups = sorted(aggregate(curve(losses)), key=lambda g: g.T)
        return trend(groups, "heldout_carried_loss").kind

    assert kind({1: 2.0, 2: 1.5, 4: 1.2}) == "falls"
    assert kind({1: 2.0, 2: 1.5, 4: 1.2, 8: 1.2}) == "falls-flattens"
    assert kind({1: 1.2, 2: 1.5, 4: 2.0}) == "rises"
    assert kind({1: 2.0, 2: 1.2, 4: 2.0}) == "u-shape"
    assert kind({1: 1.2, 2: 1.201, 4: 1.199}) == "flat"
    assert kind({1: 2.0, 2: 1.2, 4: 1.6, 8: 1.2}) == "mixed"  # back to the best after a rise
    assert kind({1: 2.0, 2: 1.21, 4: 1.5, 8: 1.2}) == "mixed"  # a bump on the way down
    assert kind({1: 1.2, 2: 1.8, 4: 1.5}) == "rises"  # still clearly worse at the end


# -- the other rules ------------------------------------------------------------------------------


def test_sampling_rule_names_the_winner_at_each_window():
    rows = curve({1: 2.4, 16: 1.6, 64: 1.5}, sampling="random") + curve(
        {1: 1.8, 16: 1.601, 64: 1.7}, sampling="sequential"
    )
    text = texts(rules.rule_sampling(ctx(rows)))
    assert "sequential partitioning is clearly lower at num_steps 1;" in text
    assert "random sampling is clearly lower at num_steps 64" in text
    assert "no clear difference at num_steps 16" in text
    assert "context beyond its window" in text  # it wins at the shortest window
    rows = curve({1: 1.8, 16: 1.6}, sampling="random") + curve(
        {1: 2.4, 16: 1.6}, sampling="sequential"
    )
    text = texts(rules.rule_sampling(ctx(rows)))
    assert "random sampling is clearly lower at num_steps 1" in text
    assert "sequential partitioning is clearly lower" not in text
    assert "context beyond its window" not in text


def test_reset_rule_shrinking_cost_and_a_carried_state_that_hurts():
    shrinking = [row(1, 1.6, reset=2.4), row(16, 1.5, reset=1.6), row(64, 1.5, reset=1.51)]
    text = texts(rules.rule_reset(ctx(shrinking)))
    assert "+0.800 at 1, +0.100 at 16, +0.010 at 64" in text
    assert "costs context at num_steps 1, 16" in text and "shrinks as the window grows" in text
    assert "clearly worse than resetting" not in text
    hurting = [row(1, 2.8, reset=2.3), row(16, 1.5, reset=1.6)]
    text = texts(rules.rule_reset(ctx(hurting)))
    assert "At num_steps 1 the carried state is clearly worse than resetting" in text
    assert "shrinks" not in text
    same = [row(1, 1.6, reset=1.601), row(16, 1.5, reset=1.5)]
    assert "makes no clear difference" in texts(rules.rule_reset(ctx(same)))


def test_steps_rule_says_under_trained_only_when_training_loss_agrees():
    worse_both = curve({1: 1.8, 16: 1.5, 64: 1.9}) + []
    for r, train in zip(worse_both, (1.7, 1.4, 1.85), strict=True):
        r["train_final_loss"], r["train_final_ppl"] = train, math.exp(train)
    text = texts(rules.rule_steps(ctx(worse_both)))
    assert "num_steps 64 takes 512 optimizer steps against 32,768 at 1 (64x fewer" in text
    assert "for the same 1,048,576 training characters" in text
    assert "under-trained" in text
    overfit = curve({1: 1.8, 16: 1.5, 64: 1.9})
    for r, train in zip(overfit, (1.7, 1.4, 1.2), strict=True):
        r["train_final_loss"], r["train_final_ppl"] = train, math.exp(train)
    text = texts(rules.rule_steps(ctx(overfit)))
    assert "under-trained" not in text and "is not higher" in text
    better = curve({1: 1.8, 16: 1.5, 64: 1.4})  # no held-out rise: no explanation offered
    text = texts(rules.rule_steps(ctx(better)))
    assert "fewer updates)" in text and "under-trained" not in text and "not higher" not in text


def test_gradflow_rule_orders_the_cells():
    rows = [row(64, 1.5, cell=c) for c in ("rnn", "gru", "lstm")]
    decay = {"rnn": 1e-6, "gru": 0.02, "lstm": 0.5}
    flows = {r["key"]: {k: decay[r["cell"]] ** ((k - 1) / 62) for k in range(1, 64)} for r in rows}
    text = texts(rules.rule_gradflow(ctx(rows, gradflow=flows)))
    assert "RNN 1.0e-06 (vanishes); GRU 2.0e-02 (decays); LSTM 5.0e-01 (stays within" in text
    assert "fastest for RNN and slowest for LSTM: gates" in text
    flows = {r["key"]: {1: 1.0, 63: 50.0} for r in rows}
    assert "grows (exploding)" in texts(rules.rule_gradflow(ctx(rows, gradflow=flows)))
    assert rules.rule_gradflow(ctx(rows)) == []  # nothing measured: nothing said


def test_clipping_and_cost_rules_follow_the_numbers():
    rows = [
        row(1, 2.0, clip=0.0, grad=0.3, cps=10_000),
        row(64, 1.6, clip=0.4, grad=2.0, cps=80_000),
    ]
    c = ctx(rows)
    assert "clipping fired more often with longer windows (0% of steps" in texts(
        rules.rule_clipping(c)
    )
    cost = texts(rules.rule_cost(c))
    assert "10,000 chars/s at num_steps 1 against 80,000 at 64" in cost
    assert "3.20 ms for 32 characters" in cost and "dominates short windows" in cost
    rows = [row(1, 2.0, clip=0.2, cps=50_000), row(64, 1.6, clip=0.2, cps=51_000)]
    c = ctx(rows)
    assert "clipping fired in 20% of steps at every num_steps" in texts(rules.rule_clipping(c))
    assert "about the same at every num_steps" in texts(rules.rule_cost(c))


def test_positions_rule_first_characters_from_a_zero_state():
    rows = curve({16: 1.5}, sampling="random") + curve({16: 1.5}, sampling="sequential")
    positions = {}
    for r in rows:
        start = 3.3 if r["sampling"] == "random" else 3.9
        positions[r["key"]] = {p: 1.4 + (start - 1.4) / p**2 for p in range(1, 17)}
    text = texts(rules.rule_positions(ctx(rows, positions=positions)))
    assert "first character of a window, predicted from a zero state, costs 3.300 nats" in text
    assert "trained with sequential partitioning loses 3.900 nats against 3.300" in text
    flat = {r["key"]: {p: 1.5 for p in range(1, 17)} for r in rows}
    text = texts(rules.rule_positions(ctx(rows, positions=flat)))
    assert "not clearly harder" in text and "lean on a carried state" not in text


def test_axis_rules_compare_cells_and_implementations():
    rows = []
    for cell, loss in (("rnn", 2.0), ("gru", 1.6), ("lstm", 1.61)):
        rows += curve({4: loss, 16: loss - 0.1}, cell=cell)
    text = texts(rules.rule_axes(ctx(rows)))
    assert "no clear winner in 2 of 2" in text  # GRU and LSTM within 1%
    rows = [row(16, 1.5, impl="torch", cps=60_000), row(16, 1.5, impl="scratch", cps=12_000)]
    text = texts(rules.rule_axes(ctx(rows)))
    assert "torch's fused cells train 5.0x to 5.0x as many characters" in text


def test_floors_and_corpora():
    rows = curve({4: 0.9, 16: 0.75}, corpus="memory:8")
    floors = {
        "memory:8": {"floor": 0.7, "no_memory": math.log(4), "window": {"4": 0.85, "16": 0.72}}
    }
    text = texts(rules.rule_floors(ctx(rows, floors=floors)))
    assert "best achievable held-out loss is 0.7000 nats/char" in text
    assert "0.750 nats carried = 1.07x the floor" in text and "window floor 0.720" in text
    rows = curve({16: 1.5}, corpus="timemachine") + curve({16: 3.0}, corpus="songci")
    text = texts(rules.rule_corpora(ctx(rows)))
    assert "timemachine 2.164, songci 4.328" in text


def test_discussion_groups_claims_by_topic():
    rows = curve({1: 2.3, 16: 1.6}, sampling="random") + curve(
        {1: 1.8, 16: 1.6}, sampling="sequential"
    )
    claims = discussion(ctx(rows))
    topics = [c.topic for c in claims]
    assert topics == sorted(topics, key=topics.index)  # each topic's claims together
    assert all(c.evidence for c in claims)


# -- the files ------------------------------------------------------------------------------------


def sweep_data(rows, **kw) -> SweepData:
    corpora = sorted({r["corpus"] for r in rows})
    spec = {
        "grid": {
            "corpus": corpora,
            "cell": ["gru"],
            "layers": [1],
            "impl": ["torch"],
            "embed": [-1],
            "sampling": sorted({r["sampling"] for r in rows}),
            "num_steps": sorted({r["num_steps"] for r in rows}),
            "seeds": 1,
        },
        "data": {"valid_fraction": 0.1},
        "model": {"hidden": 128, "dropout": 0.0},
        "train": {
            "optimizer": "adam",
            "lr": 0.003,
            "clip": 1.0,
            "batch_size": 32,
            "lr_decay": 0.5,
            "seed": 0,
        },
        "budget": {"kind": "chars", "amount": 1_048_576},
        "threads": 1,
        "preset": None,
    }
    data = {c: {"vocab_size": 28, "train_chars": 150_000, "heldout_chars": 17_000} for c in corpora}
    return SweepData(spec=spec, command="rnnlab sweep --out X", data=data, rows=rows, **kw)


def test_write_report_files(tmp_path):
    pytest.importorskip("matplotlib")
    rows = curve({1: 2.3, 4: 1.9, 16: 1.6}, sampling="random") + curve(
        {1: 1.8, 4: 1.7, 16: 1.6}, sampling="sequential"
    )
    positions = [
        {"key": r["key"], "position": p, "loss": 2.0 / p}
        for r in rows
        for p in range(1, r["num_steps"] + 1)
    ]
    flows = [
        {"key": r["key"], "k": k, "norm": 0.5**k}
        for r in rows
        if r["num_steps"] == 16
        for k in range(1, 16)
    ]
    path = write_report(tmp_path, sweep_data(rows, positions=positions, gradflow=flows))
    text = path.read_text()
    assert text.splitlines()[4:7] == ["```", "rnnlab sweep --out X", "```"]  # command on top
    assert "every setting trained on exactly 1,048,576 characters" in text
    assert "| random | 16 | 4.953 |" in text
    assert "`time_*` and `mem_*`" in text and "Table 3" not in text
    for name in (
        "heldout.png",
        "position_loss_random.png",
        "position_loss_sequential.png",
        "gradflow.png",
        "cost.png",
        "gradients.png",
    ):
        assert (tmp_path / name).read_bytes()[:8] == PNG, name
        assert f"]({name})" in text


def test_report_tables_adapt_to_the_axes(tmp_path):
    pytest.importorskip("matplotlib")
    rows = curve({4: 1.6, 16: 1.5}, corpus="timemachine") + curve(
        {4: 3.1, 16: 3.0}, corpus="songci"
    )
    text = write_report(tmp_path, sweep_data(rows)).read_text()
    assert "## Table 3: held-out bits/char (carried) by corpus and num_steps" in text
    assert "| songci | 4.472 | 4.328 |" in text
    rows = curve({4: 0.9, 16: 0.75}, corpus="memory:8")
    floors = {
        "memory:8": {"floor": 0.7, "no_memory": math.log(4), "window": {"4": 0.85, "16": 0.72}}
    }
    text = write_report(tmp_path, sweep_data(rows, floors=floors)).read_text()
    assert "## Table 4: measured held-out loss against the theoretical floor" in text
    assert "| 16 | 0.7500 | 0.7000 | 1.071 |" in text


def test_diverged_settings_are_listed_and_left_out(tmp_path):
    pytest.importorskip("matplotlib")
    rows = curve({4: 1.6, 16: 1.5})
    bad = row(64, math.nan, status="diverged")
    text = write_report(tmp_path, sweep_data(rows + [bad])).read_text()
    assert f"Diverged (NaN/inf; left out of the means): {bad['key']}." in text
    assert "| 64 | diverged |" in text


def test_preset_sweeps_set_training_beside_held_out_perplexity():
    rows = curve({35: 2.0})
    rows[0]["train_final_loss"], rows[0]["train_final_ppl"] = 0.5, math.exp(0.5)
    text = texts(rules.rule_train_vs_heldout(ctx(rows, preset="d2l")))
    assert "final training perplexity 1.649 (the figure d2l prints) against held-out 7.389" in text
    assert "higher than the training figure" in text
    assert rules.rule_train_vs_heldout(ctx(rows)) == []  # not a preset sweep: not said
