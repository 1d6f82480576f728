"""Readers for the standard segmentation benchmarks, in the layouts their releases use, and a layout detector.

Every reader is a map-style dataset of :class:`Sample` (``image`` uint8 ``(H, W, 3)``, ``label`` ``(H, W)`` with
``ignore_index`` for pixels the metrics skip, ``image_id``) with ``class_names`` and ``ignore_index``, built from a
root folder and a split; a wrong root raises :class:`DatasetLayoutError` naming the missing path and showing the
expected layout.

==================  =====================================================  =======================
reader              benchmark                                              ``open_dataset`` names
==================  =====================================================  =======================
:class:`PascalVOC`      PASCAL VOC 2012, 21 labels or 20 without background    ``voc21``, ``voc20``
:class:`PascalContext`  PASCAL Context (mmseg layout), 60 or 59                ``context60``, ``context59``
:class:`COCOObject`     COCO things on background, 81                          ``coco-object``
:class:`COCOStuff`      COCO-Stuff 164k, 171 fine or 27 coarse                 ``coco-stuff171``, ``coco-stuff27``
:class:`Cityscapes`     Cityscapes, 19 train ids or 27 (labelIds - 7)          ``cityscapes19``, ``cityscapes27``
:class:`ADE20K`         ADE20K SceneParsing, 150                               ``ade20k``
:class:`KITTISTEP`      KITTI-STEP, 19                                         ``kitti-step``
:class:`ImageNetS`      ImageNet-S 919 / 300 / 50 (+ other)                    ``imagenet-s919`` ...
==================  =====================================================  =======================

See ``docs/evaluation.md`` for each layout. :class:`BackgroundView` relabels any of them onto "background + some of
its classes" (the COCO-Object construction); :func:`view_for_preset` applies the view a protocol preset asks for.
"""

from seg_eval.datasets.ade20k import ADE20K
from seg_eval.datasets.base import (
    IGNORE_INDEX,
    BenchmarkDataset,
    DatasetLayoutError,
    Sample,
    SegmentationDataset,
    read_image,
    read_index_png,
)
from seg_eval.datasets.coco import (
    COCO_STUFF_UNUSED_IDS,
    COCOObject,
    COCOStuff,
    coco_stuff_coarse_table,
    coco_stuff_fine_ids,
    coco_stuff_fine_to_coarse,
)
from seg_eval.datasets.driving import CITYSCAPES_TRAIN_IDS, KITTISTEP, Cityscapes
from seg_eval.datasets.imagenet_s import IMAGENET_S_IGNORE_INDEX, ImageNetS
from seg_eval.datasets.layout import (
    DATASET_NAMES,
    Detector,
    Opener,
    dataset_names,
    detect_layout,
    list_layouts,
    open_dataset,
    register_layout,
    unregister_layout,
)
from seg_eval.datasets.pascal import PascalContext, PascalVOC
from seg_eval.datasets.views import BACKGROUND_NAMES, BackgroundView, view_for_preset

__all__ = [
    "ADE20K",
    "BACKGROUND_NAMES",
    "CITYSCAPES_TRAIN_IDS",
    "COCO_STUFF_UNUSED_IDS",
    "DATASET_NAMES",
    "IGNORE_INDEX",
    "IMAGENET_S_IGNORE_INDEX",
    "KITTISTEP",
    "BackgroundView",
    "BenchmarkDataset",
    "COCOObject",
    "COCOStuff",
    "Cityscapes",
    "DatasetLayoutError",
    "Detector",
    "ImageNetS",
    "Opener",
    "PascalContext",
    "PascalVOC",
    "Sample",
    "SegmentationDataset",
    "coco_stuff_coarse_table",
    "coco_stuff_fine_ids",
    "coco_stuff_fine_to_coarse",
    "dataset_names",
    "detect_layout",
    "list_layouts",
    "open_dataset",
    "read_image",
    "read_index_png",
    "register_layout",
    "unregister_layout",
    "view_for_preset",
]
