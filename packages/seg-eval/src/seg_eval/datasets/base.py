"""What every benchmark reader shares: the sample type, the reader protocol, file I/O and layout errors."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeAlias, runtime_checkable

import numpy as np
import numpy.typing as npt
from PIL import Image

if TYPE_CHECKING:  # the readers stay free of torch and pycocotools; only the annotation names this type
    from seg_eval.metrics.mask_ap import InstanceTargets

__all__ = [
    "IGNORE_INDEX",
    "BenchmarkDataset",
    "DatasetLayoutError",
    "ImageArray",
    "LabelArray",
    "Sample",
    "SegmentationDataset",
    "read_image",
    "read_index_png",
    "read_rgb_png",
]

IGNORE_INDEX = 255
"""Label of pixels the metrics skip (void borders, unlabelled pixels, background in the no-background protocols)."""

ImageArray: TypeAlias = npt.NDArray[np.uint8]
LabelArray: TypeAlias = npt.NDArray[np.uint8] | npt.NDArray[np.int64]


class DatasetLayoutError(FileNotFoundError):
    """A dataset root is not in the expected released layout; the message names what is missing and the layout."""


@dataclass(frozen=True, eq=False)
class Sample:
    """One evaluation image and its ground truth.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        label: ``(H, W)`` class ids, uint8 (int64 when a benchmark has more than 255 labels, ImageNet-S); the
            reader's ``ignore_index`` (255 unless stated) marks pixels the metrics skip.
        image_id: The image's id in the benchmark (file stem, or ``city/stem`` style where stems repeat).
        instances: The image's ground-truth object instances for mask AP, or ``None`` when the reader has none:
            :class:`~seg_eval.metrics.InstanceTargets` with ``[M, H, W]`` bool masks and ``[M]`` int labels in
            the reader's ``class_names`` space (an image without objects has ``M = 0``).
    """

    image: ImageArray
    label: LabelArray
    image_id: str
    instances: InstanceTargets | None = None


@runtime_checkable
class SegmentationDataset(Protocol):
    """What evaluation needs from a dataset: any object with these members qualifies (no inheritance needed)."""

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the labels, position = label id."""
        ...

    @property
    def ignore_index(self) -> int:
        """Label value the metrics skip."""
        ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


