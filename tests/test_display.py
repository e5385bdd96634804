"""`rnnlab.display`: the playground's pictures as notebook HTML, from the API's own numbers."""

from __future__ import annotations

import base64
import html
import math
import re

import pytest

import rnnlab
from rnnlab import display
from rnnlab.errors import UsageError
from tinyrun import TEXT, train_tiny

SPAN = re.compile(r'<span style="background:(rgb\([^)]*\)|#[0-9a-f]+);[^"]*" title="([^"]*)">')


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> rnnlab.LanguageModel:
    return train_tiny(tmp_path_factory.mktemp("display")).model


def spans(picture: display.Picture) -> list[tuple[str, str]]:
    return [(colour, html.unescape(title)) for colour, title in SPAN.findall(picture.html)]


def test_colours_are_the_playgrounds():
    # serve/static/app.js: heat(t) = rgb(255, 255 - 190 t, 255 - 200 t); diverging(v) likewise.
    assert display.heat(0) == "rgb(255, 255, 255)" and display.heat(1) == "rgb(255, 65, 55)"
    assert display.heat(2) == display.heat(1) and display.heat(-1) == display.heat(0)
    assert display.heat(0.5) == "rgb(255, 160, 155)"
    assert (
        display.diverging(1) == "rgb(255, 55, 55)" and display.diverging(-1) == "rgb(55, 55, 255)"
    )
    assert display.diverging(0) == "rgb(255, 255, 255)"


def test_a_model_shows_as_a_table_in_jupyter(lm):
    page = lm._repr_html_()
    best = min(lm.training_log(), key=lambda r: r["valid_loss"])
    assert "<table>" in page and lm.name in page
    assert "gru 2 x 24" in page and f"{len(lm.vocab):,} symbols" in page
    assert f"perplexity {best['valid_ppl']:.3f}" in page and f"at epoch {best['epoch']}" in page
    assert repr(lm).startswith("LanguageModel(")  # the text form is unchanged


def test_surprisal_is_the_score_coloured_as_in_the_playground(lm):
    text = 'he said "the dog sat on the'  # (the tiny run's characters)
    picture = display.show_surprisal(lm, text)
    shown = spans(picture)
    scores = lm.score(text)
    expected = lm.alternatives(text, k=3)
    blind = math.log2(len(lm.vocab))
    assert len(shown) == len(text) and shown[0][1] == "context only"
    for (colour, title), (c, bits), guesses in zip(shown[1:], scores, expected, strict=True):
        assert colour == display.heat(bits / blind)
        assert title.startswith(f"{c!r} {bits:.3f} bits; expected {guesses[0][0]!r}")
    mean = sum(b for _, b in scores) / len(scores)
    assert f"mean {mean:.3f} bits/char over {len(scores)} characters" in picture.html
    assert ">&quot;</span>" in picture.html  # the text is escaped
    assert repr(picture).startswith("surprisal: mean")


def test_units_show_the_best_unit_for_a_pattern(lm):
    text = TEXT[:130]
    picture = display.show_units(lm, text, pattern="word_position")
    best = lm.units(text, "word_position", top=5)
    states = lm.states(text)
    values = states[:, best[0].layer, best[0].unit].tolist()
    scale = max(1.0, *(abs(v) for v in values))
    shown = spans(picture)
    assert [c for c, _ in shown] == [display.diverging(v / scale) for v in values]
    assert [float(t) for _, t in shown] == pytest.approx(values, abs=5e-4)
    assert f"layer {best[0].layer}, unit {best[0].unit} (word_position: r = {best[0].r:+.3f})" in (
        picture.html
    )
    assert picture.html.count("<tr><td>") == 5  # the ranking table


def test_units_of_a_named_unit_and_a_signal_of_your_own(lm):
    text = TEXT[:60]
    picture = display.show_units(lm, text, layer=1, unit=3)
    values = lm.states(text)[:, 1, 3].tolist()
    assert [float(t) for _, t in spans(picture)] == pytest.approx(values, abs=5e-4)
    signal = [1.0 if c == " " else 0.0 for c in text]
    marked = display.show_units(lm, text, pattern=signal)
    assert marked.html.count("<u ") == text.count(" ")  # a yes/no signal is underlined
    assert "your signal: r = " in marked.html


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer": 0}, r"^give both layer and unit, or neither \(with a pattern\)$"),
        ({}, r"^give layer and unit, or a pattern to find the unit that tracks it$"),
        ({"layer": 2, "unit": 0}, r"^layer 2 unit 0 does not exist: layers 0-1, units 0-23$"),
    ],
)
def test_units_mistakes_are_one_line(lm, kwargs, message):
    with pytest.raises(UsageError, match=message):
        display.show_units(lm, "the cat", **kwargs)


def test_next_character_bars_are_the_models_distribution(lm):
    picture = display.show_next(lm, "the cat s", k=4)
    for c, p in lm.next("the cat s", k=4):
        assert f"{p:.4f}" in picture.html and f"{display.visible(c)!r}" in repr(picture)


def test_training_curves_are_a_repeatable_png(lm):
    picture = display.show_training(lm)
    data = re.search(r'src="data:image/png;base64,([^"]+)"', picture.html).group(1)
    png = base64.b64decode(data)
    assert png.startswith(b"\x89PNG") and b"matplotlib" not in png  # no version stamp
    again = re.search(r"base64,([^\"]+)", display.show_training(lm.training_log()).html).group(1)
    assert again == data  # same rows, same bytes: a committed notebook output stays put
    assert repr(picture).startswith(f"{len(lm.training_log())} epochs; last: train ppl")
    fig = display.training_figure(lm, "bpc")
    assert [line.get_linestyle() for line in fig.axes[0].lines] == ["-", "--"]


def test_training_mistakes_are_one_line(lm):
    with pytest.raises(UsageError, match=r"^unknown metric 'acc': use one of loss, ppl, bpc$"):
        display.show_training(lm, metric="acc")
    with pytest.raises(UsageError, match=r"^this run has no training log \(metrics.csv\)"):
        display.show_training([])
    with pytest.raises(UsageError, match=r"^the text has 5,001 characters: show at most 5,000"):
        display.show_surprisal(lm, "a" * 5001)
