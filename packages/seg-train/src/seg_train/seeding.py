"""Deterministic seeding and RNG state capture for python, numpy and torch (CPU and CUDA).

Rank ``r`` of a distributed run is seeded with ``seed + r``: random augmentations and dropout differ between
replicas (as they should; identical noise on every replica wastes the extra data), yet every rank is
reproducible. Model initialisation does not depend on the offset because DistributedDataParallel broadcasts
rank 0's parameters when it wraps the model.

RNG states are captured as plain lists and tensors so that a state file holding them loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "RngSnapshot",
    "capture_rng_state",
    "deterministic_algorithms",
    "restore_rng_snapshot",
    "restore_rng_state",
    "seed_everything",
    "take_rng_snapshot",
]

_SEED_MODULUS = 2**32  # numpy's legacy seeding accepts [0, 2**32)


def seed_everything(seed: int, *, rank: int = 0) -> int:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every CUDA device).

    Args:
        seed: The run's seed (``TrainConfig.seed``); any integer, reduced modulo 2**32.
        rank: The process rank; rank ``r`` is seeded with ``seed + r``.

    Returns:
        The seed actually used.
    """
    effective_seed = (seed + rank) % _SEED_MODULUS
    random.seed(effective_seed)
    np.random.seed(effective_seed)
    torch.manual_seed(effective_seed)  # also seeds every CUDA device
    return effective_seed


def _cuda_in_use() -> bool:
    # Only when CUDA is already in use: querying it would otherwise initialise a context on every device.
    return torch.cuda.is_available() and bool(torch.cuda.is_initialized())  # type: ignore[no-untyped-call]


def capture_rng_state() -> dict[str, Any]:
    """Snapshot every global RNG of this process as lists and tensors (``weights_only``-loadable).

    Returns:
        ``{"python": [...], "numpy": {...}, "torch": uint8 tensor, "cuda": [uint8 tensor per device]}``; the
        ``cuda`` entry only when CUDA is initialised.
    """
    python_version, python_internal, python_gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": [python_version, list(python_internal), python_gauss],
        "numpy": {
            "bit_generator": str(numpy_state["bit_generator"]),
            "key": [int(value) for value in numpy_state["state"]["key"]],
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if _cuda_in_use():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG snapshot taken by :func:`capture_rng_state` (the ``cuda`` entry when CUDA is present)."""
    python_version, python_internal, python_gauss = state["python"]
    random.setstate((int(python_version), tuple(int(value) for value in python_internal), python_gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": np.asarray(numpy_state["key"], dtype=np.uint32), "pos": int(numpy_state["pos"])},
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda")
    if cuda_states is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([cuda_state.cpu() for cuda_state in cuda_states][: torch.cuda.device_count()])


@dataclass(frozen=True)
class RngSnapshot:
    """A fast, in-memory RNG snapshot (not serialisable as is; see :func:`capture_rng_state` for that)."""

    python: Any
    numpy: Any
    torch_cpu: torch.Tensor
    cuda: list[torch.Tensor] | None


def take_rng_snapshot() -> RngSnapshot:
    """Snapshot every global RNG cheaply (tens of microseconds), e.g. at each step boundary."""
    cuda = torch.cuda.get_rng_state_all() if _cuda_in_use() else None
    return RngSnapshot(random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda)


def restore_rng_snapshot(snapshot: RngSnapshot) -> None:
    """Put back the RNG states of :func:`take_rng_snapshot`."""
    random.setstate(snapshot.python)
    np.random.set_state(snapshot.numpy)
    torch.set_rng_state(snapshot.torch_cpu)
    if snapshot.cuda is not None:
        torch.cuda.set_rng_state_all(snapshot.cuda)


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Within the block, make torch pick deterministic kernels (and fail on ops that have none).

    Sets ``torch.use_deterministic_algorithms``, cuDNN's ``deterministic``/``benchmark`` flags and, for cuBLAS,
    ``CUBLAS_WORKSPACE_CONFIG`` when it is unset; everything but the environment variable is restored on exit.
    A no-op when ``enabled`` is false.
    """
    if not enabled:
        yield
        return
    previous_algorithms = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous_algorithms, warn_only=previous_warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous_cudnn
