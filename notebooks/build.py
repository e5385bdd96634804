"""Execute the course notebooks and save them with their outputs: the same run the tests make.

    python notebooks/build.py                     # every notebook, outputs saved in place
    python notebooks/build.py 04-gru-lstm-deep-bidirectional.ipynb   # one of them

Each notebook runs top to bottom in a fresh Jupyter kernel (nbclient + ipykernel) started from
this Python, with one torch thread and a fixed hash seed, in an empty scratch directory: the
runs it trains are written there and thrown away, so no local path reaches the saved outputs
(`check_portable` refuses one). `tests/test_notebooks.py` calls `execute` below on every
notebook, so a notebook that builds here passes there.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
KERNEL = "python3"
CELL_TIMEOUT = 300  # seconds: a cell that takes longer is a bug in a teaching notebook
ENV = {
    "OMP_NUM_THREADS": "1",  # one thread, as the test suite runs (a shared 2-core machine)
    "MKL_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",  # set() order, hence anything printed from a set, repeats
    "TQDM_DISABLE": "1",
}
# A time measured while the notebook ran ("time 1.06 sec", "0.3 s"): it differs on every run.
SECONDS = re.compile(r"\btime \d+\.\d+ sec\b")


def notebooks() -> list[Path]:
    return sorted(HERE.glob("[0-9][0-9]-*.ipynb"))


def _kernel_manager(spec_dir: Path) -> KernelManager:
    """A kernel running this very Python, whatever other kernels Jupyter knows about."""
    kernel = spec_dir / KERNEL
    kernel.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "Python 3", "language": "python"}
    (kernel / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir)], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def execute(path: Path) -> tuple[nbformat.NotebookNode, float]:
    """Run a notebook top to bottom in a scratch directory; raise on the first failing cell.

    Returns the executed notebook (not saved) and the seconds it took.
    """
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as work, tempfile.TemporaryDirectory() as specs:
        client = NotebookClient(
            nb,
            km=_kernel_manager(Path(specs)),
            timeout=CELL_TIMEOUT,
            resources={"metadata": {"path": work}},
        )
        start = time.perf_counter()
        client.execute(env={**os.environ, **ENV})
        seconds = time.perf_counter() - start
        check_portable(nb, [work, str(Path.home()), str(HERE.parent)])
    return tidy(nb), seconds


def outputs_text(cell: nbformat.NotebookNode) -> str:
    """The text a code cell showed (streams and plain-text results), times blanked."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out and "text/plain" in out.data:
            parts.append(out.data["text/plain"] + "\n")
    return SECONDS.sub("time - sec", "".join(parts))


def check_portable(nb: nbformat.NotebookNode, paths: list[str]) -> None:
    """Refuse outputs that name a directory of this machine: they would not read anywhere else."""
    for i, cell in enumerate(nb.cells):
        text = json.dumps(cell.get("outputs", []))
        for p in paths:
            if p and p in text:
                raise ValueError(f"cell {i} prints a local path ({p}): print relative paths")


def tidy(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop what changes from run to run and says nothing: timings, the Python patch level."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": KERNEL}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main(names: list[str]) -> int:
    paths = [HERE / n for n in names] if names else notebooks()
    for path in paths:
        nb, seconds = execute(path)
        nbformat.write(nb, path)
        print(f"{path.name}: {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
