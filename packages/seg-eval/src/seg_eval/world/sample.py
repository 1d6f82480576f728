"""``WorldSample``: one image of the world with all of its ground truth (in memory or read back from disk)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seg_eval.world.captions import CaptionKind
from seg_eval.world.classes import CLASSES, IGNORE_LABEL, NUM_CLASSES
from seg_eval.world.config import SplitName

__all__ = ["WorldInstance", "WorldSample", "file_stem", "mask_bbox"]


def file_stem(split: SplitName, index: int) -> str:
    """File name (without extension) of image ``index`` of ``split`` in every layout, e.g. ``val_000042``."""
    return f"{split}_{index:06d}"


def mask_bbox(mask: npt.NDArray[np.bool_], top: int = 0, left: int = 0) -> tuple[int, int, int, int]:
    """COCO ``(x, y, width, height)`` of a mask's pixels, offset by ``(top, left)``; zeros for an empty mask."""
    rows_hit, cols_hit = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows_hit.size == 0:
        return (0, 0, 0, 0)
    first_row, last_row, first_col, last_col = int(rows_hit[0]), int(rows_hit[-1]), int(cols_hit[0]), int(cols_hit[-1])
    return (left + first_col, top + first_row, last_col - first_col + 1, last_row - first_row + 1)


@dataclass(frozen=True)
class WorldInstance:
    """One visible thing instance; its pixels are ``sample.instance_map == number``.

    Attributes:
        number: 1-based instance number, in painting order (later numbers are painted over earlier ones).
        class_id: Its class (label value in the semantic map).
        bbox: ``(x, y, width, height)`` of its visible pixels, COCO style, in pixels.
        area: Number of visible pixels.
        context_id: The stuff class it was placed on (``None`` when read from a layout that does not store it).
        typical: Whether that stuff is its class's typical stuff.
    """

    number: int
    class_id: int
    bbox: tuple[int, int, int, int]
    area: int
    context_id: int | None = None
    typical: bool | None = None

    @property
    def name(self) -> str:
        """Class name."""
        return CLASSES[self.class_id].name


@dataclass(frozen=True, eq=False)
class WorldSample:
    """An image with its caption and ground truth.

    Attributes:
        split: The split it belongs to.
        index: Its 0-based index in the split (the COCO image id is ``index + 1``).
        image: ``(H, W, 3)`` uint8 RGB.
        semantic: ``(H, W)`` uint8 class ids, 255 = ignore (void border, when configured).
        instance_map: ``(H, W)`` uint8: 0 = no thing, ``k`` = ``instances[k - 1]``, 255 = void border.
        instances: The visible thing instances, in painting order.
        caption: Its caption (possibly noisy).
        caption_kind: ``"clean"``, or for noisy captions ``"junk"`` / ``"mismatch"``.
        mentioned: Class ids the caption names (for a mismatch: classes that are not in the image).
        stuff_map: ``(H, W)`` uint8 amodal stuff layer (what lies behind the things); ``None`` when read from disk.
    """

    split: SplitName
    index: int
    image: npt.NDArray[np.uint8]
    semantic: npt.NDArray[np.uint8]
    instance_map: npt.NDArray[np.uint8]
    instances: tuple[WorldInstance, ...]
    caption: str
    caption_kind: CaptionKind
    mentioned: tuple[int, ...]
    stuff_map: npt.NDArray[np.uint8] | None = None

    @property
    def noisy(self) -> bool:
        """Whether the caption is unrelated to the image (web noise)."""
        return self.caption_kind != "clean"

    @property
    def image_id(self) -> int:
        """COCO image id (``index + 1``)."""
        return self.index + 1

    @property
    def stem(self) -> str:
        """File name without extension in every layout."""
        return file_stem(self.split, self.index)

    @property
    def labels(self) -> dict[int, int]:
        """Image-level labels: class id -> number of pixels, for every class present (ignore pixels excluded)."""
        counts = np.bincount(self.semantic.ravel(), minlength=256)[:NUM_CLASSES]
        return {int(class_id): int(counts[class_id]) for class_id in np.flatnonzero(counts)}

    def instance_masks(self) -> npt.NDArray[np.bool_]:
        """``(N, H, W)`` boolean visible masks of ``instances``, in order."""
        numbers = np.array([instance.number for instance in self.instances], dtype=np.uint8)
        masks: npt.NDArray[np.bool_] = self.instance_map[None, :, :] == numbers[:, None, None]
        return masks

    def ignore_mask(self) -> npt.NDArray[np.bool_]:
        """``(H, W)`` pixels labelled 255 (to be ignored by metrics)."""
        ignored: npt.NDArray[np.bool_] = self.semantic == IGNORE_LABEL
        return ignored
