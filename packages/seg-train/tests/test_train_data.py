"""Resumable index batches, sharding by rank, device transfer."""

from __future__ import annotations

import dataclasses
from itertools import chain, islice
from typing import NamedTuple

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from seg_train import ResumableIndexBatches, move_to_device, shard_indices


def test_resuming_at_any_position_matches_skipping() -> None:
    index_batches = ResumableIndexBatches(10, batch_size=3, seed=4)  # 3 batches per epoch, one index dropped
    uninterrupted = list(islice(index_batches(0), 11))
    for start in (1, 3, 7):
        assert list(islice(index_batches(start), 11 - start)) == uninterrupted[start:]


def test_epochs_are_fresh_permutations() -> None:
    index_batches = ResumableIndexBatches(8, batch_size=4, seed=0)
    epochs = [sorted(chain.from_iterable(islice(index_batches(2 * epoch), 2))) for epoch in range(3)]
    assert all(epoch == list(range(8)) for epoch in epochs)
    assert index_batches.epoch_order(0) != index_batches.epoch_order(1)
    assert ResumableIndexBatches(8, 4, seed=1).epoch_order(0) != index_batches.epoch_order(0)


def test_unshuffled_order() -> None:
    in_order = ResumableIndexBatches(5, 2, shuffle=False, drop_last=False)
    assert list(islice(in_order(0), 4)) == [[0, 1], [2, 3], [4], [0, 1]]


def test_ranks_get_disjoint_equal_shards() -> None:
    shards = [ResumableIndexBatches(11, batch_size=2, seed=3, rank=rank, world_size=3) for rank in range(3)]
    assert [shard.batches_per_epoch for shard in shards] == [1, 1, 1]  # 11 -> 9 usable -> 3 per rank
    orders = [shard.epoch_order(0) for shard in shards]
    assert all(len(order) == 3 for order in orders)
    assert len(set().union(*map(set, orders))) == 9


def test_shard_indices() -> None:
    assert [list(shard_indices(10, rank=rank, world_size=3)) for rank in range(3)] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert list(shard_indices(4)) == [0, 1, 2, 3]  # a single process owns everything
    with pytest.raises(ValueError, match=r"rank: must be in \[0, world_size\) \(got rank=2, world_size=2\)"):
        shard_indices(4, rank=2, world_size=2)


def test_too_few_items_per_rank_is_explained() -> None:
    with pytest.raises(
        ValueError, match=r"num_items=10 leaves 5 items per rank \(world_size=2\), fewer than batch_size"
    ):
        ResumableIndexBatches(10, batch_size=8, rank=0, world_size=2)
    with pytest.raises(ValueError, match="start_batch"):
        ResumableIndexBatches(10, batch_size=2)(-1)


def test_works_as_a_dataloader_batch_sampler() -> None:
    dataset = TensorDataset(torch.arange(12))
    index_batches = ResumableIndexBatches(12, batch_size=4, seed=9)
    loader = DataLoader(dataset, batch_sampler=index_batches(2))
    (values,) = next(iter(loader))
    assert values.tolist() == next(islice(index_batches(0), 2, None))


class _Pair(NamedTuple):
    image: torch.Tensor
    name: str


@dataclasses.dataclass(frozen=True)
class _Sample:
    mask: torch.Tensor
    weight: float


def test_move_to_device_walks_nested_batches() -> None:
    batch = {
        "pair": _Pair(torch.ones(2), "a"),
        "samples": [_Sample(torch.zeros(1), 0.5)],
        "tuple": (torch.ones(1), 3),
    }
    moved = move_to_device(batch, torch.device("meta"))
    assert moved["pair"].image.device.type == "meta"
    assert moved["pair"].name == "a"
    assert isinstance(moved["pair"], _Pair)
    assert moved["samples"][0].mask.device.type == "meta"
    assert moved["samples"][0].weight == 0.5
    assert moved["tuple"][0].device.type == "meta"
    assert moved["tuple"][1] == 3
    assert batch["pair"].image.device.type == "cpu"  # the input is untouched
