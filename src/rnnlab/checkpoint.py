"""Run directories: safetensors weights + JSON config and vocabulary, written atomically.

A run directory holds:

    config.json          every hyperparameter, the vocabulary, rnnlab and torch versions
    model.safetensors    the weights with the best held-out loss (what predict/evaluate load)
    last.safetensors     the latest weights, optimizer tensors and RNG states (for --resume)
    trainer.json         epoch, step, best loss and the optimizer's non-tensor state
    metrics.csv          one row per epoch
    manifest.json        sha256 of each file above but metrics.csv; written last

Nothing is ever unpickled: tensors go through safetensors, everything else through JSON, so loading
a checkpoint cannot execute code. Each file is written to a temporary name, fsynced and renamed, and
the manifest goes last, so a run interrupted mid-save keeps a manifest that names the old files,
and a file changed or truncated afterwards fails its checksum.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from rnnlab.errors import CheckpointError

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
LAST = "last.safetensors"
TRAINER = "trainer.json"
METRICS = "metrics.csv"
MANIFEST = "manifest.json"


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same directory -> fsync -> rename -> fsync the directory."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write `files` atomically, then a manifest covering them and the files it already listed."""
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(run_dir) if (run_dir / MANIFEST).exists() else {}
    for name, data in files.items():
        write_atomic(run_dir / name, data)
        manifest[name] = _sha256(data)
    write_atomic(run_dir / MANIFEST, json_bytes({"format": FORMAT_VERSION, "files": manifest}))


def _read_manifest(run_dir: Path) -> dict[str, str]:
    path = run_dir / MANIFEST
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        files = meta["files"]
        if meta.get("format") != FORMAT_VERSION or not isinstance(files, dict):
            raise ValueError
    except FileNotFoundError:
        raise CheckpointError(
            f"no checkpoint in {str(run_dir)!r} (no {MANIFEST}): train one with `rnnlab train`"
        ) from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"checkpoint manifest {str(path)!r} is corrupt") from None
    return files


def read_verified(run_dir: Path, name: str) -> bytes:
    """The bytes of one checkpoint file, refused unless they match the manifest's checksum."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {str(run_dir)!r} does not exist")
    files = _read_manifest(run_dir)
    if name not in files:
        raise CheckpointError(f"checkpoint in {str(run_dir)!r} has no {name}")
    try:
        data = (run_dir / name).read_bytes()
    except OSError:
        raise CheckpointError(f"checkpoint file {str(run_dir / name)!r} is missing") from None
    if _sha256(data) != files[name]:
        raise CheckpointError(
            f"checkpoint file {str(run_dir / name)!r} is corrupt (checksum mismatch): "
            "retrain or restore it"
        )
    return data


def read_json(run_dir: Path, name: str) -> Any:
    try:
        return json.loads(read_verified(run_dir, name).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(
            f"checkpoint file {str(run_dir / name)!r} is not valid JSON"
        ) from None


def tensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})


def read_tensors(run_dir: Path, name: str) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors checkpoint file; non-finite weights are refused."""
    try:
        tensors = st_load(read_verified(run_dir, name))
    except SafetensorError as e:
        raise CheckpointError(f"checkpoint file {str(run_dir / name)!r} is corrupt: {e}") from None
    for key, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(
                f"checkpoint file {str(run_dir / name)!r} holds non-finite values in {key}"
            )
    return tensors


def optimizer_to_checkpoint(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state into tensors (for safetensors) and plain data (for JSON)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                plain.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state": plain}


def optimizer_from_checkpoint(
    tensors: dict[str, torch.Tensor], plain: dict[str, Any]
) -> dict[str, Any]:
    """Rebuild an optimizer state_dict from `optimizer_to_checkpoint`'s two halves."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, st in plain["state"].items():
        state.setdefault(int(idx), {}).update(st)
    return {"state": state, "param_groups": plain["param_groups"]}


def finite(x: float) -> float | None:
    """JSON has no inf/nan: store them as null."""
    return x if math.isfinite(x) else None
