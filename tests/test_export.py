"""`rnnlab export` and `lm.export_onnx`: the ONNX file's interface, its check, and every refusal.

The file must answer as PyTorch does (onnxruntime is the oracle's twin: same probabilities to
1e-5, same greedy text), carry what a caller needs in its metadata, run without rnnlab (the
Python of docs/deploy.md is executed here), and never be half written: a failed check, an
existing file, a bidirectional model or a missing package each leave the disk as it was.
The web format's browser half is tests/test_export_browser.py; its files are checked here.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnlab
from rnnlab.cli import main
from rnnlab.export import onnx as onnx_export
from rnnlab.export.onnx import TOLERANCE, OnnxLM
from rnnlab.export.web import MARKER, MODEL_JSON, WEIGHTS
from rnnlab.version import __version__
from tinyrun import TEXT, train_tiny, write_corpus

onnxruntime = pytest.importorskip("onnxruntime")  # the [export] extra; CI's [test] installs it
onnx = pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> rnnlab.LanguageModel:
    return train_tiny(tmp_path_factory.mktemp("export")).model


def quick_run(root: Path, name: str, **options) -> rnnlab.LanguageModel:
    """A one-epoch run of a few hundred weights: the export's arithmetic, not its quality."""
    corpus = write_corpus(root)
    flags = {"hidden": 8, "layers": 2, "batch_size": 4, "num_steps": 8, "epochs": 1}
    return rnnlab.train(corpus=str(corpus), out=root / name, **{**flags, **options}).model


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def session(path: Path):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# -- the file -------------------------------------------------------------------------------------


def test_the_file_has_the_promised_interface_and_metadata(tiny, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    code, printed, err = cli(capsys, "export", tiny.run.run_dir, "--format", "onnx", "--out", out)
    assert code == 0, err
    # The check's figures are printed, tolerance included, and passed.
    assert "step by step, state carried: max |p difference|" in printed
    assert "as one sequence:" in printed
    assert "greedy continuation of 1,000 characters: identical" in printed
    assert f"tolerance {TOLERANCE:g} on every probability, greedy text identical: passed" in (
        printed
    )
    assert re.search(r"wrote .*model\.onnx \(\d", printed)

    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    kinds = {
        i.name: (i.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in
                                                 i.type.tensor_type.shape.dim])
        for i in [*model.graph.input, *model.graph.output]
    }  # fmt: skip
    L, H, V = 2, 24, len(tiny.vocab)
    assert kinds == {
        "ids": (onnx.TensorProto.INT64, ["batch", "time"]),
        "state": (onnx.TensorProto.FLOAT, [1, L, "batch", H]),
        "logits": (onnx.TensorProto.FLOAT, ["batch", "time", V]),
        "next_state": (onnx.TensorProto.FLOAT, [1, L, "batch", H]),
    }
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["vocabulary"]) == tiny.vocab.idx_to_token
    assert meta["unknown"] == "<unk>" == json.loads(meta["vocabulary"])[0]
    assert (meta["cell"], meta["layers"], meta["hidden"]) == ("gru", "2", "24")
    assert meta["rnnlab_version"] == __version__ and meta["corpus"] == "quotes"

    # Any batch and any length, from any state: PyTorch's logits and state.
    g = torch.Generator().manual_seed(0)
    X = torch.randint(1, V, (3, 7), generator=g)
    state = torch.randn(1, L, 3, H, generator=g) * 0.5
    logits, nxt = session(out).run(None, {"ids": X.numpy(), "state": state.numpy()})
    with torch.no_grad():
        want, want_state = tiny.model(X, state[0])
    assert np.abs(logits - want.numpy()).max() < 1e-5
    assert np.abs(nxt[0] - want_state.numpy()).max() < 1e-5


@pytest.mark.parametrize(
    "options",
    [
        {"cell": "rnn"},
        {"cell": "lstm"},
        {"cell": "gru", "embed": 6},
        {"cell": "gru", "impl": "scratch"},
        {"cell": "rnn", "impl": "fast"},
        {"cell": "lstm", "layers": 1},
    ],
    ids=["rnn", "lstm", "gru-embedding", "gru-scratch", "rnn-fast", "lstm-1-layer"],
)
def test_every_cell_and_implementation_passes_the_check(tmp_path, options):
    lm = quick_run(tmp_path, "run", **options)
    out = tmp_path / "m.onnx"
    report = lm.export_onnx(out)
    assert report.passed and report.chars == 1_000 and report.greedy_same == 1_000
    assert report.step_prob <= TOLERANCE and report.sequence_prob <= TOLERANCE
    S = 2 if lm.run.model_config.cell == "lstm" else 1
    sess = session(out)
    assert sess.get_inputs()[1].shape[0] == S
    # The exported graph read with onnxruntime alone gives the model's held-out loss.
    ids = lm.vocab.encode(TEXT[-300:]).long()
    state = np.zeros((S, lm.run.model_config.layers, 1, 8), dtype=np.float32)
    logits, _ = sess.run(None, {"ids": ids[None, :-1].numpy(), "state": state})
    nll = torch.nn.functional.cross_entropy(torch.from_numpy(logits[0]).double(), ids[1:])
    assert abs(float(nll) - lm.evaluate(TEXT[-300:]).loss) < 1e-5


