"""Writing splits of the world to disk in the real benchmarks' layouts, and reading them back.

Two layouts, each the same as the real benchmark's, so the real dataset readers read the world:

**COCO** (``fmt="coco"``)::

    world.json                              config + seed + generator version + class table
    images/<split>/<split>_<index:06d>.png  RGB images (``image_format="jpg"`` for JPEG)
    annotations/instances_<split>.json      COCO instances: things only, RLE segmentation, iscrowd 0,
                                            category_id == class id, image id == index + 1
    annotations/semantic_<split>/<stem>.png uint8 label maps (class id, 255 = ignore), like COCO-Stuff
    annotations/captions_<split>.json       COCO captions (one caption per image)
    captions_<split>.jsonl                  one record per image: caption, noisy flag, labels, instances
                                            (``file``: the image in the layout written last)

**VOC** (``fmt="voc"``)::

    world.json
    JPEGImages/<stem>.jpg                   RGB images (``image_format="png"`` for lossless PNG)
    SegmentationClass/<stem>.png            palette PNGs of class ids (255 = ignore), VOC colour map
    SegmentationObject/<stem>.png           palette PNGs of instance numbers (0 = no thing, 255 = ignore)
    ImageSets/Segmentation/<split>.txt      the split's stems
    captions_<split>.jsonl

Per-image files are written atomically and kept on a re-run (``resume``); a split's index file (the instances
JSON, the ImageSets list) is written last, so a split is complete exactly when it exists.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from seg_core import ConfigError, SegModel
from seg_eval.world.captions import CaptionKind
from seg_eval.world.classes import CLASSES, IGNORE_LABEL, NUM_CLASSES, WorldClass, class_by_name
from seg_eval.world.config import SPLITS, SplitName, WorldConfig
from seg_eval.world.sample import WorldInstance, WorldSample, mask_bbox
from seg_eval.world.scene import render

__all__ = [
    "GENERATOR_VERSION",
    "WORLD_FILE",
    "Layout",
    "WorldInfo",
    "WrittenSplit",
    "generate_split",
    "list_splits",
    "read_sample",
    "read_world",
    "voc_colormap",
]

GENERATOR_VERSION = "1.0.0"
"""Bumped whenever the same config would render different pixels, captions or labels."""
WORLD_FILE = "world.json"

Layout = Literal["coco", "voc"]
ImageFormat = Literal["png", "jpg"]
Progress = Callable[[int, int], None]

_CHUNK = 64
_JPEG_QUALITY = 95


class WorldInfo(SegModel):
    """Contents of ``world.json``: what any reader needs to know about a written world."""

    generator_version: str
    config: WorldConfig
    classes: tuple[WorldClass, ...]
    ignore_label: int = IGNORE_LABEL


@dataclass(frozen=True)
class WrittenSplit:
    """What :func:`generate_split` wrote.

    Attributes:
        root: The output directory.
        split: The split.
        fmt: The layout.
        num: Number of images in the split.
        files_written: Per-image files written by this call.
        files_kept: Per-image files found from an earlier run and kept (``resume``).
    """

    root: Path
    split: SplitName
    fmt: Layout
    num: int
    files_written: int
    files_kept: int


@cache
def voc_colormap() -> bytes:
    """PASCAL VOC's 256-entry colour map (the bit-interleaving one) as a 768-byte PIL palette."""
    table = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        red = green = blue = 0
        code = index
        for bit in range(8):
            red |= ((code >> 0) & 1) << (7 - bit)
            green |= ((code >> 1) & 1) << (7 - bit)
            blue |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        table[index] = (red, green, blue)
    return table.tobytes()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


_FileKind = Literal["png", "jpg", "labels", "voc_labels"]


def _encode(kind: _FileKind, array: npt.NDArray[np.uint8]) -> bytes:
    """File bytes of an image (``png``/``jpg``, ``(H, W, 3)``) or a label map (``(H, W)``: grey PNG, or palette PNG
    with the VOC colour map)."""
    buffer = io.BytesIO()
    if kind == "jpg":
        # 4:4:4 chroma: 4:2:0 smears the hard colour edges of things (mean error 6.5 levels instead of 3).
        Image.fromarray(array).save(buffer, format="JPEG", quality=_JPEG_QUALITY, subsampling=0)
    elif kind == "voc_labels":
        image = Image.frombuffer("P", (array.shape[1], array.shape[0]), np.ascontiguousarray(array), "raw", "P", 0, 1)
        image.putpalette(voc_colormap())
        image.save(buffer, format="PNG", compress_level=1)
    else:
        Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _image_path(fmt: Layout, split: SplitName, stem: str, image_format: ImageFormat) -> str:
    if fmt == "coco":  # images/<split>/ like COCO's images/val2017/, where COCO readers look
        return f"images/{split}/{stem}.{image_format}"
    return f"JPEGImages/{stem}.{image_format}"


