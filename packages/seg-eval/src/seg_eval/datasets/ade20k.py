"""ADE20K SceneParsing (ADEChallengeData2016), 150 classes."""

from __future__ import annotations

from pathlib import Path

from seg_eval.datasets.base import (
    BenchmarkDataset,
    LabelArray,
    _Item,
    available,
    choose_root,
    lookup_table,
    read_index_png,
)
from seg_eval.presets.class_names import read_class_names

__all__ = ["ADE20K"]

ADE20K_LAYOUT = """\
ADEChallengeData2016/                         <- root (its parent is accepted too)
  images/<split>/ADE_<split>_<n>.jpg
  annotations/<split>/ADE_<split>_<n>.png     0 = other (ignored), 1-150 the classes
  split: validation (2,000 images) or training"""

_SPLIT_ALIASES = {"val": "validation", "train": "training"}


class ADE20K(BenchmarkDataset):
    """ADE20K, 150 classes: annotation value ``v`` in 1-150 is class ``v - 1``; 0 ("other") becomes 255 (ignored).

    Args:
        root: ``ADEChallengeData2016`` (or its parent).
        split: ``"validation"`` (or ``"val"``) or ``"training"`` (or ``"train"``).

    Raises:
        DatasetLayoutError: A folder or file of the layout is missing (the message shows the layout).
    """

    name = "ade20k"
    layout = ADE20K_LAYOUT

    def __init__(self, root: str | Path, split: str = "validation") -> None:
        super().__init__()
        self.root = choose_root(Path(root), ("ADEChallengeData2016",), "annotations")
        self.split = _SPLIT_ALIASES.get(split, split)
        image_dir, label_dir = self.root / "images" / self.split, self.root / "annotations" / self.split
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                found = available(folder.parent, dirs=True)
                raise self._fail(folder, f"splits found in {folder.parent}: {', '.join(found) or 'none'}")
        for label_path in sorted(label_dir.glob("*.png")):
            image_path = image_dir / f"{label_path.stem}.jpg"
            if not image_path.is_file():
                raise self._fail(image_path, f"the label {label_path.name} has no image")
            self._items.append(_Item(image_path, label_path, label_path.stem))
        if not self._items:
            raise self._fail(label_dir / "<id>.png", f"{label_dir} holds no label PNGs")
        self.class_names = read_class_names("ade20k150")
        # uint8 holds 0-255: values above 150 cannot occur, and become ignore like 0.
        self._table = lookup_table({value: value - 1 for value in range(1, 151)})

    def _read_label(self, item: _Item) -> LabelArray:
        return self._table[read_index_png(item.label_path)]
