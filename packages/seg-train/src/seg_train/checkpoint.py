"""Atomic training checkpoints: safetensors weights plus a small ``weights_only``-loadable state file.

Layout under a run's ``out_dir``::

    checkpoints/
      step_00000100/
        model.safetensors     # the model's state dict (shared/tied tensors stored once)
        training_state.pt     # optimizer, scheduler position, step, GradScaler, RNG states, extra state
      step_00000200/
      latest                  # text file naming the newest complete checkpoint: "step_00000200"

A checkpoint is written into a hidden ``.tmp-*`` directory, flushed to disk, then renamed into place, and only
then does ``latest`` move (itself replaced atomically). A crash at any moment leaves either the previous
checkpoint or the new one, never a half-written directory under a ``step_*`` name. Stale temporary directories
from killed runs are removed by the next save.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from seg_train.distributed import unwrap_model

__all__ = [
    "CHECKPOINTS_DIRNAME",
    "LATEST_FILENAME",
    "MODEL_FILENAME",
    "STATE_FILENAME",
    "checkpoint_name",
    "latest_checkpoint",
    "list_checkpoints",
    "load_model_weights",
    "load_training_state",
    "save_checkpoint",
]

CHECKPOINTS_DIRNAME = "checkpoints"
MODEL_FILENAME = "model.safetensors"
STATE_FILENAME = "training_state.pt"
LATEST_FILENAME = "latest"
_STEP_PREFIX = "step_"
_TMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint after ``step`` optimiser steps: ``step_00000100``."""
    if step < 0:
        raise ValueError(f"step: must be >= 0 (got {step})")
    return f"{_STEP_PREFIX}{step:08d}"


def _step_of(name: str) -> int | None:
    if not name.startswith(_STEP_PREFIX):
        return None
    digits = name[len(_STEP_PREFIX) :]
    return int(digits) if digits.isdigit() else None


def _is_complete(directory: Path) -> bool:
    return (directory / MODEL_FILENAME).is_file() and (directory / STATE_FILENAME).is_file()


def list_checkpoints(out_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Every complete checkpoint of a run as ``(step, directory)``, oldest first."""
    root = Path(out_dir) / CHECKPOINTS_DIRNAME
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        step = _step_of(entry.name)
        if step is not None and entry.is_dir() and _is_complete(entry):
            found.append((step, entry))
    return sorted(found)


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint of a run, or ``None`` when it has none.

    Follows the ``latest`` pointer; when the pointer is missing or names an incomplete directory (written by
    hand, or a crash between rename and pointer update), falls back to the highest complete step.
    """
    root = Path(out_dir) / CHECKPOINTS_DIRNAME
    pointer = root / LATEST_FILENAME
    if pointer.is_file():
        target = root / pointer.read_text(encoding="utf-8").strip()
        if _step_of(target.name) is not None and target.is_dir() and _is_complete(target):
            return target
    checkpoints = list_checkpoints(out_dir)
    return checkpoints[-1][1] if checkpoints else None


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(path: Path) -> None:
    # Makes a rename durable on POSIX; directories cannot be opened this way on Windows.
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _write_latest_pointer(root: Path, name: str) -> None:
    temporary = root / f"{_TMP_PREFIX}{LATEST_FILENAME}-{uuid.uuid4().hex}"
    temporary.write_text(name + "\n", encoding="utf-8")
    _fsync_file(temporary)
    os.replace(temporary, root / LATEST_FILENAME)
    _fsync_directory(root)


def save_checkpoint(
    out_dir: str | os.PathLike[str],
    step: int,
    model: nn.Module,
    training_state: Mapping[str, Any],
    *,
    keep: int,
) -> Path:
    """Write the checkpoint of ``step`` atomically, point ``latest`` at it and keep only the newest ``keep``.

    Args:
        out_dir: The run directory; checkpoints go to ``out_dir/checkpoints``.
        step: Optimiser steps taken so far.
        model: The model (a DDP wrapper is unwrapped); saved with ``safetensors.torch.save_model``, which stores
            shared or tied tensors once.
        training_state: Everything else (tensors, numbers, strings, lists, dicts); saved with ``torch.save`` and
            read back with ``torch.load(weights_only=True)``, so it must hold no arbitrary objects.
        keep: How many checkpoints to keep, newest first (the one written now always survives).

    Returns:
        The checkpoint directory.

    Raises:
        ValueError: ``keep < 1``.
    """
    if keep < 1:
        raise ValueError(f"keep: must be >= 1 (got {keep}); set keep_checkpoints to 1 or more")
    root = Path(out_dir) / CHECKPOINTS_DIRNAME
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    temporary = root / f"{_TMP_PREFIX}{final.name}-{uuid.uuid4().hex}"
    temporary.mkdir()
    try:
        save_model(unwrap_model(model), str(temporary / MODEL_FILENAME), metadata={"step": str(step)})
        torch.save(dict(training_state), temporary / STATE_FILENAME)
        for written in (temporary / MODEL_FILENAME, temporary / STATE_FILENAME):
            _fsync_file(written)
        if final.exists():  # the same step saved again (e.g. a resumed run that reached it anew)
            displaced = root / f"{_TMP_PREFIX}old-{final.name}-{uuid.uuid4().hex}"
            os.replace(final, displaced)
            shutil.rmtree(displaced, ignore_errors=True)
        os.replace(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _fsync_directory(root)
    _write_latest_pointer(root, final.name)
    _prune(root, keep=keep, newest=final)
    return final


def _prune(root: Path, *, keep: int, newest: Path) -> None:
    for entry in root.iterdir():
        if entry.name.startswith(_TMP_PREFIX) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)  # left behind by a run killed mid-save
    steps = sorted(
        (step, entry)
        for entry in root.iterdir()
        if (step := _step_of(entry.name)) is not None and entry.is_dir() and entry != newest
    )
    surplus = len(steps) - (keep - 1)
    for _, entry in steps[: max(surplus, 0)]:
        shutil.rmtree(entry, ignore_errors=True)


def load_model_weights(checkpoint_dir: str | os.PathLike[str], model: nn.Module, *, device: torch.device) -> None:
    """Load ``model.safetensors`` of a checkpoint into ``model`` (strict; tied weights stay tied).

    Raises:
        FileNotFoundError: The checkpoint has no weights file.
        RuntimeError: The weights do not match the model (missing or unexpected keys, listed).
    """
    path = Path(checkpoint_dir) / MODEL_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint weights not found: {path}")
    try:
        load_model(unwrap_model(model), str(path), strict=True, device=str(device))
    except RuntimeError as error:
        raise RuntimeError(f"checkpoint {path} does not match the model: {error}") from error


def load_training_state(checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``training_state.pt`` of a checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    Raises:
        FileNotFoundError: The checkpoint has no state file.
    """
    path = Path(checkpoint_dir) / STATE_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint state not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict of training state, found {type(state).__name__}")
    return state
