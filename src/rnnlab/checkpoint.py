"""Run directories and checkpoints: safetensors tensors + JSON, sha256 manifests, atomic writes.

A language-model run directory holds:

    config.json          every hyperparameter, the vocabulary, rnnlab and torch versions
    manifest.json        sha256 of config.json
    metrics.csv          one row per finished epoch (train and held-out figures)
    steps.csv            one row per optimizer step: step, epoch, loss, grad_norm
    checkpoints/
      step-00001234/     one checkpoint, never modified once complete:
        model.safetensors    the weights
        state.safetensors    optimizer tensors, torch RNG states, the carried hidden state
        trainer.json         epoch, step, best so far, optimizer settings, Python/numpy RNG
        manifest.json        sha256 of the three files above; written last

A checkpoint is assembled in a hidden temporary directory, its manifest written last, and only
then renamed to `step-NNNNNNNN`, so a crash at any moment leaves the previous checkpoints as they
were. A checkpoint without a valid manifest, or with a file that does not match it, does not
exist: `--resume` takes the newest complete one and says which damaged ones it skipped. The best
checkpoint (lowest held-out loss, the one predict/evaluate load) is named by the newest
checkpoint's `trainer.json` and is never pruned while it is the best.

Nothing is ever unpickled: tensors go through safetensors, everything else through JSON, so loading
a checkpoint cannot execute code. Files are written to a temporary name, fsynced and renamed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable
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
STATE = "state.safetensors"
TRAINER = "trainer.json"
METRICS = "metrics.csv"
STEPS = "steps.csv"
MANIFEST = "manifest.json"
CHECKPOINTS = "checkpoints"
CHECKPOINT_FILES = (WEIGHTS, STATE, TRAINER)  # what a complete training checkpoint holds

_STEP_DIR = re.compile(r"step-(\d{8,})")


# -- atomic files ---------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
    _fsync_dir(path.parent)


def append_synced(path: Path, data: bytes) -> None:
    """Append `data` in one write call and fsync it: a kill never leaves half a row."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_bytes(files: dict[str, str | list[str]]) -> bytes:
    return json_bytes({"format": FORMAT_VERSION, "files": files})


# -- flat directories: files listed by one manifest -----------------------------------------------


def save_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write `files` atomically under a manifest that vouches for them at every moment.

    Each file is renamed into place separately, so a crash can leave some files new and some
    old. The manifest therefore first accepts both versions of every file about to change, then
    the files are written, then the manifest names only the new versions: whenever the process
    dies, each file matches the manifest.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        old = _read_manifest(run_dir) if (run_dir / MANIFEST).exists() else {}
    except CheckpointError:
        old = {}  # a damaged manifest vouches for nothing
    new = {name: _sha256(data) for name, data in files.items()}
    both = dict(old)
    for name, sha in new.items():
        both[name] = [sha, *[s for s in _accepted(old.get(name)) if s != sha]]
    write_atomic(run_dir / MANIFEST, _manifest_bytes(both))
    for name, data in files.items():
        write_atomic(run_dir / name, data)
    write_atomic(run_dir / MANIFEST, _manifest_bytes({**old, **new}))


def _accepted(entry: str | list[str] | None) -> list[str]:
    if entry is None:
        return []
    return [entry] if isinstance(entry, str) else list(entry)


