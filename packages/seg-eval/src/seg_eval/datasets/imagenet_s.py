"""ImageNet-S (LUSSeg): ImageNet validation images with semantic masks, 919, 300 or 50 classes plus "other"."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np

from seg_eval.datasets.base import (
    BenchmarkDataset,
    DatasetLayoutError,
    LabelArray,
    _Item,
    available,
    read_rgb_png,
)

__all__ = ["IMAGENET_S_IGNORE_INDEX", "IMAGENET_S_VARIANTS", "ImageNetS"]

IMAGENET_S_IGNORE_INDEX = 1000
"""ImageNet-S marks ignored pixels with id 1000 (ids go up to 919, so 255 is a class here)."""
IMAGENET_S_VARIANTS: tuple[int, ...] = (919, 300, 50)

IMAGENET_S_LAYOUT = """\
imagenet-s/ImageNetS919/                       <- root (ImageNetS300, ImageNetS50; imagenet-s/ with variant=...)
  validation/<wnid>/<name>.JPEG
  validation-segmentation/<wnid>/<name>.png    RGB: id = R + 256*G; 0 other, 1-919 classes, 1000 ignored
  train-semi/<wnid>/<name>.JPEG, train-semi-segmentation/<wnid>/<name>.png    (split "train-semi")
ImageNetS_categories_im919.txt                 wnid of class id i on line i, in the root, its parent or a
                                               categories/ folder (from github.com/LUSSeg/ImageNet-S data/categories)