def _metadata(sample: WorldSample, file: str) -> dict[str, Any]:
    """The JSONL record of a sample (everything that is not pixels)."""
    return {
        "image_id": sample.image_id,
        "index": sample.index,
        "file": file,
        "caption": sample.caption,
        "noisy": sample.noisy,
        "caption_kind": sample.caption_kind,
        "mentioned": [CLASSES[class_id].name for class_id in sample.mentioned],
        "labels": {CLASSES[class_id].name: area for class_id, area in sample.labels.items()},
        "instances": [
            {
                "class": instance.name,
                "bbox": list(instance.bbox),
                "area": instance.area,
                "context": None if instance.context_id is None else CLASSES[instance.context_id].name,
                "typical": instance.typical,
            }
            for instance in sample.instances
        ],
    }


def _coco_annotations(sample: WorldSample) -> list[dict[str, Any]]:
    from pycocotools import mask as mask_utils

    if not sample.instances:
        return []
    masks = np.asfortranarray(sample.instance_masks().transpose(1, 2, 0).astype(np.uint8))
    encoded = mask_utils.encode(masks)
    annotations = []
    for instance, rle in zip(sample.instances, encoded, strict=True):
        annotations.append(
            {
                "image_id": sample.image_id,
                "category_id": instance.class_id,
                "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
                "area": instance.area,
                "bbox": list(instance.bbox),
                "iscrowd": 0,
                "context_id": instance.context_id,
                "typical": instance.typical,
            }
        )
    return annotations


@dataclass(frozen=True)
class _Job:
    root: str
    config_json: str
    split: SplitName
    fmt: Layout
    image_format: ImageFormat
    resume: bool


def _write_images(job: _Job, indices: Sequence[int]) -> tuple[list[dict[str, Any]], int, int]:
    """Render and write ``indices`` of a split; returns their records and counts of files written and kept."""
    config = WorldConfig.from_json(job.config_json)
    root = Path(job.root)
    records: list[dict[str, Any]] = []
    written = kept = 0
    for index in indices:
        sample = render(config, job.split, index)
        stem = sample.stem
        image_file = _image_path(job.fmt, job.split, stem, job.image_format)
        files: list[tuple[str, _FileKind, npt.NDArray[np.uint8]]] = [(image_file, job.image_format, sample.image)]
        if job.fmt == "coco":
            files.append((f"annotations/semantic_{job.split}/{stem}.png", "labels", sample.semantic))
        else:
            files.append((f"SegmentationClass/{stem}.png", "voc_labels", sample.semantic))
            files.append((f"SegmentationObject/{stem}.png", "voc_labels", sample.instance_map))
        for relative, kind, array in files:
            path = root / relative
            if job.resume and path.is_file() and path.stat().st_size > 0:
                kept += 1
                continue
            _atomic_write(path, _encode(kind, array))
            written += 1
        size = config.size
        records.append(
            {
                "image": {"id": sample.image_id, "file_name": Path(image_file).name, "width": size, "height": size},
                "annotations": _coco_annotations(sample) if job.fmt == "coco" else [],
                "meta": _metadata(sample, image_file),
            }
        )
    return records, written, kept


def _chunks(num: int, chunk: int) -> Iterator[range]:
    for start in range(0, num, chunk):
        yield range(start, min(num, start + chunk))


def _prepare_root(root: Path, config: WorldConfig) -> None:
    """Create ``root`` and its ``world.json``, or check that an existing one describes the same world."""
    root.mkdir(parents=True, exist_ok=True)
    info = WorldInfo(generator_version=GENERATOR_VERSION, config=config, classes=CLASSES)
    world_file = root / WORLD_FILE
    if world_file.is_file():
        existing = WorldInfo.load(world_file)
        if existing.config != config or existing.generator_version != GENERATOR_VERSION:
            raise ConfigError(
                f"{world_file} describes another world (generator {existing.generator_version}, "
                f"seed {existing.config.seed}, size {existing.config.size}); write to an empty directory"
            )
        return
    info.save(world_file)


