"""PASCAL VOC 2012 (21 labels, or 20 without background) and PASCAL Context (60, or 59 without background)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from seg_eval.datasets.base import (
    IGNORE_INDEX,
    BenchmarkDataset,
    LabelArray,
    _Item,
    available,
    check_values,
    choose_root,
    lookup_table,
    read_id_list,
    read_index_png,
)
from seg_eval.presets.class_names import read_class_names

__all__ = ["PascalContext", "PascalVOC"]

VOC_LAYOUT = """\
VOCdevkit/VOC2012/                      <- root (VOCdevkit/ is accepted too)
  JPEGImages/<id>.jpg
  SegmentationClass/<id>.png            palette PNG: 0 background, 1-20 classes, 255 void
  ImageSets/Segmentation/<split>.txt    one image id per line (train, val, trainval)"""

CONTEXT_LAYOUT = """\
VOCdevkit/VOC2010/                      <- root (VOCdevkit/ is accepted too); mmseg's converted release
  JPEGImages/<id>.jpg
  SegmentationClassContext/<id>.png     0 background, 1-59 classes (tools/convert_datasets/pascal_context.py)
  ImageSets/SegmentationContext/<split>.txt    train, val"""


class _PascalLayout(BenchmarkDataset):
    """Shared reading of the VOCdevkit layouts: ids from an ImageSets file, ``<id>.jpg`` and ``<id>.png``."""

    folder_names: ClassVar[tuple[str, ...]] = ()
    default_label_dir: ClassVar[str] = ""
    image_set_dir: ClassVar[str] = ""
    raw_classes: ClassVar[int] = 0
    """Number of label values in the files (0 .. raw_classes - 1, plus 255)."""

    def __init__(
        self, root: str | Path, split: str, *, class_file: str, with_background: bool, label_dir: str | None
    ) -> None:
        super().__init__()
        self.root = choose_root(Path(root), self.folder_names, "JPEGImages")
        self.split = split
        self.label_dir = label_dir or self.default_label_dir
        image_dir, labels = self.root / "JPEGImages", self.root / self.label_dir
        sets = self.root / self.image_set_dir
        for folder in (image_dir, labels, sets):
            if not folder.is_dir():
                raise self._fail(folder)
        id_file = sets / f"{split}.txt"
        if not id_file.is_file():
            raise self._fail(id_file, f"splits found in {sets}: {', '.join(available(sets, suffix='.txt')) or 'none'}")
        for image_id in read_id_list(id_file):
            item = _Item(image_dir / f"{image_id}.jpg", labels / f"{image_id}.png", image_id)
            for path in (item.image_path, item.label_path):
                if not path.is_file():
                    raise self._fail(path, f"{id_file} lists {image_id!r} but its file is missing")
            self._items.append(item)
        names = read_class_names(class_file)
        self.with_background = with_background
        self.class_names = names if with_background else names[1:]
        if with_background:
            self._table = lookup_table({value: value for value in range(self.raw_classes)})
        else:  # background becomes ignore, every class moves down by one (mmseg's reduce_zero_label)
            self._table = lookup_table({value: value - 1 for value in range(1, self.raw_classes)})
        self._allowed = np.zeros(256, dtype=bool)
        self._allowed[: self.raw_classes] = True
        self._allowed[IGNORE_INDEX] = True

    def _read_label(self, item: _Item) -> LabelArray:
        raw = read_index_png(item.label_path)
        check_values(raw, self._allowed, item.label_path, f"0-{self.raw_classes - 1} and 255")
        return self._table[raw]


class PascalVOC(_PascalLayout):
    """PASCAL VOC 2012 segmentation, in its released VOCdevkit layout.

    With background (``num_classes=21``, the GroupViT/TCL/SCLIP "VOC21" protocol) labels are the file values. Without
    (``num_classes=20``, "VOC20" of MaskCLIP/ReCLIP++/SCLIP) background pixels are ignored and class ``k`` becomes
    ``k - 1``. 255 (object borders, difficult regions) is ignored in both.

    Args:
        root: ``VOCdevkit/VOC2012`` (or ``VOCdevkit``).
        split: An ``ImageSets/Segmentation`` list: ``"val"`` (1,449 images, the benchmark), ``"train"``, ...
        num_classes: 21 (with background) or 20 (without).
        label_dir: Label folder, e.g. ``"SegmentationClassAug"`` for the SBD-augmented labels.

    Raises:
        DatasetLayoutError: A folder, list or file of the layout is missing (the message shows the layout).
    """

    layout = VOC_LAYOUT
    folder_names = ("VOC2012",)
    default_label_dir = "SegmentationClass"
    image_set_dir = "ImageSets/Segmentation"
    raw_classes = 21

    def __init__(
        self, root: str | Path, split: str = "val", *, num_classes: Literal[21, 20] = 21, label_dir: str | None = None
    ) -> None:
        if num_classes not in (21, 20):
            raise ValueError(f"PASCAL VOC has 21 labels with background or 20 without, not num_classes={num_classes}")
        self.name = f"voc{num_classes}"
        super().__init__(root, split, class_file="voc21", with_background=num_classes == 21, label_dir=label_dir)


class PascalContext(_PascalLayout):
    """PASCAL Context (59 most frequent classes), in mmseg's converted layout inside VOCdevkit/VOC2010.

    ``num_classes=60`` keeps background as label 0 (GroupViT/TCL/SCLIP "Context60"); ``num_classes=59`` ignores
    background and shifts the classes down by one (MaskCLIP/ReCLIP++ "Context59").

    Args:
        root: ``VOCdevkit/VOC2010`` (or ``VOCdevkit``).
        split: ``"val"`` (5,105 images, the benchmark) or ``"train"``.
        num_classes: 60 (with background) or 59 (without).
        label_dir: Label folder (default ``"SegmentationClassContext"``).

    Raises:
        DatasetLayoutError: A folder, list or file of the layout is missing (the message shows the layout).
    """

    layout = CONTEXT_LAYOUT
    folder_names = ("VOC2010",)
    default_label_dir = "SegmentationClassContext"
    image_set_dir = "ImageSets/SegmentationContext"
    raw_classes = 60

    def __init__(
        self, root: str | Path, split: str = "val", *, num_classes: Literal[60, 59] = 60, label_dir: str | None = None
    ) -> None:
        if num_classes not in (60, 59):
            raise ValueError(
                f"PASCAL Context has 60 labels with background or 59 without, not num_classes={num_classes}"
            )
        self.name = f"context{num_classes}"
        super().__init__(root, split, class_file="context60", with_background=num_classes == 60, label_dir=label_dir)
