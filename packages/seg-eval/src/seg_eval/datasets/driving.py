"""Driving scenes: Cityscapes (19 train-id classes, or the 27 classes of the unsupervised protocol) and KITTI-STEP."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from seg_eval.datasets.base import (
    IGNORE_INDEX,
    BenchmarkDataset,
    LabelArray,
    _Item,
    available,
    check_values,
    lookup_table,
    read_index_png,
    read_rgb_png,
)
from seg_eval.presets.class_names import read_class_names

__all__ = ["CITYSCAPES_TRAIN_IDS", "KITTISTEP", "Cityscapes"]

CITYSCAPES_TRAIN_IDS: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
"""Cityscapes labelId -> trainId of the 19 evaluated classes (cityscapesScripts ``labels.py``); others are ignored."""

_FIRST_NON_VOID_ID = 7
"""labelIds 0-6 are void (unlabeled, ego vehicle, rectification border, out of roi, static, dynamic, ground)."""
_LAST_ID = 33

CITYSCAPES_LAYOUT = """\
cityscapes/                                   <- root
  leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png     labelIds 0-33 (cityscapesScripts)
  split: val (500 images), train, test (no labels)"""

KITTI_STEP_LAYOUT = """\
kitti-step/                                   <- root
  images/<split>/<sequence>/<frame>.png       (or <split>/<sequence>/<frame>.png)
  panoptic_maps/<split>/<sequence>/<frame>.png    RGB: R = semantic train id (0-18, 255 void), G*256+B = instance
  split: val or train"""


class Cityscapes(BenchmarkDataset):
    """Cityscapes fine annotations, read from ``*_gtFine_labelIds.png``.

    ``num_classes=19``: the standard train ids (MaskCLIP, SCLIP, ReCLIP++); every other labelId is ignored.
    ``num_classes=27``: ``labelId - 7`` for labelIds 7-33 (PiCIE/STEGO/ReCo); the void ids 0-6 are ignored.

    Args:
        root: Folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``"val"`` (the benchmark) or ``"train"``.
        num_classes: 19 or 27.

    Raises:
        DatasetLayoutError: A folder or file of the layout is missing (the message shows the layout).
    """

    layout = CITYSCAPES_LAYOUT

    def __init__(self, root: str | Path, split: str = "val", *, num_classes: Literal[19, 27] = 19) -> None:
        super().__init__()
        if num_classes not in (19, 27):
            raise ValueError(f"Cityscapes is evaluated on 19 or 27 classes, not num_classes={num_classes}")
        self.name = f"cityscapes{num_classes}"
        self.root, self.split = Path(root), split
        image_dir, label_dir = self.root / "leftImg8bit" / split, self.root / "gtFine" / split
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                found = available(folder.parent, dirs=True)
                raise self._fail(folder, f"splits found in {folder.parent}: {', '.join(found) or 'none'}")
        for label_path in sorted(label_dir.glob("*/*_gtFine_labelIds.png")):
            stem = label_path.name.removesuffix("_gtFine_labelIds.png")
            image_path = image_dir / label_path.parent.name / f"{stem}_leftImg8bit.png"
            if not image_path.is_file():
                raise self._fail(image_path, f"the label {label_path.name} has no image")
            self._items.append(_Item(image_path, label_path, f"{label_path.parent.name}/{stem}"))
        if not self._items:
            raise self._fail(label_dir / "<city>" / "<stem>_gtFine_labelIds.png", f"{label_dir} holds no labelIds")
        if num_classes == 19:
            self.class_names = read_class_names("cityscapes19")
            self._table = lookup_table(CITYSCAPES_TRAIN_IDS)
        else:
            self.class_names = read_class_names("cityscapes27")
            ids = range(_FIRST_NON_VOID_ID, _LAST_ID + 1)
            self._table = lookup_table({label_id: label_id - _FIRST_NON_VOID_ID for label_id in ids})

    def _read_label(self, item: _Item) -> LabelArray:
        # Any value outside 0-33 (the license plate's -1 written as 255 by some tools) is ignored.
        return self._table[read_index_png(item.label_path)]


class KITTISTEP(BenchmarkDataset):
    """KITTI-STEP (19 Cityscapes classes) from its panoptic maps: the semantic label is the red channel.

    ReCo evaluates it at full resolution (1242x375 frames).

    Args:
        root: Folder holding ``panoptic_maps/`` and the images (``images/<split>`` or ``<split>``).
        split: ``"val"`` (the benchmark) or ``"train"``.

    Raises:
        DatasetLayoutError: A folder or file of the layout is missing (the message shows the layout).
    """

    name = "kitti-step"
    layout = KITTI_STEP_LAYOUT

    def __init__(self, root: str | Path, split: str = "val") -> None:
        super().__init__()
        self.root, self.split = Path(root), split
        label_dir = self.root / "panoptic_maps" / split
        if not label_dir.is_dir():
            found = available(self.root / "panoptic_maps", dirs=True)
            raise self._fail(label_dir, f"splits found in panoptic_maps/: {', '.join(found) or 'none'}")
        image_dir = next((d for d in (self.root / "images" / split, self.root / split) if d.is_dir()), None)
        if image_dir is None:
            raise self._fail(self.root / "images" / split)
        for label_path in sorted(label_dir.glob("*/*.png")):
            image_path = image_dir / label_path.parent.name / label_path.name
            if not image_path.is_file():
                raise self._fail(image_path, f"the panoptic map {label_path} has no image")
            self._items.append(_Item(image_path, label_path, f"{label_path.parent.name}/{label_path.stem}"))
        if not self._items:
            raise self._fail(label_dir / "<sequence>" / "<frame>.png", f"{label_dir} holds no panoptic maps")
        self.class_names = read_class_names("kitti-step19")
        self._allowed = np.zeros(256, dtype=bool)
        self._allowed[:19] = True
        self._allowed[IGNORE_INDEX] = True

    def _read_label(self, item: _Item) -> LabelArray:
        semantic = np.ascontiguousarray(read_rgb_png(item.label_path)[..., 0])
        check_values(semantic, self._allowed, item.label_path, "0-18 and 255 in the red channel")
        return semantic
