"""COCO-Stuff (171 fine classes, or the 27 coarse classes) and COCO-Object (80 things + background).

COCO-Stuff's label PNGs (``stuffthingmaps_trainval2017``) store ``COCO category id - 1``: 0-181, where 11 ids
(12 street sign, 26 hat, 29 shoe, 30 eye glasses, 45 plate, 66 mirror, 68 window, 69 desk, 71 door, 83 blender,
91 hair brush) are unused, and 255 for unlabelled pixels. The 171 used ids, in order, are the fine classes; the 27
coarse classes are their supercategories (``coco-stuff171_to_27.tsv``).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from seg_eval.datasets.base import (
    IGNORE_INDEX,
    BenchmarkDataset,
    DatasetLayoutError,
    LabelArray,
    _Item,
    available,
    check_values,
    lookup_table,
    read_id_list,
    read_index_png,
)
from seg_eval.presets.class_names import read_class_mapping, read_class_names

__all__ = [
    "COCO_STUFF_UNUSED_IDS",
    "COCOObject",
    "COCOStuff",
    "coco_stuff_coarse_table",
    "coco_stuff_fine_ids",
    "coco_stuff_fine_to_coarse",
]

COCO_STUFF_UNUSED_IDS: tuple[int, ...] = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
"""COCO category ids (1-based) that no annotation uses; the label PNGs hold ``id - 1``."""

_THING_IDS_END = 91
"""Label-PNG values below this are things (COCO ids 1-91), the rest stuff (COCO ids 92-182)."""

COCO_STUFF_LAYOUT = """\
cocostuff/                                   <- root
  images/<split>/<id>.jpg                    (or <split>/<id>.jpg, COCO's own image folders)
  annotations/<split>/<id>.png               stuffthingmaps_trainval2017: COCO id - 1 (0-181), 255 unlabelled
                                             (or stuffthingmaps_trainval2017/<split>/<id>.png; mmseg's
                                             <id>_labelTrainIds.png 0-170 are read when the raw maps are absent)
  split: val2017 (5,000 images) or train2017"""

COCO_OBJECT_LAYOUT = """\
coco/                                        <- root
  images/<split>/<id>.jpg                    (or <split>/<id>.jpg)
  and one of (tried in this order):
  annotations/<split>/<id>_instanceTrainIds.png   GroupViT/TCL converted maps: 0 background, 1-80 things, 255
  annotations/<split>/<id>.png                    COCO-Stuff stuffthingmaps (things kept, stuff -> background)
  annotations/instances_<split>.json              COCO instances (rasterised: things on background 0)
  split: val2017 (5,000 images) or train2017"""

_SPLIT_ALIASES = {"val": "val2017", "train": "train2017"}


@cache
def coco_stuff_fine_ids() -> npt.NDArray[np.uint8]:
    """The 171 label-PNG values (``COCO id - 1``) of the fine classes, in class order."""
    unused = {category_id - 1 for category_id in COCO_STUFF_UNUSED_IDS}
    ids = np.array([value for value in range(182) if value not in unused], dtype=np.uint8)
    ids.setflags(write=False)
    return ids


@cache
def coco_stuff_fine_to_coarse() -> npt.NDArray[np.uint8]:
    """``(171,)`` coarse class (0-26) of each fine class (0-170), from ``coco-stuff171_to_27.tsv``."""
    fine, coarse = read_class_names("coco-stuff171"), read_class_names("coco-stuff27")
    mapping = read_class_mapping("coco-stuff171_to_27")
    if tuple(mapping) != fine or not set(mapping.values()) <= set(coarse):
        raise RuntimeError("coco-stuff171_to_27.tsv does not match coco-stuff171.txt / coco-stuff27.txt")
    table = np.array([coarse.index(mapping[name]) for name in fine], dtype=np.uint8)
    table.setflags(write=False)
    return table


def coco_stuff_coarse_table() -> npt.NDArray[np.uint8]:
    """A 256-entry table sending fine labels (0-170) to coarse labels (0-26), 255 and unknown values to 255.

    Index it with a fine label map or prediction to get the coarse one (ReCo evaluates COCO-Stuff-27 by predicting
    the 171 fine classes and mapping the argmax): ``coarse = coco_stuff_coarse_table()[fine]``.
    """
    return lookup_table(dict(enumerate(int(value) for value in coco_stuff_fine_to_coarse())))


def _coco_split(split: str) -> str:
    return _SPLIT_ALIASES.get(split, split)


def _image_dir(root: Path, split: str) -> Path | None:
    for folder in (root / "images" / split, root / split):
        if folder.is_dir():
            return folder
    return None


def _label_files(folder: Path, suffix: str) -> list[Path]:
    """``*.png`` in ``folder`` ending in ``suffix``; plain ``*.png`` (suffix ``""``) excludes the converted maps."""
    files = sorted(path for path in folder.glob(f"*{suffix}.png"))
    if not suffix:
        files = [path for path in files if not path.stem.endswith(("_labelTrainIds", "_instanceTrainIds"))]
    return files


class COCOStuff(BenchmarkDataset):
    """COCO-Stuff 164k: 171 fine classes (MaskCLIP, SCLIP) or the 27 coarse classes (ReCo, ReCLIP++, STEGO).

    Args:
        root: Folder holding ``images/`` and ``annotations/`` (see :attr:`layout`).
        split: ``"val2017"`` (or ``"val"``) or ``"train2017"``.
        num_classes: 171 (fine) or 27 (coarse).
        image_list: Optional text file of image ids to keep (e.g. the curated
            ``curated/val2017/Coco164kFull_Stuff_Coarse.txt`` list of IIC/STEGO); default: every label file.

    Raises:
        DatasetLayoutError: A folder or file of the layout is missing (the message shows the layout).
    """

    layout = COCO_STUFF_LAYOUT

    def __init__(
        self,
        root: str | Path,
        split: str = "val2017",
        *,
        num_classes: Literal[171, 27] = 171,
        image_list: str | Path | None = None,
    ) -> None:
        super().__init__()
        if num_classes not in (171, 27):
            raise ValueError(f"COCO-Stuff has 171 fine or 27 coarse classes, not num_classes={num_classes}")
        self.name = f"coco-stuff{num_classes}"
        self.root, self.split = Path(root), _coco_split(split)
        image_dir = _image_dir(self.root, self.split)
        if image_dir is None:
            raise self._fail(self.root / "images" / self.split, self._splits_hint())
        label_dir = next(
            (
                d
                for d in (
                    self.root / "annotations" / self.split,
                    self.root / "stuffthingmaps_trainval2017" / self.split,
                )
                if d.is_dir()
            ),
            None,
        )
        if label_dir is None:
            raise self._fail(self.root / "annotations" / self.split, self._splits_hint())
        files, self.label_format = _label_files(label_dir, ""), "stuffthingmaps"
        if not files:
            files, self.label_format = _label_files(label_dir, "_labelTrainIds"), "trainids"
        if not files:
            raise self._fail(label_dir / "<id>.png", f"{label_dir} holds no label PNGs")
        by_id = {path.stem.removesuffix("_labelTrainIds"): path for path in files}
        ids = sorted(by_id) if image_list is None else read_id_list(Path(image_list))
        for image_id in ids:
            if image_id not in by_id:
                raise self._fail(label_dir / f"{image_id}.png", f"{image_list} lists {image_id!r}")
            image_path = image_dir / f"{image_id}.jpg"
            if not image_path.is_file():
                raise self._fail(image_path, f"the label {by_id[image_id].name} has no image")
            self._items.append(_Item(image_path, by_id[image_id], image_id))

        fine_to_coarse = coco_stuff_fine_to_coarse()
        if num_classes == 171:
            self.class_names = read_class_names("coco-stuff171")
            by_fine = dict(enumerate(range(171)))
        else:
            self.class_names = read_class_names("coco-stuff27")
            by_fine = {fine: int(coarse) for fine, coarse in enumerate(fine_to_coarse)}
        self._allowed = np.zeros(256, dtype=bool)
        self._allowed[IGNORE_INDEX] = True
        if self.label_format == "stuffthingmaps":
            raw_of_fine = coco_stuff_fine_ids()
            self._table = lookup_table({int(raw_of_fine[fine]): label for fine, label in by_fine.items()})
            self._allowed[:182] = True  # unused ids may appear in third-party maps: they become ignore
        else:
            self._table = lookup_table(by_fine)
            self._allowed[:171] = True

    def _splits_hint(self) -> str:
        found = sorted(
            set(available(self.root / "images", dirs=True)) | set(available(self.root / "annotations", dirs=True))
        )
        return f"splits found: {', '.join(found) or 'none'}"

    def _read_label(self, item: _Item) -> LabelArray:
        raw = read_index_png(item.label_path)
        what = "0-181 and 255" if self.label_format == "stuffthingmaps" else "0-170 and 255"
        check_values(raw, self._allowed, item.label_path, what)
        return self._table[raw]


class COCOObject(BenchmarkDataset):
    """COCO-Object: the 80 COCO thing classes on background (GroupViT/TCL/SCLIP, ZUTIS's COCO2017), 81 labels.

    The ground truth is the COCO instance annotations made semantic. Three sources, tried in this order unless
    ``source`` names one:

    * ``"converted"``: GroupViT/TCL's ``<id>_instanceTrainIds.png`` maps, read as stored.
    * ``"stuffthingmaps"``: COCO-Stuff maps with things kept (1-80) and stuff made background (0), unlabelled
      pixels ignored: exactly how GroupViT's ``convert_coco_object.py`` makes the converted maps.
    * ``"instances"``: ``annotations/instances_<split>.json`` rasterised with pycocotools: background 0, then crowd
      regions, then the other instances from the largest to the smallest (small objects stay visible where masks
      overlap). No pixel is ignored. With a COCO-format file of other categories, the class names are the file's.

    Args:
        root: Folder holding ``images/`` and ``annotations/`` (see :attr:`layout`).
        split: ``"val2017"`` (or ``"val"``) or ``"train2017"``.
        source: ``"auto"``, ``"converted"``, ``"stuffthingmaps"`` or ``"instances"``.

    Raises:
        DatasetLayoutError: No annotation source or no image folder was found (the message shows the layout).
    """

    name = "coco-object"
    layout = COCO_OBJECT_LAYOUT

    def __init__(
        self,
        root: str | Path,
        split: str = "val2017",
        *,
        source: Literal["auto", "converted", "stuffthingmaps", "instances"] = "auto",
    ) -> None:
        super().__init__()
        self.root, self.split = Path(root), _coco_split(split)
        image_dir = _image_dir(self.root, self.split)
        if image_dir is None:
            raise self._fail(self.root / "images" / self.split)
        label_dir = self.root / "annotations" / self.split
        json_path = self.root / "annotations" / f"instances_{self.split}.json"
        candidates: dict[str, bool] = {
            "converted": label_dir.is_dir() and bool(_label_files(label_dir, "_instanceTrainIds")),
            "stuffthingmaps": label_dir.is_dir() and bool(_label_files(label_dir, "")),
            "instances": json_path.is_file(),
        }
        if source == "auto":
            chosen = next((name for name, found in candidates.items() if found), None)
            if chosen is None:
                raise self._fail(json_path, "no annotation source found (none of the three in the layout)")
        elif source in candidates:
            chosen = source
            if not candidates[source]:
                missing = json_path if source == "instances" else label_dir / "<id>.png"
                raise self._fail(missing, f"source={source!r} was asked for")
        else:
            raise ValueError(f"source must be auto, converted, stuffthingmaps or instances, not {source!r}")
        self.source: str = chosen
        self.class_names = read_class_names("coco-object81")
        self._coco: Any = None
        self._category_label: dict[int, int] = {}
        if chosen == "instances":
            self._init_instances(json_path, image_dir)
            return
        suffix = "_instanceTrainIds" if chosen == "converted" else ""
        for path in _label_files(label_dir, suffix):
            image_id = path.stem.removesuffix("_instanceTrainIds")
            image_path = image_dir / f"{image_id}.jpg"
            if not image_path.is_file():
                raise self._fail(image_path, f"the label {path.name} has no image")
            self._items.append(_Item(image_path, path, image_id))
        self._allowed = np.zeros(256, dtype=bool)
        self._allowed[IGNORE_INDEX] = True
        if chosen == "converted":
            self._table = lookup_table({value: value for value in range(81)})
            self._allowed[:81] = True
        else:
            raw_of_fine = coco_stuff_fine_ids()
            things = {int(raw_of_fine[fine]): fine + 1 for fine in range(80)}
            stuff = dict.fromkeys(range(_THING_IDS_END, 182), 0)
            self._table = lookup_table(things | stuff)
            self._allowed[:182] = True

    def _init_instances(self, json_path: Path, image_dir: Path) -> None:
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
            self._coco = COCO(str(json_path))
        categories = sorted(self._coco.loadCats(self._coco.getCatIds()), key=lambda category: category["id"])
        if not categories:
            raise DatasetLayoutError(f"{json_path} defines no categories")
        names = tuple(str(category["name"]) for category in categories)
        if names != self.class_names[1:]:
            self.class_names = ("background", *names)  # a COCO-format dataset of other categories
        if len(self.class_names) > IGNORE_INDEX:
            raise ValueError(f"{json_path} has {len(names)} categories; uint8 labels hold at most 254 (255 = ignore)")
        self._category_label = {int(category["id"]): index + 1 for index, category in enumerate(categories)}
        for image_id in sorted(self._coco.getImgIds()):
            info = self._coco.loadImgs(image_id)[0]
            image_path = image_dir / str(info["file_name"])
            if not image_path.is_file():
                raise self._fail(image_path, f"{json_path.name} lists image {image_id} but its file is missing")
            self._items.append(_Item(image_path, json_path, Path(str(info["file_name"])).stem, key=int(image_id)))

    def _read_label(self, item: _Item) -> LabelArray:
        if self._coco is None:
            raw = read_index_png(item.label_path)
            what = "0-80 and 255" if self.source == "converted" else "0-181 and 255"
            check_values(raw, self._allowed, item.label_path, what)
            return self._table[raw]
        image_number = item.key
        info = self._coco.loadImgs(image_number)[0]
        label = np.zeros((int(info["height"]), int(info["width"])), dtype=np.uint8)
        annotations = self._coco.loadAnns(self._coco.getAnnIds(imgIds=image_number, iscrowd=None))
        # Crowd regions first, then instances from large to small: where masks overlap the smaller object wins.
        annotations.sort(key=lambda ann: (not ann.get("iscrowd", 0), -float(ann.get("area", 0.0))))
        with warnings.catch_warnings():
            # pycocotools' Cython decoder trips numpy 2's __array__(copy=...) deprecation; the masks are correct.
            warnings.simplefilter("ignore", DeprecationWarning)
            for annotation in annotations:
                mask = self._coco.annToMask(annotation).astype(bool)
                label[mask] = self._category_label[int(annotation["category_id"])]
        return label