def test_the_python_of_docs_deploy_runs_with_onnxruntime_alone(tiny, tmp_path):
    out = tmp_path / "model.onnx"
    tiny.export_onnx(out)
    page = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    assert "rnnlab" not in code  # the point: no rnnlab on the other side
    code = code.replace('"model.onnx"', repr(str(out))).replace('"time traveller"', '"she sa"')
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "docs/deploy.md", "exec"), {})
    assert printed.getvalue().strip() == "she sa" + tiny.generate("she sa", steps=100)


# -- the other runtime, side by side --------------------------------------------------------------


def test_predict_runtime_onnx_agrees_with_pytorch(tiny, capsys):
    run = tiny.run.run_dir
    answers = {}
    for runtime in ("torch", "onnx"):
        code, printed, err = cli(
            capsys, "predict", run, "--prefix", "she sa", "--show", "10", "--steps", "200",
            "--json", "--runtime", runtime,
        )  # fmt: skip
        assert code == 0, err
        answers[runtime] = json.loads(printed.strip().splitlines()[-1])
    a, b = answers["torch"], answers["onnx"]
    assert a["continuation"] == b["continuation"] and len(a["continuation"]) == 200
    assert [n["char"] for n in a["next"]] == [n["char"] for n in b["next"]]
    assert max(abs(x["prob"] - y["prob"]) for x, y in zip(a["next"], b["next"], strict=True)) < 1e-6
    assert abs(a["log_prob"] - b["log_prob"]) < 1e-4
    # The API's switch: the same figures through onnxruntime.
    twin = tiny.with_runtime("onnx")
    assert isinstance(twin.model, OnnxLM) and tiny.with_runtime("torch") is tiny
    assert abs(twin.evaluate().loss - tiny.evaluate().loss) < 1e-6
    assert twin.generate("she sa", steps=40, strategy="sample", seed=3) == tiny.generate(
        "she sa", steps=40, strategy="sample", seed=3
    )
    with pytest.raises(rnnlab.UsageError, match="unknown runtime 'tflite': use one of torch, onnx"):
        tiny.with_runtime("tflite")
    with pytest.raises(rnnlab.UsageError, match="hidden states come from the PyTorch model"):
        twin.states("she")


# -- the check refuses, and leaves nothing --------------------------------------------------------


def test_a_failed_check_exits_1_and_writes_nothing(tiny, tmp_path, capsys, monkeypatch):
    real = onnx_export.onnx_bytes

    def off_by_a_little(model, vocab, props):
        broken = onnx_export.torch_twin(model)
        with torch.no_grad():
            broken.output.bias[1] += 1e-3  # one character's probability moves by ~1e-4
        return real(broken, vocab, props)

    monkeypatch.setattr(onnx_export, "onnx_bytes", off_by_a_little)
    out = tmp_path / "sub" / "model.onnx"
    code, _, err = cli(capsys, "export", tiny.run.run_dir, "--format", "onnx", "--out", out)
    assert code == 1
    assert "tolerance 1e-05 on every probability, greedy text identical: FAILED" in err
    last = err.splitlines()[-1]
    assert last.startswith("error: onnxruntime does not answer as PyTorch does (max |p diff")
    assert "nothing was written" in last
    assert not out.exists() and not out.parent.exists()  # not even the folder it would be in
    assert list(tmp_path.iterdir()) == []


def test_the_check_reads_a_sample_when_the_corpus_is_gone(tmp_path):
    lm = quick_run(tmp_path, "run")
    (tmp_path / "quotes.txt").unlink()
    report = lm.export_onnx(tmp_path / "m.onnx")
    assert report.passed and "sampled (seed 0)" in report.source and report.chars == 1_000


# -- refusals: one line each, the usual exit codes ------------------------------------------------


def test_an_existing_file_needs_force(tiny, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"mine")
    code, _, err = cli(capsys, "export", tiny.run.run_dir, "--format", "onnx", "--out", out)
    assert code == 2 and err == (
        f"error: {str(out)!r} exists: pass --force to overwrite it, or choose another --out"
    )
    assert out.read_bytes() == b"mine"
    code, _, err = cli(
        capsys, "export", tiny.run.run_dir, "--format", "onnx", "--out", out, "--force"
    )
    assert code == 0 and out.read_bytes()[:4] != b"mine"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left
    code, _, err = cli(capsys, "export", tiny.run.run_dir, "--format", "onnx", "--out", tmp_path)
    assert code == 2 and err.endswith("is a directory: give the path of the .onnx file")


