"""The course notebooks: each runs top to bottom in a Jupyter kernel, as committed.

`notebooks/build.py` is the one way they are run: it built the outputs that are committed, and
these tests call the same `execute`. A cell that raises fails the test; cells tagged `check`
must print what the committed notebook shows (times blanked), so an output a reader sees on the
code host is the output the code gives.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import tempfile
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("notebook_build", ROOT / "notebooks" / "build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)

NOTEBOOKS = build.notebooks()
LESSONS = [
    "01-language-model.ipynb",
    "02-text-generation.ipynb",
    "03-srn-rnncell-rnn-seq2seq.ipynb",
    "04-gru-lstm-deep-bidirectional.ipynb",
    "05-bptt.ipynb",
]


def code_cells(path: Path) -> list[nbformat.NotebookNode]:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_one_notebook_per_lesson():
    assert [p.name for p in NOTEBOOKS] == LESSONS


@pytest.mark.slow  # a kernel per notebook; 5-30 s each on one thread
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_and_shows_what_is_committed(path):
    executed, _ = build.execute(path)  # raises on the first cell that fails
    committed = nbformat.read(path, as_version=4)
    checked = 0
    for new, old in zip(executed.cells, committed.cells, strict=True):
        if "check" in old.metadata.get("tags", []):
            assert build.outputs_text(new) == build.outputs_text(old), old.source[:80]
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_every_output_in_order(path):
    cells = code_cells(path)
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    assert any(c.outputs for c in cells)
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert errors == []
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    assert all("execution" not in c.metadata for c in nb.cells)  # no timings committed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_name_no_local_path(path):
    text = json.dumps([c.get("outputs", []) for c in code_cells(path)])
    # This machine's directories (derived, so nothing machine-specific is written here) and
    # the usual homes of other machines.
    here = (tempfile.gettempdir(), str(Path.home()), str(ROOT), str(ROOT.parent))
    for local in (*(d for d in here if len(d) > 1), "/home/", "/Users/", "C:\\\\"):  # not "/"
        assert local not in text, local


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_use_the_public_api_only(path):
    """Nothing private (a leading underscore) is imported or reached for from rnnlab."""
    for cell in code_cells(path):
        source = "\n".join(
            line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rnnlab"):
                assert not any(a.name.startswith("_") for a in node.names), ast.unparse(node)
                assert not any(part.startswith("_") for part in node.module.split(".")), node.module
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                assert node.attr.startswith("__"), ast.unparse(node)


def test_the_test_extra_installs_the_kernel():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    names = {
        d.split(">")[0].split("=")[0].split("<")[0].strip()
        for d in extra["project"]["optional-dependencies"]["test"]
    }
    assert {"nbclient", "ipykernel", "nbformat"} <= names