def _read_manifest(run_dir: Path) -> dict[str, str | list[str]]:
    path = run_dir / MANIFEST
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        files = meta["files"]
        if meta.get("format") != FORMAT_VERSION or not isinstance(files, dict):
            raise ValueError
        for entry in files.values():
            if not all(isinstance(s, str) for s in _accepted(entry)) or not _accepted(entry):
                raise ValueError
    except FileNotFoundError:
        raise CheckpointError(
            f"no checkpoint in {str(run_dir)!r} (no {MANIFEST}): train one with `rnnlab train`"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise CheckpointError(f"checkpoint manifest {str(path)!r} is corrupt") from None
    return files


def _verified(run_dir: Path, name: str, files: dict[str, str | list[str]]) -> bytes:
    if name not in files:
        raise CheckpointError(f"checkpoint in {str(run_dir)!r} has no {name}")
    try:
        data = (run_dir / name).read_bytes()
    except OSError:
        raise CheckpointError(f"checkpoint file {str(run_dir / name)!r} is missing") from None
    if _sha256(data) not in _accepted(files[name]):
        raise CheckpointError(
            f"checkpoint file {str(run_dir / name)!r} is corrupt (checksum mismatch): "
            "retrain or restore it"
        )
    return data


def read_verified(run_dir: Path, name: str) -> bytes:
    """The bytes of one checkpoint file, refused unless they match the manifest's checksum."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {str(run_dir)!r} does not exist")
    return _verified(run_dir, name, _read_manifest(run_dir))


def parse_json(data: bytes, where: Path) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"checkpoint file {str(where)!r} is not valid JSON") from None


def read_json(run_dir: Path, name: str) -> Any:
    return parse_json(read_verified(run_dir, name), Path(run_dir) / name)


def tensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or inf."""
    return [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]


def parse_tensors(data: bytes, where: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file's bytes; non-finite values are refused."""
    try:
        tensors = st_load(data)
    except SafetensorError as e:
        raise CheckpointError(f"checkpoint file {str(where)!r} is corrupt: {e}") from None
    bad = non_finite(tensors)
    if bad:
        raise CheckpointError(f"checkpoint file {str(where)!r} holds non-finite values in {bad[0]}")
    return tensors


def read_tensors(run_dir: Path, name: str) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors checkpoint file; non-finite weights are refused."""
    return parse_tensors(read_verified(run_dir, name), Path(run_dir) / name)


# -- checkpoint directories -----------------------------------------------------------------------


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:08d}"


def checkpoint_step(path: Path) -> int | None:
    """The step a `checkpoints/step-NNNNNNNN` directory name stands for, else None."""
    m = _STEP_DIR.fullmatch(Path(path).name)
    return int(m.group(1)) if m and Path(path).parent.name == CHECKPOINTS else None


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, directory) of every `step-*` directory, oldest first, complete or not."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.fullmatch(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _write_new(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_checkpoint(run_dir: Path, step: int, files: dict[str, bytes]) -> Path:
    """Write a checkpoint directory: files, then the manifest, then one rename makes it exist."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(run_dir, step)
    tmp = root / f".{final.name}.{secrets.token_hex(4)}.tmp"
    os.mkdir(tmp)
    try:
        for name, data in files.items():
            _write_new(tmp / name, data)
        # Last: the manifest vouches for everything written before it.
        _write_new(tmp / MANIFEST, _manifest_bytes({n: _sha256(d) for n, d in files.items()}))
        _fsync_dir(tmp)
        if final.exists():  # a damaged checkpoint of the same step, or a re-save of one
            old = root / f".{final.name}.{secrets.token_hex(4)}.old.tmp"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(root)
    return final


def read_checkpoint(path: Path, required: Iterable[str] = CHECKPOINT_FILES) -> dict[str, bytes]:
    """Every file of a checkpoint directory, each verified against its manifest."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {str(path)!r} does not exist")
    if not (path / MANIFEST).exists():
        raise CheckpointError(f"checkpoint {str(path)!r} is incomplete (no {MANIFEST})")
    files = _read_manifest(path)
    return {name: _verified(path, name, files) for name in required}


def newest_complete(run_dir: Path) -> tuple[Path, dict[str, bytes], list[str]]:
    """The newest checkpoint whose every file matches its manifest, its files, and why the newer
    ones (if any) were skipped."""
    skipped: list[str] = []
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            return path, read_checkpoint(path), skipped
        except CheckpointError as e:
            skipped.append(f"{path.name} is damaged ({e})")
    why = f": {skipped[0]}" if skipped else ""
    raise CheckpointError(f"no complete checkpoint in {str(run_dir)!r}{why}")


def _best_step(path: Path) -> int | None:
    """The best step a checkpoint's trainer.json names (unverified: used only to protect it)."""
    try:
        best = json.loads((path / TRAINER).read_text(encoding="utf-8")).get("best_step")
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        return None
    return best if isinstance(best, int) else None


def best_checkpoint(run_dir: Path, warn: Callable[[str], None]) -> Path:
    """The checkpoint with the best held-out loss, as the newest readable checkpoint names it.

    Before any epoch has finished there is no held-out figure yet: then the newest checkpoint.
    """
    skipped: list[str] = []
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            trainer = read_json(path, TRAINER)
            best = trainer.get("best_step") if isinstance(trainer, dict) else None
        except CheckpointError as e:
            skipped.append(f"{path.name} is damaged ({e})")
            continue
        if skipped:
            warn(f"warning: {skipped[0]}; using {path.name}'s record of the best checkpoint")
        if best is None:
            return path
        chosen = checkpoint_dir(run_dir, best)
        if not chosen.is_dir():
            raise CheckpointError(f"best checkpoint {str(chosen)!r} is missing")
        return chosen
    why = f": {skipped[0]}" if skipped else ""
    raise CheckpointError(f"no checkpoint in {str(run_dir)!r}{why}: train one with `rnnlab train`")


def _remove(path: Path) -> None:
    """Delete a checkpoint directory: renamed out of the `step-*` names first, so that a kill
    during the deletion never leaves a half-deleted checkpoint behind."""
    doomed = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old.tmp")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def prune(run_dir: Path, step: int, keep: int, protect: Iterable[int] = ()) -> None:
    """After saving `step`: delete leftovers of interrupted saves, checkpoints newer than `step`
    (damaged ones a resume skipped), and all but the `keep` newest, sparing the best."""
    root = Path(run_dir) / CHECKPOINTS
    for p in root.glob(".step-*.tmp"):  # only this process writes here, and it is not saving
        shutil.rmtree(p, ignore_errors=True)
    older = [(s, p) for s, p in list_checkpoints(run_dir) if s <= step]
    kept = older[-keep:]
    spared = {*protect, *(s for s, _ in kept)}
    spared.update(b for b in (_best_step(p) for _, p in kept) if b is not None)
    for s, p in list_checkpoints(run_dir):
        if s > step or s not in spared:
            _remove(p)


# -- optimizer state ------------------------------------------------------------------------------


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