def test_a_missing_or_corrupt_run_exits_3(tiny, tmp_path, capsys):
    for fmt in ("onnx", "web"):
        code, _, err = cli(capsys, "export", tmp_path / "nope", "--format", fmt, "--out",
                           tmp_path / "x")  # fmt: skip
        missing = str(tmp_path / "nope")
        assert code == 3 and err == f"error: run directory {missing!r} does not exist"
    run = tmp_path / "run"
    quick_run(tmp_path, "run")
    for weights in run.glob("checkpoints/*/model.safetensors"):
        data = bytearray(weights.read_bytes())
        data[-5] ^= 0x40
        weights.write_bytes(bytes(data))
    code, _, err = cli(capsys, "export", run, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert code == 3 and err.startswith("error: ") and len(err.splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_a_bidirectional_model_is_refused_with_the_reason(tmp_path, capsys):
    quick_run(tmp_path, "bi", bidirectional=True)
    for fmt in ("onnx", "web"):
        out = tmp_path / f"out-{fmt}"
        code, _, err = cli(capsys, "export", tmp_path / "bi", "--format", fmt, "--out", out)
        assert code == 2 and err.startswith("error: a bidirectional model cannot be exported: ")
        assert "cannot continue a text" in err and len(err.splitlines()) == 1
        assert not out.exists()


def test_a_missing_package_names_the_extra(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    out = tmp_path / "m.onnx"
    code, _, err = cli(capsys, "export", tiny.run.run_dir, "--format", "onnx", "--out", out)
    assert code == 2 and err == (
        "error: the ONNX export needs the onnx package, which is not installed: "
        'pip install "rnnlab[export]"'
    )
    assert not out.exists()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code, _, err = cli(capsys, "predict", tiny.run.run_dir, "--prefix", "she", "--runtime", "onnx")
    assert code == 2 and 'pip install "rnnlab[export]"' in err


# -- the web format's files -----------------------------------------------------------------------


def test_the_web_folder_holds_the_page_and_the_exact_weights(tiny, tmp_path, capsys):
    out = tmp_path / "site"
    code, printed, err = cli(capsys, "export", tiny.run.run_dir, "--format", "web", "--out", out)
    assert code == 0, err
    assert printed.startswith(f"wrote {out}/")
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == [
        "README.txt", "index.html", MODEL_JSON, WEIGHTS, "static/app.js", "static/favicon.svg",
        "static/inpage.js", "static/style.css",
    ]  # fmt: skip
    static = ROOT / "src" / "rnnlab" / "serve" / "static"
    for name in ("app.js", "inpage.js", "style.css"):  # the same page, not a copy
        assert (out / "static" / name).read_bytes() == (static / name).read_bytes()
    html = (out / "index.html").read_text(encoding="utf-8")
    served = (static / "index.html").read_text(encoding="utf-8")
    assert html == served.replace('="/static/', '="static/').replace(
        'name="rnnlab-backend" content="server"', 'name="rnnlab-backend" content="page"'
    )
    assert "/static/" not in html  # relative links: the folder may live below any path
    runtime = (static / "inpage.js").read_text(encoding="utf-8")
    assert not re.search(r"https?://", runtime)  # nothing from elsewhere, as app.js
    assert "innerHTML" not in runtime and "eval(" not in runtime
    meta = json.loads((out / MODEL_JSON).read_text(encoding="utf-8"))
    assert meta["vocabulary"] == tiny.vocab.idx_to_token and meta["run"]["name"] == "tiny"
    assert meta["epochs"] == tiny.training_log() and len(meta["epochs"]) == 3
    blob = np.frombuffer((out / WEIGHTS).read_bytes(), dtype="<f4")
    for name, value in tiny.model.state_dict().items():
        entry = meta["tensors"][name]
        got = blob[entry["offset"] : entry["offset"] + value.numel()].reshape(entry["shape"])
        assert torch.equal(torch.from_numpy(got.copy()), value.float()), name
    assert blob.size == sum(v.numel() for v in tiny.model.state_dict().values())


def test_the_web_folder_is_replaced_only_when_it_is_an_export(tiny, tmp_path, capsys):
    out = tmp_path / "site"
    run = tiny.run.run_dir
    assert cli(capsys, "export", run, "--format", "web", "--out", out)[0] == 0
    (out / "stale.txt").write_text("from before")
    code, _, err = cli(capsys, "export", run, "--format", "web", "--out", out)
    assert code == 2 and err == (
        f"error: {str(out)!r} holds an earlier web export: pass --force to replace it, or "
        "choose another --out"
    )
    assert cli(capsys, "export", run, "--format", "web", "--out", out, "--force")[0] == 0
    assert not (out / "stale.txt").exists() and (out / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no temporary folder left
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, err = cli(capsys, "export", run, "--format", "web", "--out", mine, "--force")
    assert code == 2 and "not an earlier web export" in err
    assert (mine / "notes.txt").read_text() == "keep me"
    code, _, err = cli(capsys, "export", run, "--format", "web", "--out", mine / "notes.txt")
    assert code == 2 and err.endswith("is a file: give a folder for the web export")
