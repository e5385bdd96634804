"""The playground as a static site: the same page, its model running in the page, no server.

`rnnlab export RUN --format web --out DIR` writes:

    DIR/index.html             the playground's page (static/index.html), its links made
                               relative and its backend switched from the server to the page
    DIR/static/app.js          the page's code, unchanged: it talks to a backend object that is
                               either the server (fetch /api/...) or the in-page model
    DIR/static/inpage.js       the in-page model: the forward pass (rnn, gru, lstm), decoding,
                               surprisal, hidden units; it answers with the server's JSON shapes
    DIR/static/style.css, favicon.svg
    DIR/model/model.json       shape, vocabulary, tensor index, and what /api/runs and
                               /api/metrics would say (the run's configs, its training curves)
    DIR/model/weights.bin      the weights, float32

Any static file server will do (`python3 -m http.server -d DIR`); the page asks nothing of any
other origin. A file:// URL will not: browsers refuse a page's fetch of its own files there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnlab.api import PATTERNS, LanguageModel
from rnnlab.export.onnx import refuse_bidirectional
from rnnlab.export.web import MODEL_JSON, WEIGHTS, model_files, write_folder
from rnnlab.serve.app import STATIC, _run_info, run_names
from rnnlab.serve.config import LIMITS
from rnnlab.version import __version__

PAGE_FILES = ("app.js", "inpage.js", "style.css", "favicon.svg")
SERVER_BACKEND = '<meta name="rnnlab-backend" content="server">'
PAGE_BACKEND = '<meta name="rnnlab-backend" content="page">'
README = """A trained rnnlab model, and the rnnlab playground that runs it in the page.

Serve it with any static file server, for example:

    python3 -m http.server -d {folder}

then open http://127.0.0.1:8000/. Nothing is fetched from anywhere but this folder.
model/model.json describes the model (vocabulary, shapes, where each tensor lies in
model/weights.bin, float32 little-endian); static/inpage.js is the code that runs it.
Made by rnnlab {version} from the run {run}.
"""


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:  # the page changed under the export: a bug, not a user mistake
        raise RuntimeError(f"static/index.html should hold {old!r} exactly once")
    return text.replace(old, new)


def page_files() -> dict[str, bytes]:
    """The playground's files as the static site serves them ({relative path: bytes})."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    # A static site may live below a path (https://example.org/course/model/): relative links.
    html = html.replace('="/static/', '="static/')
    html = _replace_once(html, SERVER_BACKEND, PAGE_BACKEND)
    files = {"index.html": html.encode("utf-8")}
    for name in PAGE_FILES:
        files[f"static/{name}"] = (STATIC / name).read_bytes()
    return files


def export_site(lm: LanguageModel, out: str | Path, force: bool = False) -> dict[str, Any]:
    """Write the playground of `lm` as static files in the folder `out` (see the module doc).

    Returns:
        a summary: the folder, its file count and total bytes, the weights' bytes.
    """
    refuse_bidirectional(lm.model)
    name = next(iter(run_names([lm])))
    extra = {
        "run": _run_info(name, lm),  # what GET /api/runs says of it
        "epochs": lm.training_log(),  # what GET /api/metrics says
        "limits": LIMITS,
        "patterns": PATTERNS,
    }
    files = {**page_files(), **model_files(lm.model, lm.vocab, extra)}
    files["README.txt"] = README.format(
        folder=Path(out).name or "DIR", version=__version__, run=name
    ).encode("utf-8")
    write_folder(out, files, force)
    return {
        "out": str(out),
        "files": len(files),
        "bytes": sum(len(b) for b in files.values()),
        "weights_bytes": len(files[WEIGHTS]),
        "model_json_bytes": len(files[MODEL_JSON]),
    }
