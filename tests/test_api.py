"""The Python API (`rnnlab.load`, `rnnlab.train`, `LanguageModel`) against the CLI's own output.

One code path: `rnnlab predict/score/evaluate` print what these methods return, and
`rnnlab.train` trains what `rnnlab train` trains, so every figure here must be equal, not close.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rnnlab
from rnnlab.api import pattern_signal, rank_units
from rnnlab.cli import main
from rnnlab.corpus import DataConfig
from rnnlab.model import RNNLM, ModelConfig
from rnnlab.training import LoadedRun, TrainConfig
from rnnlab.training.runtime import RuntimeConfig
from rnnlab.vocab import Vocab
from tinyrun import CLI_FLAGS, FLAGS, TEXT, train_tiny, write_corpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> rnnlab.TrainedRun:
    return train_tiny(tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def lm(trained) -> rnnlab.LanguageModel:
    return trained.model


def cli_json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def cli_error(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


# -- the exports ----------------------------------------------------------------------------------


def test_the_package_root_exports_the_api():
    for name in rnnlab.__all__:
        assert getattr(rnnlab, name) is not None
    assert rnnlab.load is rnnlab.api.load and callable(rnnlab.train)
    assert "LanguageModel" in dir(rnnlab)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        rnnlab.nothing  # noqa: B018


# -- training: the same run through both doors ----------------------------------------------------


def test_train_equals_the_cli_run(tmp_path, trained, capsys):
    corpus = write_corpus(tmp_path)
    summary = cli_json(
        capsys, "train", "--corpus", str(corpus), "--out", str(tmp_path / "cli"), "--json",
        *CLI_FLAGS,
    )  # fmt: skip
    ours = dict(trained.summary)
    for key in ("seconds", "chars_per_sec", "run_dir"):
        summary.pop(key), ours.pop(key)
    assert ours == summary
    assert trained.run_dir.name == "tiny" and Path(trained.summary["run_dir"]) == trained.run_dir
    cli_weights = load_file(rnnlab.load(tmp_path / "cli").run.checkpoint / "model.safetensors")
    api_weights = load_file(trained.model.run.checkpoint / "model.safetensors")
    assert cli_weights.keys() == api_weights.keys()
    for name, w in cli_weights.items():
        assert torch.equal(w, api_weights[name]), name
    assert len(trained.history) == FLAGS["epochs"]
    assert trained.history[-1].valid.loss == pytest.approx(trained.summary["valid_loss"])


def test_train_routes_every_option_and_refuses_unknown_ones(tmp_path):
    with pytest.raises(rnnlab.UsageError, match="unknown training option 'hiden'"):
        rnnlab.train(corpus="alphabet", hiden=16)
    with pytest.raises(rnnlab.UsageError, match="--batch-size must be at least 1"):
        rnnlab.train(corpus="alphabet", batch_size=0, out=tmp_path / "x")
    with pytest.raises(rnnlab.UsageError, match="unknown preset 'd3l'"):
        rnnlab.train(preset="d3l")
    with pytest.raises(rnnlab.UsageError, match="resume=True needs out="):
        rnnlab.train(resume=True)
    with pytest.raises(rnnlab.UsageError, match="--device cuda:7 is not available"):
        rnnlab.train(corpus="alphabet", device="cuda:7", out=tmp_path / "y")
    assert not (tmp_path / "y").exists()  # refused before anything is written
    # No field name is shared by two configs, so routing by name is unambiguous.
    configs = (DataConfig, ModelConfig, TrainConfig, RuntimeConfig)
    names = [f for cls in configs for f in cls.__dataclass_fields__]
    assert len(names) == len(set(names))


def test_train_resumes_like_the_cli(tmp_path, trained):
    out = tmp_path / "again"
    corpus = write_corpus(tmp_path)
    first = rnnlab.train(corpus=str(corpus), out=out, **{**FLAGS, "epochs": 2})
    assert first.summary["epochs"] == 2
    with pytest.raises(rnnlab.UsageError, match="is not empty"):
        rnnlab.train(corpus=str(corpus), out=out, **FLAGS)
    resumed = rnnlab.train(corpus=str(corpus), out=out, resume=True, **FLAGS)
    assert resumed.summary["epochs"] == 3
    assert resumed.summary["valid_loss"] == trained.summary["valid_loss"]  # exact resume


# -- prediction -----------------------------------------------------------------------------------


def test_next_equals_cli_predict(lm, trained, capsys):
    out = cli_json(capsys, "predict", str(trained.run_dir), "--prefix", "the c", "--show", "7",
                   "--json")  # fmt: skip
    assert [(d["char"], d["prob"]) for d in out["next"]] == lm.next("the c", k=7)
    probs = [p for _, p in lm.next("the c", k=7)]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9


@pytest.mark.parametrize(
    "flags, options",
    [
        ([], {}),
        (["--strategy", "sample", "--seed", "7"], {"strategy": "sample", "seed": 7}),
        (["--temperature", "0.7", "--top-k", "5", "--seed", "3"],
         {"temperature": 0.7, "top_k": 5, "seed": 3}),
        (["--top-p", "0.8", "--seed", "1"], {"top_p": 0.8, "seed": 1}),
        (["--strategy", "beam", "--beam", "4"], {"strategy": "beam", "beam": 4}),
    ],
)  # fmt: skip
def test_generate_equals_cli_predict(lm, trained, capsys, flags, options):
    out = cli_json(capsys, "predict", str(trained.run_dir), "--prefix", "she said", "--steps",
                   "40", "--json", *flags)  # fmt: skip
    assert lm.generate("she said", steps=40, **options) == out["continuation"]
    [pred] = lm.predict("she said", steps=40, **options)
    assert pred.log_prob == out["log_prob"] and rnnlab.api.prediction_dict(pred) == out


def test_sampling_is_repeatable_with_a_seed(lm):
    a = lm.generate("the ", steps=60, strategy="sample", seed=11)
    assert a == lm.generate("the ", steps=60, strategy="sample", seed=11)
    assert a != lm.generate("the ", steps=60, strategy="sample", seed=12)


def test_several_prefixes_equal_the_cli_batch(lm, trained, capsys):
    prefixes = ["the", "he said", "("]
    argv = ["predict", str(trained.run_dir), "--steps", "12", "--json"]
    out = cli_json(capsys, *argv, *[a for p in prefixes for a in ("--prefix", p)])
    preds = lm.predict(prefixes, rnnlab.GenerateConfig(steps=12))
    assert [rnnlab.api.prediction_dict(p) for p in preds] == out["predictions"]


def test_prediction_turns_dropout_off_and_leaves_the_mode_as_it_was():
    vocab = Vocab.build(TEXT)
    torch.manual_seed(0)
    config = ModelConfig(cell="gru", hidden=12, layers=2, dropout=0.5, impl="torch")
    model = RNNLM(len(vocab), config)
    lm = rnnlab.LanguageModel(
        LoadedRun(Path("runs/random"), model, vocab, DataConfig(), config, TrainConfig())
    )
    model.eval()
    expected = lm.predict(["the c", "("], num_preds=20)
    model.train()
    assert lm.predict(["the c", "("], num_preds=20) == expected  # no dropout while predicting
    assert model.training  # ... and the model is still training
    assert lm.score("the cat") == lm.score("the cat") and model.training


def test_generate_takes_num_preds_or_steps_not_both(lm):
    assert (
        lm.generate("the", 12) == lm.generate("the", steps=12) == lm.generate("the", num_preds=12)
    )
    assert len(lm.generate("the")) == 100
    with pytest.raises(rnnlab.UsageError, match="'num_preds' and 'steps' name the same option"):
        lm.generate("the", 12, steps=12)
    with pytest.raises(rnnlab.UsageError, match="'num_preds' and 'steps' name the same option"):
        lm.predict("the", num_preds=3, steps=3)


# -- reading a text -------------------------------------------------------------------------------


def test_score_equals_cli_score(lm, trained, capsys):
    text = 'he said "the dog sat."'
    out = cli_json(capsys, "score", str(trained.run_dir), text, "--json")
    assert [(d["char"], d["bits"]) for d in out["chars"]] == lm.score(text)
    assert rnnlab.api.scores_dict(text, lm.score(text)) == out


def test_alternatives_agree_with_score(lm):
    text = "the cat sat on the mat."
    scores = lm.score(text)
    alternatives = lm.alternatives(text, k=len(lm.vocab))  # the whole distribution
    assert len(alternatives) == len(scores) == len(text) - 1
    for (char, bits), top in zip(scores, alternatives, strict=True):
        prob = dict(top)[char]
        assert -math.log2(prob) == pytest.approx(bits, abs=1e-6)
        assert sum(p for _, p in top) == pytest.approx(1.0, abs=1e-9)
    three = lm.alternatives(text, k=3)
    assert all(len(t) == 3 and t == a[:3] for t, a in zip(three, alternatives, strict=True))


def test_evaluate_equals_cli_evaluate(lm, trained, tmp_path, capsys):
    out = cli_json(capsys, "evaluate", str(trained.run_dir), "--json")
    m = lm.evaluate()
    assert m.to_dict() == out
    text = TEXT[:300]
    f = tmp_path / "held.txt"
    f.write_text(text, encoding="utf-8")
    out = cli_json(capsys, "evaluate", str(trained.run_dir), "--corpus", str(f), "--json")
    assert lm.evaluate(corpus=f).to_dict() == out
    on_text = lm.evaluate(text)
    assert on_text.to_dict() == out  # a string and a file of it: the same figures
    assert on_text.bpc == pytest.approx(sum(b for _, b in lm.score(text)) / 299, abs=1e-5)


# -- hidden states --------------------------------------------------------------------------------


def _random_lm(cell: str, impl: str, bidirectional: bool = False) -> rnnlab.LanguageModel:
    vocab = Vocab.build(TEXT)
    config = ModelConfig(cell=cell, impl=impl, hidden=12, layers=3, bidirectional=bidirectional)
    torch.manual_seed(0)
    model = RNNLM(len(vocab), config).eval()
    run = LoadedRun(Path("runs/random"), model, vocab, DataConfig(), config, TrainConfig())
    return rnnlab.LanguageModel(run)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("impl", ["torch", "scratch", "fast"])
def test_states_are_the_cores_own_states(cell, impl):
    lm = _random_lm(cell, impl)
    text = 'she said "the cat"'
    states = lm.states(text)
    T, L, H = len(text), 3, 12
    assert states.shape == (T, L, H) and states.dtype == torch.float32
    X = lm.vocab.encode(text).long().unsqueeze(0)  # (1, T)
    with torch.no_grad():
        outputs, final = lm.model.rnn(lm.model.inputs(X))  # (1, T, H), the top layer's
        logits, _ = lm.model(X)  # (1, T, V)
    # The last layer is what the output layer reads, step by step...
    assert torch.allclose(states[:, -1], outputs[0], atol=1e-6)
    assert torch.allclose(lm.model.output(states[:, -1]), logits[0], atol=1e-6)
    # ...and each layer's last state is the core's final state of that layer.
    h_final = final[0] if cell == "lstm" else final  # (L, 1, H)
    assert torch.allclose(states[-1], h_final[:, 0], atol=1e-6)


def test_states_of_a_bidirectional_model_hold_both_directions():
    lm = _random_lm("gru", "torch", bidirectional=True)
    text = "the cat sat"
    states = lm.states(text)
    assert states.shape == (len(text), 3, 24)
    X = lm.vocab.encode(text).long().unsqueeze(0)
    with torch.no_grad():
        outputs, _ = lm.model.rnn(lm.model.inputs(X))  # (1, T, 2H)
    assert torch.allclose(states[:, -1], outputs[0], atol=1e-6)


def test_states_of_the_trained_run_feed_its_predictions(lm):
    text = "the dog sat on the log."
    states = lm.states(text)  # (T, L, H)
    assert states.shape == (len(text), 2, 24)
    with torch.no_grad():
        probs = torch.softmax(lm.model.output(states[-1, -1]).double(), dim=-1)
    top = probs.topk(3)
    expected = [(lm.vocab.idx_to_token[i], p) for p, i in zip(*top, strict=True)]
    for (c, p), (c2, p2) in zip(lm.next(text, k=3), expected, strict=True):
        assert c == c2 and p == pytest.approx(float(p2), abs=1e-6)


# -- unit patterns --------------------------------------------------------------------------------


def test_pattern_signals():
    text = 'a "bc" (d[e]) f\nxy'

    def digits(values: list[float]) -> str:
        return "".join(str(int(v)) for v in values)

    assert digits(pattern_signal(text, "quotes")) == "001110000000000000"
    assert digits(pattern_signal(text, "brackets")) == "000000011221000000"
    assert pattern_signal("ab cd", "word_position") == [1, 2, 0, 1, 2]
    assert pattern_signal("ab\ncd", "line_position") == [1, 2, 0, 1, 2]
    assert pattern_signal("a b", "after_space") == [0, 1, 0]
    assert pattern_signal("abcab", "regex", regex="ab") == [1, 1, 0, 1, 1]
    assert pattern_signal("\u201c\u5929\u201d\u5730", "quotes") == [1, 1, 0, 0]
    assert pattern_signal("\u300c\u6625\u300d", "quotes") == [1, 1, 0]


@pytest.mark.parametrize(
    "pattern, regex, message",
    [
        ("loops", None, "unknown pattern 'loops': use one of quotes,"),
        ("regex", None, "needs a regular expression"),
        ("regex", "(", "bad regular expression '('"),
        ("regex", "a" * 201, "at most 200"),
    ],
)
def test_pattern_errors(pattern, regex, message):
    with pytest.raises(rnnlab.UsageError, match=message.replace("(", r"\(")):
        pattern_signal("abc", pattern, regex)


def test_rank_units_finds_a_planted_unit():
    torch.manual_seed(0)
    signal = [float(i % 3 == 0) for i in range(60)]
    states = torch.randn(60, 2, 8) * 0.1  # (T, L, H)
    states[:, 1, 5] = -torch.tensor(signal) + 0.01 * torch.randn(60)  # tracks it, inverted
    states[:, 0, 2] = 0.7  # a constant unit: r = 0, not nan
    ranked = rank_units(states, signal, top=3)
    assert (ranked[0].layer, ranked[0].unit) == (1, 5) and ranked[0].r < -0.99
    assert abs(ranked[1].r) < 0.6 and len(ranked) == 3
    everything = rank_units(states, signal, top=100)
    assert len(everything) == 16
    assert next(u.r for u in everything if (u.layer, u.unit) == (0, 2)) == 0.0
    with pytest.raises(rnnlab.UsageError, match="same at every character"):
        rank_units(states, [1.0] * 60)
    with pytest.raises(rnnlab.UsageError, match="59 values for 60 characters"):
        rank_units(states, signal[:-1])
    with pytest.raises(rnnlab.UsageError, match="not a finite number"):
        rank_units(states, [math.nan] + signal[1:])


def test_units_on_the_trained_run(lm):
    text = TEXT[:200]
    units = lm.units(text, "quotes", top=5)
    assert len(units) == 5 and all(0 <= u.layer < 2 and 0 <= u.unit < 24 for u in units)
    assert [abs(u.r) for u in units] == sorted((abs(u.r) for u in units), reverse=True)
    signal = pattern_signal(text, "quotes")
    assert lm.units(text, signal, top=5) == units  # numbers or a name: the same ranking


# -- the run's record -----------------------------------------------------------------------------


def test_training_log_and_describe(lm, trained):
    log = lm.training_log()
    assert [row["epoch"] for row in log] == [1, 2, 3]
    assert log[-1]["valid_loss"] == pytest.approx(trained.summary["valid_loss"], abs=1e-5)
    info = lm.describe()
    assert info["name"] == "tiny" and info["corpus"] == "quotes"
    assert info["model"]["hidden"] == 24 and info["vocab_size"] == len(lm.vocab)
    assert str(trained.run_dir.parent) not in json.dumps(info)  # no local path in it
    assert "gru 2x24" in repr(lm)


# -- errors: the CLI's exceptions, the CLI's messages ---------------------------------------------


@pytest.mark.parametrize(
    "call, argv",
    [
        (lambda lm: lm.next("thé€"), ["predict", "--prefix", "thé€"]),
        (lambda lm: lm.next(""), ["predict", "--prefix", ""]),
        (lambda lm: lm.next("the", k=0), ["predict", "--prefix", "the", "--show", "0"]),
        (lambda lm: lm.generate("the", steps=-1), ["predict", "--prefix", "the", "--steps", "-1"]),
        (lambda lm: lm.generate("the", temperature=-1.0),
         ["predict", "--prefix", "the", "--temperature", "-1", "--steps", "1"]),
        (lambda lm: lm.generate("the", seed=2**64),
         ["predict", "--prefix", "the", "--seed", str(2**64)]),
        (lambda lm: lm.generate("the", steps=10**7),
         ["predict", "--prefix", "the", "--steps", str(10**7)]),
        (lambda lm: lm.score("t"), ["score", "t"]),
        (lambda lm: lm.score("th€"), ["score", "th€"]),
    ],
)  # fmt: skip
def test_errors_are_the_clis(lm, trained, capsys, call, argv):
    with pytest.raises(rnnlab.RnnlabError) as caught:
        call(lm)
    code, err = cli_error(capsys, argv[0], str(trained.run_dir), *argv[1:])
    assert code == caught.value.exit_code == 2
    assert err == f"error: {caught.value}"


def test_load_errors_are_the_clis(tmp_path, capsys):
    with pytest.raises(rnnlab.CheckpointError) as caught:
        rnnlab.load(tmp_path / "nowhere")
    code, err = cli_error(capsys, "predict", str(tmp_path / "nowhere"), "--prefix", "a")
    assert code == caught.value.exit_code == 3 and err == f"error: {caught.value}"
    assert "does not exist" in str(caught.value)
    with pytest.raises(rnnlab.UsageError, match="unknown --device 'tpu'"):
        rnnlab.load(tmp_path / "nowhere", device="tpu")  # checked before anything is read


def test_other_api_errors(lm):
    with pytest.raises(rnnlab.UsageError, match="unknown option 'temp'"):
        lm.predict("the", temp=1.0)
    with pytest.raises(rnnlab.UsageError, match="not both"):
        lm.predict("the", rnnlab.GenerateConfig(), steps=3)
    with pytest.raises(rnnlab.UsageError, match="not both"):
        lm.evaluate("the cat", corpus="alphabet")
    with pytest.raises(rnnlab.UsageError, match="too short to evaluate"):
        lm.evaluate("t")
    with pytest.raises(rnnlab.UsageError, match="text is empty"):
        lm.states("")
    with pytest.raises(rnnlab.UsageError, match="k must be at least 1"):
        lm.alternatives("the", k=0)


# -- the documentation runs as written -----------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_block_of_the_api_doc_runs(tmp_path, monkeypatch):
    doc = ROOT / "docs" / "python-api.md"
    blocks = re.findall(r"^```python\n(.*?)^```", doc.read_text(encoding="utf-8"), re.S | re.M)
    assert len(blocks) >= 8
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its mkdtemp() lands here
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{doc.name}, python block {i + 1}", "exec"), namespace)  # noqa: S102
    assert namespace["lm"].next("abc", k=1)[0][0] == "d"


def test_loading_a_model_imports_neither_the_loop_nor_the_multi_process_code(tmp_path):
    """`rnnlab.load` and the questions asked of it need the weights, not the trainer: no
    training loop, no DDP code, and no tqdm beyond what `import torch` itself brings."""
    run = train_tiny(tmp_path).run_dir
    code = (
        "import sys, torch\n"
        "bare = 'tqdm' in sys.modules\n"
        "import rnnlab\n"
        f"lm = rnnlab.load({str(run)!r})\n"
        "lm.next('the c'); lm.generate('the c', 20); lm.score('the cat')\n"
        "heavy = [m for m in ('rnnlab.training.loop', 'rnnlab.training.distributed', "
        "'rnnlab.training.lm', 'rnnlab.training.start') if m in sys.modules]\n"
        "print(heavy, bare, 'tqdm' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    ).stdout.split()  # fmt: skip
    heavy, bare, after = out[0], out[1], out[2]
    assert heavy == "[]"
    assert after == bare  # torch.hub imports tqdm where it is installed; rnnlab adds nothing