def _write_index_files(root: Path, split: SplitName, fmt: Layout, records: list[dict[str, Any]]) -> None:
    lines = "".join(json.dumps(record["meta"], separators=(",", ":")) + "\n" for record in records)
    _atomic_write(root / f"captions_{split}.jsonl", lines.encode("utf-8"))
    if fmt == "coco":
        categories = [
            {"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in CLASSES if c.kind == "thing"
        ]
        info = {"description": "seg synthetic world", "version": GENERATOR_VERSION}
        captions = {
            "info": info,
            "licenses": [],
            "images": [record["image"] for record in records],
            "annotations": [
                {"id": record["image"]["id"], "image_id": record["image"]["id"], "caption": record["meta"]["caption"]}
                for record in records
            ],
        }
        _atomic_write(root / "annotations" / f"captions_{split}.json", json.dumps(captions).encode("utf-8"))
        annotations: list[dict[str, Any]] = []
        for record in records:
            for annotation in record["annotations"]:
                annotations.append({"id": len(annotations) + 1, **annotation})
        instances = {
            "info": info,
            "licenses": [],
            "images": [record["image"] for record in records],
            "annotations": annotations,
            "categories": categories,
        }
        _atomic_write(root / "annotations" / f"instances_{split}.json", json.dumps(instances).encode("utf-8"))
    else:
        stems = "".join(Path(record["meta"]["file"]).stem + "\n" for record in records)
        _atomic_write(root / "ImageSets" / "Segmentation" / f"{split}.txt", stems.encode("utf-8"))


def generate_split(
    out_dir: str | Path,
    split: SplitName,
    num: int,
    seed: int | None = None,
    *,
    fmt: Layout = "coco",
    size: int | None = None,
    config: WorldConfig | None = None,
    progress: Progress | None = None,
    workers: int = 1,
    image_format: ImageFormat | None = None,
    resume: bool = True,
) -> WrittenSplit:
    """Render images ``0 .. num - 1`` of ``split`` and write them in a benchmark layout under ``out_dir``.

    Args:
        out_dir: Output directory (created). Several splits, and both layouts, may share it, as long as they come
            from the same world (``world.json`` is checked).
        split: Which split.
        num: Number of images.
        seed: The world's seed; ``None`` keeps ``config.seed``.
        fmt: ``"coco"`` or ``"voc"`` (see the module docstring for the layouts).
        size: Image side in pixels (>= 32); ``None`` keeps ``config.size``.
        config: The world (defaults: ``WorldConfig()``).
        progress: Called as ``progress(done, total)`` while writing.
        workers: Processes rendering in parallel (the result does not depend on it).
        image_format: ``"png"`` or ``"jpg"``; default PNG for COCO (lossless) and JPEG for VOC (its layout).
        resume: Keep per-image files an earlier run left (they are identical: rendering is deterministic).

    Returns:
        What was written.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if fmt not in ("coco", "voc"):
        raise ConfigError(f"unknown layout {fmt!r}; choose coco or voc")
    if num < 0:
        raise ConfigError(f"num must be >= 0, got {num}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    base = config if config is not None else WorldConfig()
    overrides: dict[str, Any] = {}
    if seed is not None:
        overrides["seed"] = seed
    if size is not None:
        overrides["size"] = size
    world = WorldConfig.parse({**base.model_dump(), **overrides}) if overrides else base
    image_format = image_format or ("png" if fmt == "coco" else "jpg")
    if image_format not in ("png", "jpg"):
        raise ConfigError(f"unknown image format {image_format!r}; choose png or jpg")
    root = Path(out_dir)
    _prepare_root(root, world)
    folders = (
        [f"images/{split}", "annotations", f"annotations/semantic_{split}"]
        if fmt == "coco"
        else ["JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"]
    )
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)

    job = _Job(str(root), world.to_json(indent=None), split, fmt, image_format, resume)
    records: list[dict[str, Any]] = []
    written = kept = 0
    chunk = _CHUNK if workers == 1 else max(_CHUNK, math.ceil(num / (workers * 8)))
    if progress is not None:
        progress(0, num)
    if workers == 1 or num <= chunk:
        for indices in _chunks(num, chunk):
            chunk_records, chunk_written, chunk_kept = _write_images(job, indices)
            records += chunk_records
            written, kept = written + chunk_written, kept + chunk_kept
            if progress is not None:
                progress(len(records), num)
    else:
        # spawn, not fork: a forked child of a process that has started torch's thread pools can deadlock.
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_write_images, job, indices) for indices in _chunks(num, chunk)]
            for future in futures:
                chunk_records, chunk_written, chunk_kept = future.result()
                records += chunk_records
                written, kept = written + chunk_written, kept + chunk_kept
                if progress is not None:
                    progress(len(records), num)
    _write_index_files(root, split, fmt, records)
    return WrittenSplit(root=root, split=split, fmt=fmt, num=num, files_written=written, files_kept=kept)


def read_world(root: str | Path) -> WorldInfo:
    """Read ``world.json`` of a written world (its config, generator version and class table)."""
    return WorldInfo.load(Path(root) / WORLD_FILE)


def list_splits(root: str | Path) -> dict[SplitName, tuple[Layout, ...]]:
    """The complete splits under ``root`` and the layouts each was written in."""
    root = Path(root)
    found: dict[SplitName, tuple[Layout, ...]] = {}
    for split in SPLITS:
        layouts: list[Layout] = []
        if (root / "annotations" / f"instances_{split}.json").is_file():
            layouts.append("coco")
        if (root / "ImageSets" / "Segmentation" / f"{split}.txt").is_file():
            layouts.append("voc")
        if layouts:
            found[split] = tuple(layouts)
    return found


def _read_array(path: Path) -> npt.NDArray[np.uint8]:
    with Image.open(path) as image:
        return np.asarray(image if image.mode in ("L", "P", "RGB") else image.convert("RGB"), dtype=np.uint8).copy()


def _instances_from_map(
    instance_map: npt.NDArray[np.uint8], semantic: npt.NDArray[np.uint8], records: list[dict[str, Any]]
) -> tuple[WorldInstance, ...]:
    instances = []
    for number, record in enumerate(records, start=1):
        own = instance_map == number
        class_id = class_by_name(record["class"]).id if "class" in record else int(np.bincount(semantic[own]).argmax())
        context = record.get("context")
        instances.append(
            WorldInstance(
                number=number,
                class_id=class_id,
                bbox=mask_bbox(own),
                area=int(np.count_nonzero(own)),
                context_id=None if context is None else class_by_name(context).id,
                typical=record.get("typical"),
            )
        )
    return tuple(instances)


class _CocoSplit:
    """The COCO layout of one split, through pycocotools."""

    def __init__(self, root: Path, split: SplitName) -> None:
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
            self.coco = COCO(str(root / "annotations" / f"instances_{split}.json"))
        self.root = root
        self.split = split

    def file_name(self, image_id: int) -> str:
        """The image's file name under ``images/<split>/``."""
        return str(self.coco.imgs[image_id]["file_name"])

    def instance_map(self, image_id: int, size: tuple[int, int]) -> tuple[npt.NDArray[np.uint8], list[dict[str, Any]]]:
        annotations = sorted(self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id])), key=lambda a: a["id"])
        instance_map = np.zeros(size, dtype=np.uint8)
        with warnings.catch_warnings():
            # pycocotools' RLE decoder trips numpy 2's __array__ copy deprecation; harmless, and not ours to fix.
            warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
            for number, annotation in enumerate(annotations, start=1):
                instance_map[self.coco.annToMask(annotation).astype(bool)] = number
        return instance_map, annotations


