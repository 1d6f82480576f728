"""The synthetic world as an evaluation dataset (the :class:`~seg_eval.datasets.SegmentationDataset` protocol).

The evaluator reads every benchmark through the same protocol: ``class_names``, ``ignore_index``, ``len`` and
``[i] -> Sample(image, label, image_id, instances)``. These adapters give the world that shape, from a written folder
(the way ``seg eval --dataset DIR`` sees it) or rendered in memory (no disk: tests and the demo). ``instances`` holds
the visible thing instances (non-empty masks, label = class id in ``class_names``), the ground truth of mask AP.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from seg_eval.datasets.base import Sample
from seg_eval.metrics.mask_ap import InstanceTargets
from seg_eval.world.classes import CLASSES, IGNORE_LABEL
from seg_eval.world.config import SPLITS, SplitName, WorldConfig
from seg_eval.world.dataset import WorldDataset
from seg_eval.world.io import Layout
from seg_eval.world.sample import WorldSample
from seg_eval.world.scene import render

__all__ = ["RenderedWorldBenchmark", "WorldBenchmark", "instance_targets"]

_WORLD_LABELS: dict[int, int] = {world_class.id: index for index, world_class in enumerate(CLASSES)}


def instance_targets(sample: WorldSample, labels: Mapping[int, int] | None = None) -> InstanceTargets:
    """The ground truth of mask AP of a world image: its visible thing instances with a non-empty mask.

    Args:
        sample: The rendered or read-back image.
        labels: World class id -> label id in the dataset's ``class_names``; default the world's own class table
            (label id = class id).

    Returns:
        ``[M, H, W]`` bool masks and ``[M]`` int64 labels, in painting order (``M`` may be 0).
    """
    table = _WORLD_LABELS if labels is None else labels
    masks = sample.instance_masks()
    visible = [int(index) for index in np.flatnonzero(masks.reshape(masks.shape[0], -1).any(axis=1))]
    return InstanceTargets(
        masks=masks[visible],
        labels=np.array([table[sample.instances[index].class_id] for index in visible], dtype=np.int64),
    )


class WorldBenchmark:
    """A written split of the world, read back as an evaluation dataset.

    Args:
        root: The folder ``seg world generate`` wrote (it holds ``world.json``).
        split: Which split (``val``, ``test`` or ``shift`` for evaluation).
        fmt: The layout to read when both were written.
    """

    name = "synthetic"
    ignore_index = IGNORE_LABEL

    def __init__(self, root: str | Path, split: SplitName = "val", fmt: Layout | None = None) -> None:
        self._dataset: WorldDataset[WorldSample] = WorldDataset(root, split, fmt)
        self.root = Path(root)
        self.split = split
        self.class_names: tuple[str, ...] = tuple(c.name for c in self._dataset.info.classes)
        self._labels = {world_class.id: index for index, world_class in enumerate(self._dataset.info.classes)}

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, index: int) -> Sample:
        sample = self._dataset[index]
        return Sample(
            image=sample.image,
            label=sample.semantic,
            image_id=sample.stem,
            instances=instance_targets(sample, self._labels),
        )


class RenderedWorldBenchmark:
    """Images ``0 .. num - 1`` of a split, rendered in memory on demand.

    Args:
        config: The world (its seed included): evaluate on seeds the model was not trained or tuned on.
        split: Which split.
        num: Number of images.
    """

    name = "synthetic"
    ignore_index = IGNORE_LABEL
    class_names: tuple[str, ...] = tuple(c.name for c in CLASSES)

    def __init__(self, config: WorldConfig, split: SplitName = "val", num: int = 100) -> None:
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        if num < 1:
            raise ValueError(f"num must be >= 1, got {num}")
        self.config = config
        self.split = split
        self.num = num

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.num:
            raise IndexError(f"index {index} out of range for {self.num} images")
        sample = render(self.config, self.split, index)
        return Sample(
            image=sample.image, label=sample.semantic, image_id=sample.stem, instances=instance_targets(sample)
        )
