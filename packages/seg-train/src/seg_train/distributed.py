"""``torch.distributed`` data parallelism, launched with ``torchrun``.

``torchrun --nproc-per-node N train.py`` starts N processes with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` in their environment. :func:`init_distributed` reads them and joins the
process group (gloo on CPU, nccl on CUDA); in a plain ``python train.py`` run it is a no-op returning a
single-process context, so the same script runs both ways.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from seg_core import ConfigError

__all__ = [
    "DistributedContext",
    "barrier",
    "distributed_context",
    "init_distributed",
    "run_as_forward",
    "shard_indices",
    "shutdown_distributed",
    "unwrap_model",
]

_LAUNCH_VARIABLES = ("RANK", "MASTER_ADDR", "MASTER_PORT")

B = TypeVar("B")
T = TypeVar("T")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the run.

    Attributes:
        rank: Global rank, 0 for the main process.
        local_rank: Rank on this machine (selects the GPU).
        world_size: Number of processes; 1 when not distributed.
        device: The device this process trains on: ``cuda:<local_rank>`` when CUDA is available, else CPU.
    """

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes checkpoints and logs."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}: expected an integer (got {raw!r}); launch with torchrun"
        ) from None


def _default_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def distributed_context() -> DistributedContext:
    """The current process's context, from the initialised process group or else from the environment."""
    local_rank = _env_int("LOCAL_RANK", 0)
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(
            rank=dist.get_rank(),
            local_rank=local_rank,
            world_size=dist.get_world_size(),
            device=_default_device(local_rank),
        )
    return DistributedContext(rank=0, local_rank=0, world_size=1, device=_default_device(0))


def init_distributed(backend: str | None = None, *, timeout: timedelta | None = None) -> DistributedContext:
    """Join the process group when launched by torchrun with ``WORLD_SIZE > 1``; idempotent.

    Args:
        backend: ``gloo`` or ``nccl``; default nccl when CUDA is available, else gloo.
        timeout: Collective timeout (torch's default when ``None``).

    Returns:
        The process's context (single-process when ``WORLD_SIZE`` is unset or 1).

    Raises:
        ConfigError: ``WORLD_SIZE > 1`` without the other launch variables, or without torch.distributed.
    """
    if dist.is_available() and dist.is_initialized():
        return distributed_context()
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return distributed_context()
    missing = [name for name in _LAUNCH_VARIABLES if not os.environ.get(name)]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} not set; launch with "
            "`torchrun --nproc-per-node N script.py` (or unset WORLD_SIZE for a single process)"
        )
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={world_size} but this torch build has no torch.distributed support")
    local_rank = _env_int("LOCAL_RANK", 0)
    if torch.cuda.is_available():
        torch.cuda.set_device(_default_device(local_rank))
    chosen_backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if timeout is None:
        dist.init_process_group(backend=chosen_backend)
    else:
        dist.init_process_group(backend=chosen_backend, timeout=timeout)
    return distributed_context()


def shutdown_distributed() -> None:
    """Leave the process group (call once at the end of a torchrun script); a no-op when not initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank; a no-op in a single process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def shard_indices(num_items: int, *, rank: int | None = None, world_size: int | None = None) -> range:
    """The indices of ``num_items`` that belong to ``rank``: every ``world_size``-th, starting at ``rank``.

    The tail that does not divide evenly is dropped, so every rank gets ``num_items // world_size`` items and
    takes the same number of steps (DDP needs that: a rank with an extra batch would wait forever).

    Args:
        num_items: Size of the dataset (or of one epoch's permutation).
        rank: This process's rank; default from the current process group.
        world_size: Number of processes; default from the current process group.

    Raises:
        ValueError: Negative ``num_items`` or a rank outside ``[0, world_size)``.
    """
    if rank is None or world_size is None:
        context = distributed_context()
        rank = context.rank if rank is None else rank
        world_size = context.world_size if world_size is None else world_size
    if num_items < 0:
        raise ValueError(f"num_items: must be >= 0 (got {num_items})")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank: must be in [0, world_size) (got rank={rank}, world_size={world_size})")
    usable = num_items - num_items % world_size
    return range(rank, usable, world_size)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside a DistributedDataParallel (or ``torch.compile``) wrapper; else ``model``."""
    inner = model
    while True:
        if isinstance(inner, nn.parallel.DistributedDataParallel):
            inner = inner.module
            continue
        original = getattr(inner, "_orig_mod", None)  # torch.compile's OptimizedModule
        if isinstance(original, nn.Module):
            inner = original
            continue
        return inner


def run_as_forward(model: nn.Module, compute: Callable[[nn.Module, B], T], batch: B) -> T:
    """``compute(inner, batch)`` on the module inside ``model``, run as ``model``'s forward when ``model`` is a DDP
    wrapper.

    DistributedDataParallel averages the ranks' gradients only after a forward through the wrapper (which prepares
    the reducer for the backward); a step that calls another method of the unwrapped model (PGSeg's
    ``training_forward``, SimCon's prediction head) would leave each rank with its own gradients and the replicas
    would drift apart. Here the wrapper's forward runs ``compute`` instead of the module's ``forward`` (for that one
    call), so the step's whole computation is the forward DDP sees; ``batch`` goes through the wrapper as the
    forward's input (DDP moves it to the wrapper's device, where the engine already put it). Return only tensors
    the loss uses (or detached ones, or plain numbers) from ``compute``: with ``find_unused_parameters`` DDP treats
    every parameter reachable from the output as used. Without a wrapper (one process) this is just
    ``compute(model, batch)``.

    Args:
        model: The model the engine passes to the step (DDP-wrapped under ``torchrun``).
        compute: The step's computation on the unwrapped module and the batch.
        batch: The step's batch.
    """
    if not isinstance(model, nn.parallel.DistributedDataParallel):
        return compute(model, batch)
    inner = model.module
    inner.__dict__["forward"] = lambda moved: compute(inner, moved)  # shadows the class's forward for this call
    try:
        result: T = model(batch)
    finally:
        del inner.__dict__["forward"]
    return result
