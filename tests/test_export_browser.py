"""The web export in a real browser: the playground's page, its model running in the page.

The exported folder is served by a plain static file server (Python's http.server, below a
sub-path, as a course page would host it), opened in Debian's chromium through Playwright, and
must give `rnnlab predict --json`'s numbers: the next-character probabilities within 1e-4, the
greedy continuation character for character, and the surprisal, hidden units and beam search
of the API, for every cell, with no request leaving the page's own origin.

Chromium is required in CI (the test fails there without it); elsewhere it is skipped if absent.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import rnnlab
from chromium import launched, require_chromium
from rnnlab.cli import main
from tinyrun import write_corpus

TOL = 1e-4  # the page computes in float64 what PyTorch computes in float32

require_chromium()

from playwright.sync_api import Page, expect  # noqa: E402


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sites")


@pytest.fixture(scope="module")
def static_server(root) -> Iterator[str]:
    """A plain static file server over `root`, in a thread; yields its origin."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    with launched() as b:
        yield b


@pytest.fixture
def page(browser, static_server) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    errors: list[str] = []
    requests: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("request", lambda r: requests.append(r.url))
    pg.console_errors = errors  # type: ignore[attr-defined]
    pg.requests = requests  # type: ignore[attr-defined]
    yield pg
    context.close()
    # Nothing the page asked for, whatever the test did, came from anywhere but its origin.
    assert requests and all(url.startswith(static_server + "/") for url in requests), requests


def export_web(run: Path, out: Path) -> None:
    assert main(["export", str(run), "--format", "web", "--out", str(out)]) == 0