LOC_synset_mapping.txt or synset_words.txt     optional: "<wnid> <names>" lines giving readable class names"""

_NAME_FILES = ("LOC_synset_mapping.txt", "synset_words.txt")
_SPLIT_ALIASES = {"val": "validation"}


def _search_folders(root: Path) -> list[Path]:
    folders = [root, root / "categories", root.parent, root.parent / "categories", root.parent / "data" / "categories"]
    return [folder for folder in dict.fromkeys(folders) if folder.is_dir()]


class ImageNetS(BenchmarkDataset):
    """ImageNet-S validation (or train-semi) masks, as released by LUSSeg.

    Label 0 is "other" (called ``"background"`` here, the word ZUTIS prompts), labels 1-N the classes, 1000 is
    ignored; labels are int64 since ids exceed 255.

    The class order is not in the masks nor in the image folders: it is the line order of the release's
    ``ImageNetS_categories_im{N}.txt`` (wnids), which the data download does not contain. Put that file (from
    ``github.com/LUSSeg/ImageNet-S/tree/main/data/categories``) next to the data or pass ``categories_file``.
    Readable names come from an ImageNet ``LOC_synset_mapping.txt`` / ``synset_words.txt`` when one is found
    (first name of each synset; a repeated name gets its wnid appended, e.g. the two "crane" synsets); without one
    the class names are the wnids, and :attr:`names_are_wnids` is true. seg-eval ships no ImageNet-S name list.

    Args:
        root: ``ImageNetS919`` (or 300, 50), or the folder holding them together with ``variant``.
        split: ``"validation"`` (or ``"val"``) or ``"train-semi"``.
        variant: 919, 300 or 50; default: read from the root folder's name.
        categories_file: The ``ImageNetS_categories_im{N}.txt`` file, if not in a searched place.
        names_file: A ``<wnid> <name>, <name>`` file for readable names, if not in a searched place.

    Raises:
        DatasetLayoutError: A folder, the category list or a file is missing (the message shows the layout).
    """

    layout = IMAGENET_S_LAYOUT
    ignore_index = IMAGENET_S_IGNORE_INDEX

    def __init__(
        self,
        root: str | Path,
        split: str = "validation",
        *,
        variant: Literal[919, 300, 50] | None = None,
        categories_file: str | Path | None = None,
        names_file: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.root, self.split = Path(root), _SPLIT_ALIASES.get(split, split)
        self.variant = self._resolve_variant(variant)
        self.name = f"imagenet-s{self.variant}"
        image_dir, label_dir = self.root / self.split, self.root / f"{self.split}-segmentation"
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                found = [name for name in available(self.root, dirs=True) if not name.endswith("-segmentation")]
                raise self._fail(folder, f"splits found: {', '.join(found) or 'none'}")
        for label_path in sorted(label_dir.glob("*/*.png")):
            image_path = image_dir / label_path.parent.name / f"{label_path.stem}.JPEG"
            if not image_path.is_file():
                raise self._fail(image_path, f"the mask {label_path} has no image")
            self._items.append(_Item(image_path, label_path, f"{label_path.parent.name}/{label_path.stem}"))
        if not self._items:
            raise self._fail(label_dir / "<wnid>" / "<name>.png", f"{label_dir} holds no masks")
        self.wnids = self._read_categories(categories_file)
        self.class_names, self.names_are_wnids = self._class_names(names_file)

    def _resolve_variant(self, variant: int | None) -> int:
        if variant is not None:
            if variant not in IMAGENET_S_VARIANTS:
                raise ValueError(f"ImageNet-S variants are 919, 300 and 50, not {variant}")
            nested = self.root / f"ImageNetS{variant}"
            if nested.is_dir():
                self.root = nested
            return variant
        match = re.fullmatch(r"ImageNetS(\d+)", self.root.name)
        if match and int(match.group(1)) in IMAGENET_S_VARIANTS:
            return int(match.group(1))
        nested_found = [v for v in IMAGENET_S_VARIANTS if (self.root / f"ImageNetS{v}").is_dir()]
        if len(nested_found) == 1:
            self.root = self.root / f"ImageNetS{nested_found[0]}"
            return nested_found[0]
        raise DatasetLayoutError(
            f"ImageNet-S: cannot tell the variant of {self.root} (folder name is not ImageNetS919/300/50"
            f"{'; found ' + ', '.join(f'ImageNetS{v}' for v in nested_found) if nested_found else ''}); "
            f"pass variant=919, 300 or 50.\nExpected layout:\n{self.layout}"
        )

    def _read_categories(self, categories_file: str | Path | None) -> tuple[str, ...]:
        file_name = f"ImageNetS_categories_im{self.variant}.txt"
        if categories_file is not None:
            path = Path(categories_file)
            if not path.is_file():
                raise self._fail(path, "categories_file was given but does not exist")
        else:
            found = next((f / file_name for f in _search_folders(self.root) if (f / file_name).is_file()), None)
            if found is None:
                raise self._fail(
                    self.root / file_name,
                    f"The class order of ImageNet-S is only in {file_name} (not in the data download): get it from "
                    "https://github.com/LUSSeg/ImageNet-S/tree/main/data/categories and put it in the root, its "
                    "parent or a categories/ folder, or pass categories_file=...",
                )
            path = found
        wnids = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        if len(wnids) != self.variant or len(set(wnids)) != len(wnids):
            raise ValueError(f"{path} lists {len(wnids)} wnids ({len(set(wnids))} distinct); expected {self.variant}")
        self.categories_file = path
        return wnids

    def _class_names(self, names_file: str | Path | None) -> tuple[tuple[str, ...], bool]:
        path: Path | None = None
        if names_file is not None:
            path = Path(names_file)
            if not path.is_file():
                raise self._fail(path, "names_file was given but does not exist")
        else:
            path = next(
                (f / name for f in _search_folders(self.root) for name in _NAME_FILES if (f / name).is_file()), None
            )
        self.names_file = path
        if path is None:
            return ("background", *self.wnids), True
        words: dict[str, str] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            wnid, _, synset_names = line.strip().partition(" ")
            if wnid and synset_names:
                words[wnid] = synset_names.split(",")[0].strip()
        missing = [wnid for wnid in self.wnids if wnid not in words]
        if missing:
            raise ValueError(f"{path} has no names for {len(missing)} ImageNet-S wnids, e.g. {missing[:3]}")
        names = [words[wnid] for wnid in self.wnids]
        counts = Counter(names)
        unique = [
            f"{name} ({wnid})" if counts[name] > 1 else name for name, wnid in zip(names, self.wnids, strict=True)
        ]
        return ("background", *unique), False

    def _read_label(self, item: _Item) -> LabelArray:
        rgb = read_rgb_png(item.label_path).astype(np.int64)
        label = rgb[..., 0] + 256 * rgb[..., 1]
        bad = np.unique(label[(label > self.variant) & (label != self.ignore_index)])
        if bad.size:
            raise ValueError(
                f"{item.label_path} holds ids {bad[:8].tolist()}; ImageNet-S{self.variant} masks hold 0-{self.variant}"
                f" and {self.ignore_index} (id = R + 256*G)"
            )
        return label
