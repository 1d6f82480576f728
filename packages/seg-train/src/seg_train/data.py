"""Resumable data input: the batches-factory contract, a resumable shuffled index sampler, device transfer.

The Trainer never holds a data loader. It takes a **batches factory**: a callable ``batches(start_batch)``
returning an iterable of batches, where ``start_batch`` is the number of batches this rank has already
consumed (``completed_steps * grad_accum_steps``; 0 for a fresh run). The contract:

* ``batches(k)`` yields exactly what ``batches(0)`` yields after skipping its first ``k`` items,
* batch contents depend only on their position (and fixed seeds), never on global RNG state or wall time,
* it yields at least ``(max_steps - completed_steps) * grad_accum_steps`` batches (loop over epochs inside),
* under DDP each rank yields its own shard, the same number of batches on every rank.

That makes a resumed run see the same batches as an uninterrupted one. :class:`ResumableIndexBatches` fulfils
it for an indexable dataset: it jumps straight to any position (no replay) and shards by rank.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
import torch

from seg_train.distributed import distributed_context, shard_indices

__all__ = ["BatchesFactory", "ResumableIndexBatches", "move_to_device"]

BatchT = TypeVar("BatchT")

BatchesFactory = Callable[[int], Iterable[BatchT]]
"""``batches(start_batch) -> Iterable[batch]``: see the module docstring for the contract."""

_SEED_MODULUS = 2**63


@dataclass(frozen=True)
class ResumableIndexBatches:
    """Endless epochs of (shuffled) index batches for one rank; call it with a start position to resume.

    Epoch ``e`` is a permutation of ``range(num_items)`` drawn from ``(seed, e)`` alone, sharded across ranks with
    :func:`~seg_train.distributed.shard_indices`, then cut into batches of ``batch_size``. Calling the object with
    ``start_batch`` computes the epoch and offset directly, so resuming costs nothing.

    Use it as a batches factory (after mapping indices to data) or as a DataLoader ``batch_sampler``::

        index_batches = ResumableIndexBatches(len(dataset), batch_size=32, seed=config.seed)
        batches = lambda start: DataLoader(dataset, batch_sampler=index_batches(start), num_workers=4)

    Attributes:
        num_items: Dataset size.
        batch_size: Indices per batch (per rank).
        seed: Shuffling seed; the same on every rank (ranks must agree on the permutation to split it).
        shuffle: Draw a new permutation per epoch; ``False`` keeps ``0..num_items-1`` order.
        drop_last: Drop each epoch's last, smaller batch (keeps batch shapes fixed).
        rank: This rank; default from the current process group.
        world_size: Number of ranks; default from the current process group.
    """

    num_items: int
    batch_size: int
    seed: int = 0
    shuffle: bool = True
    drop_last: bool = True
    rank: int | None = None
    world_size: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1 (got {self.batch_size})")
        if self.batches_per_epoch == 0:
            per_rank = len(self._shard())
            raise ValueError(
                f"num_items={self.num_items} leaves {per_rank} items per rank (world_size={self._world_size()}), "
                f"fewer than batch_size={self.batch_size}: lower batch_size or set drop_last=False"
            )

    def _world_size(self) -> int:
        return self.world_size if self.world_size is not None else distributed_context().world_size

    def _shard(self) -> range:
        return shard_indices(self.num_items, rank=self.rank, world_size=self.world_size)

    @property
    def batches_per_epoch(self) -> int:
        """Batches one rank yields per epoch."""
        per_rank = len(self._shard())
        if self.drop_last:
            return per_rank // self.batch_size
        return -(-per_rank // self.batch_size)

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's indices for ``epoch``, in the order they are batched."""
        if self.shuffle:
            generator = np.random.default_rng([self.seed % _SEED_MODULUS, epoch])
            order = generator.permutation(self.num_items)
        else:
            order = np.arange(self.num_items)
        return [int(order[position]) for position in self._shard()]

    def __call__(self, start_batch: int = 0) -> Iterator[list[int]]:
        """Yield index batches forever, starting with batch number ``start_batch`` of this rank.

        Raises:
            ValueError: Negative ``start_batch``.
        """
        if start_batch < 0:
            raise ValueError(f"start_batch: must be >= 0 (got {start_batch})")
        return self._iterate(start_batch)

    def _iterate(self, start_batch: int) -> Iterator[list[int]]:
        per_epoch = self.batches_per_epoch
        epoch, offset = divmod(start_batch, per_epoch)
        while True:
            order = self.epoch_order(epoch)
            for batch_number in range(offset, per_epoch):
                yield order[batch_number * self.batch_size : (batch_number + 1) * self.batch_size]
            epoch, offset = epoch + 1, 0


def move_to_device(batch: BatchT, device: torch.device, *, non_blocking: bool = False) -> BatchT:
    """Move every tensor in a nested batch to ``device``; other leaves are returned as they are.

    Walks dicts and other mappings (rebuilt as dicts), lists, tuples, named tuples and dataclass instances.

    Args:
        batch: A tensor or a container of tensors.
        device: The target device.
        non_blocking: Passed to ``Tensor.to`` (worth it with pinned CPU memory on CUDA).
    """
    return cast(BatchT, _move(batch, device, non_blocking))


def _move(value: Any, device: torch.device, non_blocking: bool) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, Mapping):
        return {key: _move(item, device, non_blocking) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(_move(item, device, non_blocking) for item in value))
    if isinstance(value, list | tuple):
        return type(value)(_move(item, device, non_blocking) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            field.name: _move(getattr(value, field.name), device, non_blocking)
            for field in dataclasses.fields(value)
            if field.init
        }
        return dataclasses.replace(value, **changes)
    return value
