"""Decoding strategies: beam 1 == greedy, beam vs exhaustive search, filters, seeds, LM adapters."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import rnnlab.decoding
import rnnlab.options
from rnnlab.decoding import (
    DecodeConfig,
    beam_search,
    choose,
    filter_logits,
    greedy,
    sample,
)
from rnnlab.errors import UsageError
from rnnlab.generate import GenerateConfig, lm_advance, lm_generate, lm_start, predict, score_text
from rnnlab.metrics import evaluate
from rnnlab.model import RNNLM, ModelConfig
from rnnlab.options import from_options
from rnnlab.vocab import Vocab

TEXT = "the cat sat on the mat and the hat"


def make_lm(cell: str = "gru", seed: int = 0, layers: int = 1) -> tuple[RNNLM, Vocab]:
    vocab = Vocab.build(TEXT)
    torch.manual_seed(seed)
    config = ModelConfig(cell=cell, hidden=16, layers=layers, dropout=0.0, embed=0, impl="torch")
    model = RNNLM(len(vocab), config)
    with torch.no_grad():  # sharper distributions than the default init, so strategies differ
        model.output.weight.mul_(8)
    return model.eval(), vocab


def table_advance(table: dict[int, dict[int, float]], V: int):
    """An advance function from a Markov table: next-token probabilities given the last token."""

    def advance(ids, state):
        logp = torch.full((len(ids), V), -math.inf, dtype=torch.float64)
        for b, i in enumerate(ids.tolist()):
            for j, p in table.get(i, {}).items():
                logp[b, j] = math.log(p)
        return logp, state

    return advance


def sequence_log_prob(model: RNNLM, start: int, state, ids: list[int]) -> float:
    """Teacher-forced log-likelihood of `ids` after `start`: the oracle for the bookkeeping."""
    X = torch.tensor([[start, *ids[:-1]]])
    logits, _ = model(X, state)  # (1, n, V)
    logp = F.log_softmax(logits[0].double(), dim=-1)
    return float(logp[torch.arange(len(ids)), torch.tensor(ids)].sum().detach())


@pytest.mark.parametrize("cell, layers", [("gru", 1), ("lstm", 2), ("rnn", 2)])
def test_beam_of_one_is_greedy_for_the_language_model(cell, layers):
    model, vocab = make_lm(cell, layers=layers)
    advance = lm_advance(model)
    for prefixes in (["the c"], ["the c", "a", "sat on", "mat"]):
        start, state = lm_start(model, vocab, prefixes)
        g = greedy(advance, state, start, max_len=20)
        b = beam_search(advance, state, start, beam=1, max_len=20)
        assert [h.ids for h in g] == [hyps[0].ids for hyps in b]
        for gh, bh in zip(g, b, strict=True):
            assert gh.log_prob == pytest.approx(bh[0].log_prob, abs=1e-9)


def test_beam_of_one_is_greedy_with_an_end_symbol():
    model, vocab = make_lm()
    start, state = lm_start(model, vocab, ["the", "c", "on", "ha", "mat"])
    advance = lm_advance(model)
    for end in range(len(vocab)):  # an end id that stops some rows early and not others
        g = greedy(advance, state, start, max_len=15, end_id=end)
        if any(h.ended for h in g) and not all(h.ended for h in g):
            break
    else:
        pytest.fail("no end id stops only some rows: the test model is degenerate")
    b = beam_search(advance, state, start, beam=1, max_len=15, end_id=end)
    assert [(h.ids, h.ended) for h in g] == [(hs[0].ids, hs[0].ended) for hs in b]
    assert [h.log_prob for h in g] == pytest.approx([hs[0].log_prob for hs in b], abs=1e-9)


def test_log_probs_match_a_teacher_forced_forward_pass():
    model, vocab = make_lm("lstm")
    start, state = lm_start(model, vocab, ["the m"])
    advance = lm_advance(model)
    for hyp in [*greedy(advance, state, start, 8), *beam_search(advance, state, start, 4, 8)[0]]:
        oracle = sequence_log_prob(model, int(start[0]), state, hyp.ids)
        assert hyp.log_prob == pytest.approx(oracle, abs=1e-5)


def test_full_width_beam_finds_the_exhaustive_optimum():
    model, vocab = make_lm(seed=3)
    V, n = len(vocab), 3
    start, state = lm_start(model, vocab, ["th"])
    exhaustive = max(
        itertools.product(range(V), repeat=n),
        key=lambda ids: sequence_log_prob(model, int(start[0]), state, list(ids)),
    )
    best = beam_search(lm_advance(model), state, start, beam=V ** (n - 1), max_len=n)[0][0]
    assert tuple(best.ids) == exhaustive


def test_beam_beats_greedy_when_the_greedy_first_step_is_a_trap():
    # 0 -> 1 (0.6) then three equal choices; 0 -> 2 (0.4) then 3 (0.9). Greedy: 0.2; best: 0.36.
    table = {0: {1: 0.6, 2: 0.4}, 1: {3: 1 / 3, 4: 1 / 3, 5: 1 / 3}, 2: {3: 0.9, 4: 0.1}}
    advance = table_advance(table, V=6)
    start, state = torch.tensor([0]), torch.zeros(1, 1, 1)
    g = greedy(advance, state, start, max_len=2)[0]
    b = beam_search(advance, state, start, beam=2, max_len=2)[0]
    assert g.ids == [1, 3] and g.log_prob == pytest.approx(math.log(0.2))
    assert b[0].ids == [2, 3] and b[0].log_prob == pytest.approx(math.log(0.36))
    assert b[0].log_prob > g.log_prob
    assert [h.log_prob for h in b] == sorted((h.log_prob for h in b), reverse=True)


def test_length_normalisation_prefers_the_longer_better_per_token_hypothesis():
    # From 0: end (id 9) at once with 0.5, or token 1 (0.5) and then end with 0.8.
    table = {0: {9: 0.5, 1: 0.5}, 1: {9: 0.8, 2: 0.2}}
    advance = table_advance(table, V=10)
    start, state = torch.tensor([0]), torch.zeros(1, 1, 1)
    plain = beam_search(advance, state, start, beam=3, max_len=5, end_id=9, length_norm=0.0)[0]
    normed = beam_search(advance, state, start, beam=3, max_len=5, end_id=9, length_norm=1.0)[0]
    assert plain[0].ids == [] and plain[0].ended  # log 0.5 = -0.69 beats log 0.4 = -0.92
    assert normed[0].ids == [1] and normed[0].ended  # -0.92 / 2 beats -0.69 / 1
    assert normed[0].log_prob == pytest.approx(math.log(0.4))


def test_finished_hypotheses_stop_counting_and_rank_first():
    table = {0: {9: 0.3, 1: 0.7}, 1: {1: 0.9, 2: 0.1}, 2: {2: 1.0}}
    advance = table_advance(table, V=10)
    hyps = beam_search(advance, torch.zeros(1, 1, 1), torch.tensor([0]), 2, max_len=4, end_id=9)[0]
    assert hyps[0].ended and hyps[0].ids == [] and hyps[0].log_prob == pytest.approx(math.log(0.3))
    assert not hyps[1].ended and len(hyps[1].ids) == 4  # more likely so far, but never ended


def test_top_k_keeps_exactly_the_k_most_likely_ids():
    logits = torch.tensor([[0.1, 3.0, 2.0, -1.0, 2.5, 0.0]])
    kept = filter_logits(logits, top_k=3).isfinite()[0]
    assert kept.nonzero().flatten().tolist() == [1, 2, 4]
    gen = torch.Generator().manual_seed(0)
    draws = {int(choose(logits, 1.0, top_k=2, generator=gen)) for _ in range(300)}
    assert draws == {1, 4}
    assert filter_logits(logits, top_k=1).isfinite()[0].nonzero().flatten().tolist() == [1]
    assert {int(choose(logits, 5.0, top_k=1, generator=gen)) for _ in range(50)} == {1}


@pytest.mark.parametrize(
    "top_p, allowed",
    [(0.5, {0}), (0.7, {0, 1}), (0.8, {0, 1}), (0.81, {0, 1, 2}), (1.0, {0, 1, 2, 3})],
)
def test_top_p_keeps_the_smallest_nucleus(top_p, allowed):
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = filter_logits(logits, top_p=top_p).isfinite()[0]
    assert set(kept.nonzero().flatten().tolist()) == allowed
    gen = torch.Generator().manual_seed(1)
    draws = {int(choose(logits, 1.0, top_p=top_p, generator=gen)) for _ in range(400)}
    assert draws <= allowed and (len(allowed) == 1 or len(draws) > 1)


def test_top_p_stops_as_soon_as_the_mass_is_reached():
    uniform = torch.zeros(1, 4, dtype=torch.float64)  # probabilities exactly 0.25 each
    assert int(filter_logits(uniform, top_p=0.5).isfinite().sum()) == 2
    assert int(filter_logits(uniform, top_p=0.51).isfinite().sum()) == 3


def test_seeded_sampling_is_reproducible_and_temperature_zero_is_greedy():
    model, vocab = make_lm()
    start, state = lm_start(model, vocab, ["the", "sat"])
    advance = lm_advance(model)

    def draw(seed, **kw):
        gen = torch.Generator().manual_seed(seed)
        return [h.ids for h in sample(advance, state, start, 30, generator=gen, **kw)]

    assert draw(0, temperature=1.5) == draw(0, temperature=1.5)
    assert draw(0, temperature=1.5) != draw(1, temperature=1.5)
    assert draw(0, temperature=0.0) == [h.ids for h in greedy(advance, state, start, 30)]
    cfg = DecodeConfig(strategy="sample", temperature=1.5, top_p=0.9, seed=7)
    assert lm_generate(model, vocab, ["the"], 25, cfg) == lm_generate(
        model, vocab, ["the"], 25, cfg
    )


def test_batched_generation_keeps_a_state_per_row():
    model, vocab = make_lm("lstm")
    prefixes = ["the cat", "o", "mat and", "hat"]
    for cfg in (DecodeConfig(), DecodeConfig(strategy="beam", beam=3)):
        together = lm_generate(model, vocab, prefixes, 12, cfg)
        alone = [lm_generate(model, vocab, [p], 12, cfg)[0] for p in prefixes]
        assert [h.ids for h in together] == [h.ids for h in alone]
        for t, a in zip(together, alone, strict=True):
            assert t.log_prob == pytest.approx(a.log_prob, abs=1e-6)


def test_lm_start_warms_up_on_all_but_the_last_character():
    model, vocab = make_lm()
    start, state = lm_start(model, vocab, ["the c"])
    logits, _ = lm_advance(model)(start, state)
    full, _ = model(vocab.encode("the c").long()[None], model.begin_state(1))  # (1, 5, V)
    torch.testing.assert_close(logits, full[:, -1])


def test_score_text_agrees_with_held_out_bits_per_char():
    model, vocab = make_lm("lstm")
    scored = score_text(model, vocab, TEXT)
    assert [c for c, _ in scored] == list(TEXT[1:])
    assert all(bits > 0 for _, bits in scored)
    mean_bits = sum(b for _, b in scored) / len(scored)
    assert mean_bits == pytest.approx(evaluate(model, vocab.encode(TEXT)).bpc, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -1.0}, r"--temperature must be a finite number >= 0"),
        ({"temperature": math.nan}, r"--temperature must be a finite number >= 0"),
        ({"top_k": -1}, r"--top-k must be 0 \(no limit\) or more"),
        ({"top_p": 0.0}, r"--top-p must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"--top-p must be in \(0, 1\]"),
        ({"beam": 0}, r"--beam must be between 1 and"),
        ({"length_norm": -0.5}, r"--length-norm must be in \[0, 2\]"),
        ({"strategy": "nucleus"}, r"unknown strategy 'nucleus': use one of greedy, sample, beam"),
    ],
)
def test_bad_decoding_arguments_name_the_accepted_range(kwargs, message):
    with pytest.raises(UsageError, match=message):
        DecodeConfig(**kwargs)


def test_functions_validate_their_arguments_too():
    advance = table_advance({0: {1: 1.0}}, V=2)
    start, state = torch.tensor([0]), torch.zeros(1, 1, 1)
    with pytest.raises(UsageError, match="--beam"):
        beam_search(advance, state, start, beam=0, max_len=3)
    with pytest.raises(UsageError, match="--top-p"):
        sample(advance, state, start, 3, top_p=2.0)
    with pytest.raises(UsageError, match="--temperature"):
        sample(advance, state, start, 3, temperature=math.inf)


def test_unknown_characters_and_short_texts_are_usage_errors():
    model, vocab = make_lm()
    with pytest.raises(UsageError, match=r"not in the model's vocabulary: 'Z'"):
        score_text(model, vocab, "the Zoo")
    with pytest.raises(UsageError, match="at least two characters"):
        score_text(model, vocab, "t")
    with pytest.raises(UsageError, match="prefix 2 is empty"):
        lm_generate(model, vocab, ["the", ""], 5)


# -- the options: declared once, checked once, resolved once --------------------------------------


def test_decoding_knows_nothing_of_the_language_model():
    """The strategies take an advance function: rnnlab.model and rnnlab.vocab stay out."""
    source = Path(rnnlab.decoding.__file__).read_text(encoding="utf-8")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert imported & {"rnnlab.model", "rnnlab.vocab", "rnnlab.generate"} == set()
    assert {"rnnlab.options", "torch"} <= imported


@pytest.mark.parametrize(
    "kwargs, strategy",
    [
        ({}, "greedy"),
        ({"temperature": 0.5}, "sample"),
        ({"temperature": 1.0}, "sample"),
        ({"top_k": 3}, "sample"),
        ({"top_p": 0.9}, "sample"),
        ({"temperature": 0.0}, "greedy"),
        ({"strategy": "sample", "temperature": 0.0}, "greedy"),
        ({"strategy": "sample"}, "sample"),
        ({"strategy": "greedy", "temperature": 0.5}, "greedy"),
        ({"strategy": "beam", "top_k": 3}, "beam"),
    ],
)
def test_the_strategy_is_resolved_when_the_config_is_built(kwargs, strategy):
    for cls in (DecodeConfig, GenerateConfig):
        config = cls(**kwargs)
        assert config.strategy == strategy
        assert isinstance(config.temperature, float)


def test_decode_checks_nothing_the_config_checked(monkeypatch):
    """Each option is checked once, when its config is built; decoding does not check again."""
    model, vocab = make_lm()
    checked: list[str] = []
    real = rnnlab.decoding.check_option

    def spy(cls, name, value):
        checked.append(name)
        real(cls, name, value)

    monkeypatch.setattr(rnnlab.options, "check_option", spy)  # what check_fields calls
    monkeypatch.setattr(rnnlab.decoding, "check_option", spy)  # what the strategy functions call
    configs = [
        GenerateConfig(num_preds=20, strategy="beam", beam=3, length_norm=1.0),
        GenerateConfig(num_preds=20, temperature=0.8, top_k=4, top_p=0.9, seed=3),
        GenerateConfig(num_preds=20),
    ]
    fields = [f.name for f in dataclasses.fields(GenerateConfig)]
    assert checked == fields * len(configs)
    checked.clear()
    for config in configs:
        predict(model, vocab, ["the c", "sat"], config)
    assert checked == []


def test_options_take_their_aliases_and_refuse_mistakes():
    assert GenerateConfig(steps=7).num_preds == 7
    assert from_options(GenerateConfig, {"steps": 7}) == GenerateConfig(num_preds=7)
    assert from_options(GenerateConfig, {}, defaults={"num_preds": 100}).num_preds == 100
    assert from_options(GenerateConfig, {"steps": 3}, defaults={"num_preds": 100}).num_preds == 3
    with pytest.raises(UsageError, match="'steps' and 'num_preds' name the same option: give one"):
        GenerateConfig(steps=7, num_preds=7)
    with pytest.raises(UsageError, match="unknown option 'temp': GenerateConfig takes beam,"):
        from_options(GenerateConfig, {"temp": 1.0})
    with pytest.raises(UsageError, match=r"--num-preds/--steps must be an integer, got '10'"):
        GenerateConfig(num_preds="10")
    with pytest.raises(UsageError, match="--top-p must be a number, got True"):
        DecodeConfig(top_p=True)
    with pytest.raises(UsageError, match=r"--seed must be between -2\*\*63 and 2\*\*64 - 1"):
        DecodeConfig(seed=2**64)
    assert DecodeConfig(top_p=1).top_p == 1  # an int is a number
