"""Map-style datasets of the world (``torch.utils.data.DataLoader`` takes them as they are; torch is imported
only by :func:`to_tensors`).

* :class:`WorldDataset` reads a split written by :func:`~seg_eval.world.generate_split`, in either layout.
* :class:`RenderedWorldDataset` renders on the fly: fresh data at no disk cost (rendering is faster than reading).

Both return :class:`~seg_eval.world.WorldSample` (numpy arrays), or what ``transform`` makes of it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import numpy as np

from seg_core import ConfigError
from seg_eval.world.classes import IGNORE_LABEL, NUM_CLASSES
from seg_eval.world.config import SPLITS, SplitName, WorldConfig
from seg_eval.world.io import (
    Layout,
    WorldInfo,
    _check_label_range,
    _CocoSplit,
    _instances_from_map,
    _read_array,
    _read_metadata,
    _sample_from_files,
    list_splits,
    read_world,
)
from seg_eval.world.sample import WorldSample, file_stem
from seg_eval.world.scene import render

__all__ = ["RenderedWorldDataset", "WorldDataset", "to_tensors"]

SampleT = TypeVar("SampleT")


class WorldDataset(Generic[SampleT]):
    """A written split, read back from its COCO or VOC layout.

    The arrays equal those of :func:`~seg_eval.world.render` (images too, unless written as JPEG); the amodal
    ``stuff_map`` is not stored, so it is ``None``.

    Args:
        root: The directory :func:`~seg_eval.world.generate_split` wrote.
        split: Which split.
        fmt: Layout to read; default: the only one written (COCO when both were).
        transform: Applied to each sample (e.g. :func:`to_tensors`).
    """

    @overload
    def __init__(
        self: WorldDataset[WorldSample], root: str | Path, split: SplitName, fmt: Layout | None = None
    ) -> None: ...

    @overload
    def __init__(
        self: WorldDataset[SampleT],
        root: str | Path,
        split: SplitName,
        fmt: Layout | None = None,
        *,
        transform: Callable[[WorldSample], SampleT],
    ) -> None: ...

    def __init__(
        self,
        root: str | Path,
        split: SplitName,
        fmt: Layout | None = None,
        *,
        transform: Callable[[WorldSample], Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.split: SplitName = split
        self.info: WorldInfo = read_world(self.root)
        layouts = list_splits(self.root).get(split, ())
        if not layouts:
            raise ConfigError(f"split {split!r} was not (completely) written under {self.root}")
        if fmt is not None and fmt not in layouts:
            raise ConfigError(f"split {split!r} under {self.root} was written as {', '.join(layouts)}, not {fmt}")
        self.fmt: Layout = fmt or layouts[0]
        self._transform = transform
        self._metadata = _read_metadata(self.root, split)
        self._coco = _CocoSplit(self.root, split) if self.fmt == "coco" else None
        if self.fmt == "voc":
            stems = (self.root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text(encoding="utf-8").split()
            if len(stems) != len(self._metadata):
                raise ConfigError(f"{self.root}: {len(stems)} stems in ImageSets but {len(self._metadata)} captions")

    def __len__(self) -> int:
        return len(self._metadata)

    def __getitem__(self, index: int) -> SampleT:
        if not 0 <= index < len(self._metadata):
            raise IndexError(f"index {index} out of range for {len(self._metadata)} images")
        meta = self._metadata[index]
        stem = file_stem(self.split, int(meta["index"]))
        if self._coco is not None:
            image = _read_array(self.root / "images" / self.split / self._coco.file_name(int(meta["image_id"])))
            semantic_path = self.root / "annotations" / f"semantic_{self.split}" / f"{stem}.png"
            semantic = _read_array(semantic_path)
            instance_map, _ = self._coco.instance_map(int(meta["image_id"]), semantic.shape)
            instance_map[semantic == IGNORE_LABEL] = IGNORE_LABEL  # void borders live in the semantic PNGs
        else:
            jpeg = self.root / "JPEGImages" / f"{stem}.jpg"
            image = _read_array(jpeg if jpeg.is_file() else jpeg.with_suffix(".png"))
            semantic_path = self.root / "SegmentationClass" / f"{stem}.png"
            semantic = _read_array(semantic_path)
            instance_map = _read_array(self.root / "SegmentationObject" / f"{stem}.png")
        _check_label_range(semantic, semantic_path)
        instances = _instances_from_map(instance_map, semantic, meta["instances"])
        sample = _sample_from_files(
            self.split, meta=meta, image=image, semantic=semantic, instance_map=instance_map, instances=instances
        )
        return self._transform(sample) if self._transform is not None else sample  # type: ignore[return-value]


class RenderedWorldDataset(Generic[SampleT]):
    """Images ``0 .. length - 1`` of a split, rendered when asked for (a pure function of config, split, index).

    Args:
        config: The world.
        split: Which split.
        length: Number of images.
        transform: Applied to each sample (e.g. :func:`to_tensors`).
    """

    @overload
    def __init__(
        self: RenderedWorldDataset[WorldSample], config: WorldConfig, split: SplitName, length: int
    ) -> None: ...

    @overload
    def __init__(
        self: RenderedWorldDataset[SampleT],
        config: WorldConfig,
        split: SplitName,
        length: int,
        *,
        transform: Callable[[WorldSample], SampleT],
    ) -> None: ...

    def __init__(
        self,
        config: WorldConfig,
        split: SplitName,
        length: int,
        *,
        transform: Callable[[WorldSample], Any] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        if length < 0:
            raise ConfigError(f"length must be >= 0, got {length}")
        self.config = config
        self.split: SplitName = split
        self.length = length
        self._transform = transform

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> SampleT:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} images")
        sample = render(self.config, self.split, index)
        return self._transform(sample) if self._transform is not None else sample  # type: ignore[return-value]


def to_tensors(sample: WorldSample) -> dict[str, Any]:
    """Torch tensors of a sample, ready for the default ``DataLoader`` collate.

    Returns:
        ``image``: ``(3, H, W)`` float32 in [0, 1]; ``semantic`` and ``instance_map``: ``(H, W)`` int64;
        ``labels``: ``(NUM_CLASSES,)`` float32 multi-hot of the classes present; ``caption`` (str); ``noisy``
        (bool); ``index`` (int).
    """
    import torch

    labels = torch.zeros(NUM_CLASSES, dtype=torch.float32)
    present = list(sample.labels)
    if present:
        labels[torch.tensor(present)] = 1.0
    return {
        "image": torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1))).float().div_(255.0),
        "semantic": torch.from_numpy(sample.semantic.astype(np.int64)),
        "instance_map": torch.from_numpy(sample.instance_map.astype(np.int64)),
        "labels": labels,
        "caption": sample.caption,
        "noisy": sample.noisy,
        "index": sample.index,
    }