def read_image(path: Path) -> ImageArray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB (greyscale, palette and CMYK files are converted).

    EXIF orientation is not applied: the benchmarks' labels are drawn on the stored pixels.
    """
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def read_index_png(path: Path) -> npt.NDArray[np.uint8]:
    """Read a single-channel label PNG (mode ``L`` or palette ``P``) as its stored indices, ``(H, W)`` uint8.

    Palette PNGs (VOC) are read as indices, never through their colours.

    Raises:
        ValueError: The file is an RGB image, i.e. a colour visualisation rather than a label map.
    """
    with Image.open(path) as label:
        if label.mode not in {"L", "P"}:
            raise ValueError(
                f"{path} is a {label.mode} image, not a single-channel label map (mode L or P); "
                "colour visualisations of labels (e.g. *_color.png) cannot be read as labels"
            )
        return np.asarray(label, dtype=np.uint8).copy()


def read_rgb_png(path: Path) -> npt.NDArray[np.uint8]:
    """Read a label PNG that encodes ids in its colour channels (KITTI-STEP, ImageNet-S) as ``(H, W, 3)`` uint8."""
    with Image.open(path) as label:
        if label.mode != "RGB":
            raise ValueError(f"{path} is a {label.mode} image; this benchmark stores labels as RGB PNGs")
        return np.asarray(label, dtype=np.uint8).copy()


def lookup_table(mapping: dict[int, int], *, size: int = 256, default: int = IGNORE_INDEX) -> npt.NDArray[np.uint8]:
    """A ``size``-entry uint8 table: each key of ``mapping`` to its value, every other value to ``default``."""
    table = np.full(size, default, dtype=np.uint8)
    for raw, label in mapping.items():
        table[raw] = label
    return table


def check_values(raw: npt.NDArray[np.integer], allowed: npt.NDArray[np.bool_], path: Path, what: str) -> None:
    """Raise if ``raw`` holds a value that cannot occur in the released label files (a sign of the wrong files).

    Args:
        raw: The label values as stored.
        allowed: ``allowed[v]`` says whether value ``v`` may occur.
        path: The label file (for the message).
        what: The allowed values in words, e.g. ``"0-20 and 255"``.
    """
    if raw.dtype == np.uint8 and len(allowed) >= 256:  # a histogram is much cheaper than np.unique's sort
        present = np.bincount(raw.ravel(), minlength=256) > 0
        bad = np.flatnonzero(present & ~allowed[:256]).tolist()
    else:
        bad = [int(value) for value in np.unique(raw) if value >= len(allowed) or not allowed[value]]
    if bad:
        shown = ", ".join(str(value) for value in bad[:8]) + (", ..." if len(bad) > 8 else "")
        raise ValueError(f"{path} holds label values {shown}; this benchmark's label files hold {what}")


def first_missing(paths: Iterable[Path]) -> Path | None:
    """The first of ``paths`` that does not exist, or ``None``."""
    return next((path for path in paths if not path.exists()), None)


def layout_error(root: Path, missing: Path, benchmark: str, layout: str, hint: str = "") -> DatasetLayoutError:
    """A :class:`DatasetLayoutError` naming the missing path and showing the expected layout."""
    where = missing.relative_to(root) if missing.is_relative_to(root) else missing
    message = f"{benchmark}: {where} is missing under {root}.\nExpected layout:\n{layout.rstrip()}"
    if hint:
        message += f"\n{hint}"
    return DatasetLayoutError(message)


@dataclass(frozen=True)
class _Item:
    image_path: Path
    label_path: Path
    image_id: str
    key: int = -1
    """Reader-specific handle (the COCO image id when labels are rasterised from a JSON file)."""


class BenchmarkDataset:
    """Base of the readers: an indexed list of (image file, label file, id) and a label conversion.

    Subclasses fill ``self._items`` in ``__init__`` and implement :meth:`_read_label`; ``__getitem__`` reads the
    image, converts the label and checks that both have the same size.

    Attributes:
        root: The dataset folder the reader was opened on (after descending into the benchmark's own folder).
        split: The split read.
        class_names: Label names, position = label id.
        ignore_index: Label value the metrics skip.
    """

    name: str = "benchmark"
    """The dataset name (as :func:`~seg_eval.datasets.open_dataset` knows it, e.g. ``"voc21"``)."""
    layout: ClassVar[str] = ""
    """The expected folder layout, as shown in errors and in ``docs/evaluation.md``."""

    root: Path
    split: str
    class_names: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX

    def __init__(self) -> None:
        self._items: list[_Item] = []

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self._items) <= index < len(self._items):
            raise IndexError(f"index {index} out of range for {len(self._items)} images of {self.name} {self.split}")
        item = self._items[index]
        image = read_image(item.image_path)
        label = self._read_label(item)
        if label.shape != image.shape[:2]:
            raise ValueError(
                f"{item.label_path} is {label.shape[1]}x{label.shape[0]} but its image {item.image_path} is "
                f"{image.shape[1]}x{image.shape[0]}: the label does not belong to this image"
            )
        return Sample(image=image, label=label, image_id=item.image_id)

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self[index]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, images={len(self)}, "
            f"classes={len(self.class_names)})"
        )

    @property
    def image_ids(self) -> tuple[str, ...]:
        """Ids of the images, in index order."""
        return tuple(item.image_id for item in self._items)

    def _read_label(self, item: _Item) -> LabelArray:
        raise NotImplementedError

    def _fail(self, missing: Path, hint: str = "") -> DatasetLayoutError:
        return layout_error(self.root, missing, self.name, self.layout, hint)


def read_id_list(path: Path) -> list[str]:
    """Image ids listed one per line (VOC ``ImageSets`` files, curated lists); blank lines skipped."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def available(folder: Path, *, suffix: str = "", dirs: bool = False) -> list[str]:
    """Sorted names in ``folder`` (files ending in ``suffix``, or sub-folders), for 'choose one of' messages."""
    if not folder.is_dir():
        return []
    names = (entry.name for entry in folder.iterdir() if entry.is_dir() == dirs and entry.name.endswith(suffix))
    return sorted(name.removesuffix(suffix) for name in names)


def choose_root(root: Path, subfolders: Sequence[str], marker: str) -> Path:
    """``root`` itself when it holds ``marker``, else the first of ``root/<subfolder>`` that does (else ``root``).

    Lets readers accept both the benchmark folder (``VOCdevkit/VOC2012``) and its parent (``VOCdevkit``).
    """
    if (root / marker).exists():
        return root
    for sub in subfolders:
        if (root / sub / marker).exists():
            return root / sub
    return root
