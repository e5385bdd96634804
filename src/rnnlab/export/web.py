"""The model as a web page reads it, and a folder of static files written all at once.

The page runs the model with its own forward pass (`serve/static/inpage.js`, a few hundred lines
of JavaScript over the weights), so the model travels as two files: `model.json` (the shape, the
vocabulary, where each tensor lies) and `weights.bin` (every tensor, float32 little-endian,
one after another, in the names and layout of PyTorch's `nn.RNN/GRU/LSTM`, `nn.Embedding` and
`nn.Linear`, which every rnnlab implementation shares).

A folder is written as a whole: built beside its destination under a temporary name, then
renamed into place, so an interrupted export leaves nothing half written, and `--force`
replaces only a folder an earlier export wrote (the `MARKER` file says so), never another one.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab.errors import UsageError
from rnnlab.export.onnx import refuse_bidirectional
from rnnlab.jsonout import strict_dumps
from rnnlab.model import RNNLM
from rnnlab.version import __version__
from rnnlab.vocab import UNK, Vocab

FORMAT = "rnnlab-web-1"
MODEL_JSON = "model/model.json"
WEIGHTS = "model/weights.bin"
MARKER = MODEL_JSON  # a folder holding it was written by an export, and --force may replace it


def model_files(model: RNNLM, vocab: Vocab, extra: dict[str, Any]) -> dict[str, bytes]:
    """model.json and weights.bin of `model`; `extra` (what the page shows) joins model.json.

    Returns:
        {relative path: bytes} for `MODEL_JSON` and `WEIGHTS`.
    """
    refuse_bidirectional(model)
    config = model.config
    tensors = {}
    blobs = []
    offset = 0  # in float32 values
    for name, value in model.state_dict().items():
        array = np.ascontiguousarray(value.detach().cpu().float().numpy(), dtype="<f4")
        tensors[name] = {"shape": list(array.shape), "offset": offset}
        blobs.append(array.tobytes())
        offset += array.size
    weights = b"".join(blobs)
    meta = {
        "format": FORMAT,
        "rnnlab_version": __version__,
        "cell": config.cell,
        "layers": config.layers,
        "hidden": config.hidden,
        "embed": model.embed_size,  # 0: one-hot inputs
        "vocabulary": vocab.idx_to_token,
        "unknown": UNK,
        "weights": Path(WEIGHTS).name,
        "weights_bytes": len(weights),
        "tensors": tensors,
        "config": dataclasses.asdict(config),
        **extra,
    }
    return {MODEL_JSON: strict_dumps(meta).encode("utf-8"), WEIGHTS: weights}


def _claim(out: Path, force: bool) -> bool:
    """Whether `out` exists and will be replaced; refuse what must not be (exit 2)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file: give a folder for the web export")
    if not out.exists() or not any(out.iterdir()):
        return out.exists()
    if not (out / MARKER).is_file():
        raise UsageError(
            f"{str(out)!r} is a folder that holds other files, not an earlier web export: "
            "choose another --out (--force replaces only a web export)"
        )
    if not force:
        raise UsageError(
            f"{str(out)!r} holds an earlier web export: pass --force to replace it, or choose "
            "another --out"
        )
    return True


def write_folder(out: str | Path, files: dict[str, bytes], force: bool = False) -> None:
    """Write `files` ({relative path: bytes}) as the folder `out`, all or nothing."""
    out = Path(out)
    replace = _claim(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    old = None
    try:
        for name, data in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        tmp.chmod(0o755)  # mkdtemp's folder is private; a web server must read this one
        if replace:
            old = out.with_name(f".{out.name}.{os.getpid()}.old")
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        if old is not None and not out.exists():
            old.rename(out)  # put the earlier export back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