def read_sample(root: str | Path, split: SplitName, index: int, fmt: Layout | None = None) -> WorldSample:
    """Read one sample of a written split (see :class:`~seg_eval.world.dataset.WorldDataset` for many)."""
    from seg_eval.world.dataset import WorldDataset

    return WorldDataset(root, split, fmt=fmt)[index]


def _read_metadata(root: Path, split: SplitName) -> list[dict[str, Any]]:
    path = root / f"captions_{split}.jsonl"
    if not path.is_file():
        raise ConfigError(f"no captions file {path}: split {split!r} was not written under {root}")
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _sample_from_files(
    split: SplitName,
    *,
    meta: dict[str, Any],
    image: npt.NDArray[np.uint8],
    semantic: npt.NDArray[np.uint8],
    instance_map: npt.NDArray[np.uint8],
    instances: tuple[WorldInstance, ...],
) -> WorldSample:
    kind: CaptionKind = meta.get("caption_kind", "junk" if meta.get("noisy") else "clean")
    return WorldSample(
        split=split,
        index=int(meta["index"]),
        image=image,
        semantic=semantic,
        instance_map=instance_map,
        instances=instances,
        caption=str(meta["caption"]),
        caption_kind=kind,
        mentioned=tuple(class_by_name(name).id for name in meta.get("mentioned", [])),
        stuff_map=None,
    )


def _check_label_range(semantic: npt.NDArray[np.uint8], path: Path) -> None:
    values = np.unique(semantic)
    bad = [int(v) for v in values if v >= NUM_CLASSES and v != IGNORE_LABEL]
    if bad:
        raise ConfigError(f"{path}: label values {bad} are not world classes (0..{NUM_CLASSES - 1}, 255)")
