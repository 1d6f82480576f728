"""Recognise a benchmark from its folder structure, and open it by name or by layout.

:func:`detect_layout` looks at a root folder and names the released layout it is in; :func:`open_dataset` opens the
right reader. Layouts from elsewhere (the synthetic world, a user's own data) plug in with :func:`register_layout`:
registered layouts are tried before the built-in ones, most recently registered first.

::

    from seg_eval.datasets import open_dataset, register_layout

    dataset = open_dataset("data/VOCdevkit/VOC2012")                  # PascalVOC, 21 labels, split "val"
    dataset = open_dataset("data/VOCdevkit/VOC2012", name="voc20")    # the same images, without background
    register_layout("mine", lambda root: (root / "mine.json").is_file(), lambda root, split: MyDataset(root, split))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from seg_core import ConfigError
from seg_eval.datasets.ade20k import ADE20K
from seg_eval.datasets.base import DatasetLayoutError, SegmentationDataset
from seg_eval.datasets.coco import COCOObject, COCOStuff
from seg_eval.datasets.driving import KITTISTEP, Cityscapes
from seg_eval.datasets.imagenet_s import IMAGENET_S_VARIANTS, ImageNetS
from seg_eval.datasets.pascal import PascalContext, PascalVOC

__all__ = [
    "DATASET_NAMES",
    "Detector",
    "Opener",
    "dataset_names",
    "detect_layout",
    "list_layouts",
    "open_dataset",
    "register_layout",
    "unregister_layout",
]

Detector = Callable[[Path], bool]
"""Says whether a root folder is in a layout."""
Opener = Callable[[Path, str | None], SegmentationDataset]
"""Opens a root folder of a layout for a split (``None``: the layout's default split)."""


def _open_voc(num_classes: int) -> Opener:
    def opener(root: Path, split: str | None) -> SegmentationDataset:
        return PascalVOC(root, split or "val", num_classes=21 if num_classes == 21 else 20)

    return opener


def _open_context(num_classes: int) -> Opener:
    def opener(root: Path, split: str | None) -> SegmentationDataset:
        return PascalContext(root, split or "val", num_classes=60 if num_classes == 60 else 59)

    return opener


def _open_coco_stuff(num_classes: int) -> Opener:
    def opener(root: Path, split: str | None) -> SegmentationDataset:
        return COCOStuff(root, split or "val2017", num_classes=171 if num_classes == 171 else 27)

    return opener


def _open_cityscapes(num_classes: int) -> Opener:
    def opener(root: Path, split: str | None) -> SegmentationDataset:
        return Cityscapes(root, split or "val", num_classes=19 if num_classes == 19 else 27)

    return opener


def _open_imagenet_s(variant: Literal[919, 300, 50] | None) -> Opener:
    def opener(root: Path, split: str | None) -> SegmentationDataset:
        return ImageNetS(root, split or "validation", variant=variant)

    return opener


def _open_coco_object(root: Path, split: str | None) -> SegmentationDataset:
    return COCOObject(root, split or "val2017")


def _open_ade20k(root: Path, split: str | None) -> SegmentationDataset:
    return ADE20K(root, split or "validation")


def _open_kitti_step(root: Path, split: str | None) -> SegmentationDataset:
    return KITTISTEP(root, split or "val")


DATASET_NAMES: dict[str, tuple[str, Opener]] = {
    "voc21": ("voc", _open_voc(21)),
    "voc20": ("voc", _open_voc(20)),
    "context60": ("context", _open_context(60)),
    "context59": ("context", _open_context(59)),
    "coco-object": ("coco-object", _open_coco_object),
    "coco-stuff171": ("coco-stuff", _open_coco_stuff(171)),
    "coco-stuff27": ("coco-stuff", _open_coco_stuff(27)),
    "cityscapes19": ("cityscapes", _open_cityscapes(19)),
    "cityscapes27": ("cityscapes", _open_cityscapes(27)),
    "ade20k": ("ade20k", _open_ade20k),
    "kitti-step": ("kitti-step", _open_kitti_step),
    "imagenet-s919": ("imagenet-s", _open_imagenet_s(919)),
    "imagenet-s300": ("imagenet-s", _open_imagenet_s(300)),
    "imagenet-s50": ("imagenet-s", _open_imagenet_s(50)),
}
"""Built-in dataset names (the ``dataset`` of the presets) -> (layout, opener)."""

_DEFAULT_DATASET = {
    "voc": "voc21",
    "context": "context60",
    "coco-object": "coco-object",
    "coco-stuff": "coco-stuff171",
    "cityscapes": "cityscapes19",
    "ade20k": "ade20k",
    "kitti-step": "kitti-step",
}


def _has_dirs(root: Path, *names: str) -> bool:
    return all((root / name).is_dir() for name in names)


def _voc_folder(root: Path) -> Path | None:
    for folder in (root, root / "VOC2012"):
        if _has_dirs(folder, "JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            return folder
    return None


def _context_folder(root: Path) -> Path | None:
    for folder in (root, root / "VOC2010"):
        if _has_dirs(folder, "JPEGImages", "SegmentationClassContext", "ImageSets/SegmentationContext"):
            return folder
    return None


def _is_voc(root: Path) -> bool:
    folder = _voc_folder(root)
    # VOC2010 holds SegmentationClass too: a folder with Context labels is Context.
    return folder is not None and not (folder / "SegmentationClassContext").is_dir()


def _is_context(root: Path) -> bool:
    return _context_folder(root) is not None


def _is_cityscapes(root: Path) -> bool:
    return _has_dirs(root, "leftImg8bit", "gtFine")


def _is_ade20k(root: Path) -> bool:
    return any(
        _has_dirs(folder, "images", "annotations")
        and any((folder / "annotations" / split).is_dir() for split in ("validation", "training"))
        for folder in (root, root / "ADEChallengeData2016")
    )


def _is_kitti_step(root: Path) -> bool:
    return (root / "panoptic_maps").is_dir()


def _is_imagenet_s(root: Path) -> bool:
    candidates = [root, *(root / f"ImageNetS{v}" for v in IMAGENET_S_VARIANTS)]
    return any(
        (folder / "validation-segmentation").is_dir() or (folder / "train-semi-segmentation").is_dir()
        for folder in candidates
    )


def _has_png(folder: Path, converted_object_maps: bool) -> bool:
    """Whether ``folder`` holds COCO-Object converted maps (``*_instanceTrainIds.png``) or, if not asked for those,
    COCO-Stuff maps (raw ``<id>.png`` or mmseg's ``<id>_labelTrainIds.png``). Stops at the first match."""
    if not folder.is_dir():
        return False
    return any(
        path.suffix == ".png" and path.stem.endswith("_instanceTrainIds") == converted_object_maps
        for path in folder.iterdir()
    )


def _coco_label_dirs(root: Path) -> list[Path]:
    return [
        folder / split
        for folder in (root / "annotations", root / "stuffthingmaps_trainval2017")
        for split in ("val2017", "train2017")
    ]


def _is_coco_stuff(root: Path) -> bool:
    return any(_has_png(folder, converted_object_maps=False) for folder in _coco_label_dirs(root))


def _is_coco_object(root: Path) -> bool:
    annotations = root / "annotations"
    if annotations.is_dir() and any(annotations.glob("instances_*.json")):
        return True
    return any(_has_png(folder, converted_object_maps=True) for folder in _coco_label_dirs(root)[:2])


@dataclass(frozen=True)
class _Layout:
    name: str
    detector: Detector
    opener: Opener
    looks_for: str


_BUILTIN: tuple[_Layout, ...] = (
    _Layout("context", _is_context, _open_context(60),
            "JPEGImages/, SegmentationClassContext/, ImageSets/SegmentationContext/ (in the root or VOC2010/)"),
    _Layout("voc", _is_voc, _open_voc(21),
            "JPEGImages/, SegmentationClass/, ImageSets/Segmentation/ (in the root or VOC2012/)"),
    _Layout("cityscapes", _is_cityscapes, _open_cityscapes(19), "leftImg8bit/ and gtFine/"),
    _Layout("ade20k", _is_ade20k, _open_ade20k,
            "images/ and annotations/{validation,training}/ (in the root or ADEChallengeData2016/)"),
    _Layout("kitti-step", _is_kitti_step, _open_kitti_step, "panoptic_maps/"),
    _Layout("imagenet-s", _is_imagenet_s, _open_imagenet_s(None),
            "validation-segmentation/ or train-semi-segmentation/ (in the root or ImageNetS{919,300,50}/)"),
    _Layout("coco-stuff", _is_coco_stuff, _open_coco_stuff(171),
            "annotations/{val2017,train2017}/*.png or stuffthingmaps_trainval2017/{val2017,train2017}/*.png"),
    _Layout("coco-object", _is_coco_object, _open_coco_object,
            "annotations/instances_<split>.json or annotations/<split>/*_instanceTrainIds.png"),
)  # fmt: skip

_REGISTERED: dict[str, _Layout] = {}

_FOREIGN_MARKERS: dict[str, str] = {}
"""Files that mark a layout no reader claims (refused rather than misread); empty while the world is registered."""


def register_layout(
    name: str, detector: Detector, opener: Opener, *, looks_for: str = "", replace: bool = False
) -> None:
    """Teach :func:`detect_layout` and :func:`open_dataset` a new layout.

    Registered layouts are tried before the built-in ones (the most recently registered first), so a layout that
    resembles a built-in one (the synthetic world's VOC or COCO layout plus its ``world.json``) is recognised as
    itself. ``open_dataset(root, name=name)`` opens it without detection.

    Args:
        name: Layout name, also usable as ``open_dataset(..., name=name)``; must not be a built-in name.
        detector: ``detector(root) -> bool``: whether ``root`` is in this layout. Keep it cheap (stat a few paths).
        opener: ``opener(root, split) -> dataset`` (``split=None``: the layout's default); the dataset must have
            ``__len__``, ``__getitem__ -> Sample``, ``class_names`` and ``ignore_index``.
        looks_for: What the detector checks, in words (shown when no layout matches).
        replace: Replace an existing registration of ``name`` instead of raising.

    Raises:
        ValueError: ``name`` is a built-in layout or dataset name, or is registered already and ``replace`` is false.
    """
    builtin = {layout.name for layout in _BUILTIN} | set(DATASET_NAMES)
    if name in builtin:
        raise ValueError(f"{name!r} is a built-in layout or dataset name; register your layout under another name")
    if name in _REGISTERED and not replace:
        raise ValueError(f"layout {name!r} is registered already; pass replace=True to replace it")
    _REGISTERED.pop(name, None)
    _REGISTERED[name] = _Layout(name, detector, opener, looks_for or "a layout registered with register_layout")


def unregister_layout(name: str) -> None:
    """Forget a layout registered with :func:`register_layout` (unknown names are ignored)."""
    _REGISTERED.pop(name, None)


def list_layouts() -> tuple[str, ...]:
    """Names of the layouts :func:`detect_layout` can return: registered ones first, then the built-in ones."""
    return (*reversed(_REGISTERED), *(layout.name for layout in _BUILTIN))


def dataset_names() -> tuple[str, ...]:
    """Names :func:`open_dataset` accepts as ``name``: the built-in datasets, the layouts and registered layouts."""
    return (*DATASET_NAMES, *(n for n in _DEFAULT_DATASET if n not in DATASET_NAMES), "imagenet-s",
            *reversed(_REGISTERED))  # fmt: skip


def detect_layout(root: str | Path) -> str:
    """Name the released benchmark layout ``root`` is in.

    Args:
        root: A dataset folder.

    Returns:
        A layout name: a registered one, or ``voc``, ``context``, ``cityscapes``, ``ade20k``, ``kitti-step``,
        ``imagenet-s``, ``coco-stuff``, ``coco-object``. A COCO root with both stuff maps and instance
        annotations is ``coco-stuff`` (open it with ``name="coco-object"`` for the other).

    Raises:
        DatasetLayoutError: ``root`` does not exist, matches no layout (the message lists what was looked for and
            what the folder holds), matches two unrelated layouts, or holds a marker of a layout that is not
            registered (``world.json``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset root {root} does not exist or is not a folder")
    for layout in reversed(_REGISTERED.values()):
        if layout.detector(root):
            return layout.name
    for marker, meaning in _FOREIGN_MARKERS.items():
        if (root / marker).is_file():
            raise DatasetLayoutError(
                f"{root} holds {marker}: it is {meaning}, and no registered layout claims it. "
                "Register the reader with seg_eval.datasets.register_layout(...) or open it with its own reader."
            )
    matches = [layout.name for layout in _BUILTIN if layout.detector(root)]
    if len(matches) == 2 and set(matches) == {"coco-stuff", "coco-object"}:
        return "coco-stuff"
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise DatasetLayoutError(
            f"{root} matches several layouts ({', '.join(matches)}); pass the benchmark's own folder "
            f"or open_dataset(root, name=...) with one of: {', '.join(dataset_names())}"
        )
    entries = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in root.iterdir())
    shown = ", ".join(entries[:12]) + (", ..." if len(entries) > 12 else "") if entries else "nothing"
    looked = "\n".join(
        f"  {layout.name}: {layout.looks_for}" for layout in (*reversed(_REGISTERED.values()), *_BUILTIN)
    )
    raise DatasetLayoutError(
        f"{root} is in no known dataset layout. It holds: {shown}.\nLooked for:\n{looked}\n"
        "Pass the benchmark's own folder (e.g. VOCdevkit/VOC2012), or register your layout with register_layout."
    )


def open_dataset(root: str | Path, split: str | None = None, name: str | None = None) -> SegmentationDataset:
    """Open the benchmark at ``root``: by ``name``, or by the layout :func:`detect_layout` finds.

    Args:
        root: The dataset folder.
        split: The split to read; ``None`` takes the benchmark's evaluation split (``val``, ``val2017``,
            ``validation``).
        name: A dataset name (``"voc20"``, ``"coco-stuff27"``, ``"cityscapes27"``, ``"imagenet-s919"``, ..., the
            ``dataset`` of a preset), a layout name, or a registered layout; ``None`` detects it. A layout name
            opens its default variant (``voc`` -> ``voc21``, ``coco-stuff`` -> ``coco-stuff171``, ...).

    Returns:
        The reader.

    Raises:
        ConfigError: ``name`` is unknown (the message lists the known names).
        DatasetLayoutError: The layout is not recognised, or a file the reader needs is missing.
    """
    root = Path(root)
    if name is None:
        name = detect_layout(root)
    if name in _REGISTERED:
        return _REGISTERED[name].opener(root, split)
    if name == "imagenet-s":
        return _open_imagenet_s(None)(root, split)
    name = _DEFAULT_DATASET.get(name, name)
    if name not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")
    return DATASET_NAMES[name][1](root, split)


def _is_world(root: Path) -> bool:
    return (root / "world.json").is_file()


def _open_world(root: Path, split: str | None) -> SegmentationDataset:
    from seg_eval.world.benchmark import WorldBenchmark  # lazy: seg_eval.world imports this package

    if split is not None and split not in ("index", "pairs", "val", "test", "shift"):
        raise ConfigError(f"split {split!r} is not a split of the synthetic world; use val, test or shift")
    return WorldBenchmark(root, "val" if split is None else split)  # type: ignore[arg-type]


# The synthetic world (``seg world generate``) is registered like any third-party layout, so it is recognised before
# the VOC or COCO layout it is written in; its world.json names its classes.
register_layout(
    "synthetic", _is_world, _open_world, looks_for="world.json beside a VOC or COCO layout (seg world generate)"
)
