"""Checkpoints: written to a temporary folder, fsynced, then renamed; verified when read.

Only the driver writes them (workers hand their state over; see driver.py), so a cluster
needs no shared disk. RUN/checkpoints/step-NNNNNNNN/ holds model.npz, optim.npz and
meta.json, which records
the step, epoch, sampler and RNG state and the sha256 of each .npz. Arrays are loaded
with allow_pickle=False: a checkpoint can never run code. A checkpoint whose checksum
does not match is reported and skipped, so the previous one is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np

FILES = ("model.npz", "optim.npz")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or does not match its checksums."""


class TrainState(NamedTuple):
    """What a checkpoint holds: model arrays, optimizer arrays, and meta (with "step")."""
    model: dict
    optim: dict
    meta: dict


def checkpoint_dir(run_dir, step: int) -> Path:
    """RUN/checkpoints/step-NNNNNNNN: the folder of the checkpoint taken at step."""
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}"


def sha256(path: Path) -> str:
    """The hex sha256 of the file at path, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir, state: TrainState) -> Path:
    """Write one checkpoint atomically and return its folder."""
    step = int(state.meta["step"])
    final = checkpoint_dir(run_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _write_files(tmp, state)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # on a full disk, give the space back
        raise
    if final.exists():  # a rerun of the same step: replace it whole, never merge
        trash = final.parent / f".old-{final.name}-{os.getpid()}"
        os.rename(final, trash)
        shutil.rmtree(trash)
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    return final


def _write_files(tmp: Path, state: TrainState) -> None:
    np.savez(tmp / "model.npz", **state.model)
    np.savez(tmp / "optim.npz", **state.optim)
    meta = dict(state.meta, sha256={name: sha256(tmp / name) for name in FILES})
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    for name in FILES + ("meta.json",):
        _fsync_file(tmp / name)
    _fsync_dir(tmp)


def load_checkpoint(path) -> TrainState:
    """Read and verify one checkpoint."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}/meta.json is unreadable: {error}") from None
    for name in FILES:
        expected = meta.get("sha256", {}).get(name)
        if not (path / name).exists():
            raise CheckpointError(f"{path}/{name} is missing")
        actual = sha256(path / name)
        if actual != expected:
            raise CheckpointError(
                f"{path}/{name} has sha256 {actual[:12]}..., but meta.json records "
                f"{str(expected)[:12]}...: the file is corrupt or was changed")
    arrays = []
    for name in FILES:
        with np.load(path / name, allow_pickle=False) as npz:
            arrays.append({key: npz[key] for key in npz.files})
    return TrainState(arrays[0], arrays[1], meta)


def list_checkpoints(run_dir) -> list[Path]:
    """Checkpoint folders, newest step first (temporary folders are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.name.startswith("step-")), reverse=True)


def prune_checkpoints(run_dir, keep: int, also_keep: Path | None = None) -> list[Path]:
    """Delete all but the `keep` newest checkpoints (and also_keep); the deleted folders."""
    doomed = [p for p in list_checkpoints(run_dir)[keep:] if p != also_keep]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def sweep_temporaries(run_dir) -> list[Path]:
    """Delete what killed writers left: .tmp-step-* / .old-step-* folders, temp finals."""
    root = Path(run_dir)
    stray = [*(root / "checkpoints").glob(".tmp-step-*"),
             *(root / "checkpoints").glob(".old-step-*"), *(root / "final").glob(".model-*")]
    for path in stray:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stray


def latest_valid_checkpoint(run_dir, report=print) -> tuple[Path, TrainState] | None:
    """The newest checkpoint that verifies, as (its folder, its state), or None."""
    for path in list_checkpoints(run_dir):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as error:
            report(f"skipping checkpoint {path.name}: {error}")
    return None


def save_final_model(run_dir, model_arrays: dict) -> Path:
    """RUN/final/model.npz, written to a temporary name and renamed."""
    final = Path(run_dir) / "final"
    final.mkdir(parents=True, exist_ok=True)
    tmp = final / f".model-{os.getpid()}.npz"
    try:
        np.savez(tmp, **model_arrays)
        _fsync_file(tmp)
        os.replace(tmp, final / "model.npz")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(final)
    return final / "model.npz"