def cli_predict(capsys, run: Path, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["predict", str(run), *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def shown_distribution(page: Page, prefix: str) -> list[tuple[str, float]]:
    dist = page.locator(f'[data-testid="next-dist"][data-prefix="{prefix}"]').first
    expect(dist).to_be_visible()
    return [
        (item.get_attribute("data-char"), float(item.get_attribute("data-prob")))
        for item in dist.locator('[data-testid="next-char"]').all()
    ]


def assert_same_distribution(shown: list[tuple[str, float]], want: list[tuple[str, float]]):
    """Equal within TOL; near-ties (closer than TOL) at the cut may swap which character shows."""
    assert len(shown) == len(want)
    for (_, p), (_, q) in zip(shown, want, strict=True):
        assert abs(p - q) <= TOL, (shown, want)
    mine, theirs = dict(shown), dict(want)
    for c in mine.keys() & theirs.keys():
        assert abs(mine[c] - theirs[c]) <= TOL, c
    cut = want[-1][1]
    for c in mine.keys() ^ theirs.keys():
        assert abs(mine.get(c, theirs.get(c)) - cut) <= TOL, c


def open_site(page: Page, url: str, run: str) -> None:
    """Open an exported page and wait until its model is loaded and its controls are live."""
    page.goto(url)
    expect(page.get_by_test_id("run")).to_have_value(run)  # set with the listeners, once loaded


def type_prefix(page: Page, prefix: str) -> None:
    page.get_by_test_id("prefix").fill(prefix)
    page.get_by_test_id("prefix").dispatch_event("input")


def generate(page: Page, steps: int, strategy: str = "greedy", seed: int | None = None) -> str:
    page.get_by_test_id("strategy").select_option(strategy)
    for name, value in (("steps", steps), ("seed", seed)):
        if value is not None:
            page.get_by_test_id(name).fill(str(value))
            page.get_by_test_id(name).dispatch_event("change")
    page.evaluate("document.getElementById('gen-columns').replaceChildren()")
    page.get_by_test_id("generate").click()
    shown = page.locator('[data-testid="continuation"]').first
    expect(shown).to_be_visible()
    return shown.get_attribute("data-continuation")


# -- the built-in alphabet model: what `rnnlab predict` says, the page says -----------------------


@pytest.fixture(scope="module")
def alphabet(root) -> rnnlab.LanguageModel:
    return rnnlab.train(corpus="alphabet", out=root / "runs" / "alphabet", hidden=32, layers=2,
                        batch_size=16, num_steps=16, epochs=2, lr=0.01).model  # fmt: skip


def test_the_exported_page_answers_as_rnnlab_predict(page, static_server, root, alphabet, capsys):
    run = alphabet.run.run_dir
    export_web(run, root / "alphabet-site")
    open_site(page, f"{static_server}/alphabet-site/", "alphabet")  # below a path
    for prefix in ("abc", "xyzab", "q"):
        type_prefix(page, prefix)
        want = cli_predict(capsys, run, "--prefix", prefix, "--show", "10")
        assert_same_distribution(
            shown_distribution(page, prefix), [(n["char"], n["prob"]) for n in want["next"]]
        )
    want = cli_predict(capsys, run, "--prefix", "q", "--steps", "200")["continuation"]
    assert generate(page, 200) == want and len(want) == 200
    # Training curves and the configuration come with the export.
    expect(page.locator("#legend li")).to_have_count(2)
    expect(page.get_by_test_id("config")).to_contain_text("model.hidden")
    assert page.console_errors == []  # type: ignore[attr-defined]


# -- every cell, every panel ----------------------------------------------------------------------

TEXT = 'he said "the dog sat on the log." (the cat sat.)'


@pytest.mark.parametrize(
    "options",
    [
        {"cell": "gru", "hidden": 24},
        {"cell": "lstm", "hidden": 16},
        {"cell": "rnn", "hidden": 16, "embed": 8},
    ],
    ids=["gru", "lstm", "rnn-embedding"],
)
def test_every_cell_and_panel_in_the_page(page, static_server, root, options):
    name = f"quotes-{options['cell']}"
    corpus = write_corpus(root)
    lm = rnnlab.train(corpus=str(corpus), out=root / "runs" / name, layers=2, batch_size=4,
                      num_steps=16, epochs=2, **options).model  # fmt: skip
    export_web(lm.run.run_dir, root / name)
    open_site(page, f"{static_server}/{name}/", name)
    type_prefix(page, "she sa")
    assert_same_distribution(shown_distribution(page, "she sa"), lm.next("she sa", k=10))
    assert generate(page, 60) == lm.generate("she sa", steps=60)
    assert generate(page, 60, "beam") == lm.generate("she sa", steps=60, strategy="beam")
    # Seeded sampling: the same seed draws the same text in the page, another seed another.
    first = generate(page, 60, "sample", seed=7)
    assert generate(page, 60, "sample", seed=7) == first
    assert generate(page, 60, "sample", seed=8) != first

    # The surprisal heat map: the API's bits per character, and its guesses in the tip.
    page.get_by_test_id("text").fill(TEXT)
    page.get_by_test_id("score").click()
    cells = page.locator('[data-testid="heat-char"]')
    expect(cells).to_have_count(len(TEXT) - 1)
    bits = [float(c.get_attribute("data-bits")) for c in cells.all()]
    assert max(abs(a - b) for a, (_, b) in zip(bits, lm.score(TEXT), strict=True)) < TOL
    cells.nth(5).hover()
    best = lm.alternatives(TEXT, 5)[5][0]
    expect(page.get_by_test_id("tip")).to_contain_text(f"{best[1]:.3f}")

    # Hidden units: the ranking for a pattern, and one unit's activations.
    page.get_by_test_id("pattern").select_option("quotes")
    units = page.locator('[data-testid="unit"]')
    expect(units).to_have_count(12)
    ranked = [
        (int(u.get_attribute("data-layer")), int(u.get_attribute("data-unit")),
         float(u.get_attribute("data-r")))
        for u in units.all()
    ]  # fmt: skip
    want = lm.units(TEXT, "quotes", top=12)
    assert max(abs(r - u.r) for (_, _, r), u in zip(ranked, want, strict=True)) < TOL
    assert [(layer, unit) for layer, unit, _ in ranked[:3]] == [(u.layer, u.unit) for u in want[:3]]
    layer, unit, _ = ranked[2]
    units.nth(2).click()
    expect(page.get_by_test_id("acts")).to_have_attribute("data-unit", str(unit))
    values = page.locator('[data-testid="act-char"]')
    expect(values).to_have_count(len(TEXT))
    shown = [float(v.get_attribute("data-value")) for v in values.all()]
    expected = lm.states(TEXT)[:, layer, unit].tolist()
    assert max(abs(a - b) for a, b in zip(shown, expected, strict=True)) < TOL

    # A character the model never saw: the server's one-line refusal, shown in the page.
    type_prefix(page, "she Q")
    expect(page.get_by_test_id("next-status")).to_have_text(
        "error: prefix 'she Q' has characters not in the model's vocabulary: 'Q'; "
        "use only characters from the training text"
    )
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_chinese_text_counts_characters_as_python_does(page, static_server, root):
    # U+20000 is two UTF-16 units in the page and one character for Python and the model.
    verse = "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。\U00020000山\n" * 30
    corpus = root / "verse.txt"
    corpus.write_text(verse, encoding="utf-8")
    lm = rnnlab.train(corpus=str(corpus), out=root / "runs" / "verse", hidden=16, layers=1,
                      batch_size=4, num_steps=16, epochs=2).model  # fmt: skip
    export_web(lm.run.run_dir, root / "verse-site")
    open_site(page, f"{static_server}/verse-site/", "verse")
    prefix = "鸟。\U00020000"
    type_prefix(page, prefix)
    assert_same_distribution(shown_distribution(page, prefix), lm.next(prefix, k=10))
    text = verse[:40]
    page.get_by_test_id("text").fill(text)
    page.get_by_test_id("score").click()
    cells = page.locator('[data-testid="heat-char"]')
    expect(cells).to_have_count(len(text) - 1)
    shown = [(c.text_content(), float(c.get_attribute("data-bits"))) for c in cells.all()]
    want = lm.score(text)
    assert [c for c, _ in shown] == [c if c != "\n" else "\u23ce" for c, _ in want]
    assert max(abs(a - b) for (_, a), (_, b) in zip(shown, want, strict=True)) < TOL
    assert page.console_errors == []  # type: ignore[attr-defined]
