"""The synthetic world: procedural images with captions and ground truth, the benchmark of seg.

A tiny CLIP trained from scratch on the world's image-text pairs learns its classes in minutes on a CPU, and every
method is measured on it. Things have their own colour, texture and silhouette; stuff is textured regions split by
wavy horizons; co-occurrence priors (cows on grass, boats on water) create the context confounds that ReCo and
ReCLIP++ address; captions name the things, sometimes the stuff, and are sometimes web noise.

Everything is a pure function of a :class:`WorldConfig` (which holds the seed), a split and an index::

    from seg_eval.world import WorldConfig, render, generate_split, WorldDataset

    sample = render(WorldConfig(seed=0), "val", 0)        # image, semantic, instances, caption, labels
    generate_split("out/world", "val", 500, seed=0, fmt="coco")
    dataset = WorldDataset("out/world", "val")             # the same arrays, read back

See ``docs/synthetic-world.md``.
"""

from seg_eval.world.captions import CaptionKind
from seg_eval.world.classes import (
    CLASSES,
    IGNORE_LABEL,
    NUM_CLASSES,
    STUFF_NAMES,
    THING_NAMES,
    WorldClass,
    class_by_id,
    class_by_name,
    label_lookup,
    palette,
    unseen_class_names,
)
from seg_eval.world.config import SPLITS, AppearanceConfig, SplitName, WorldConfig
from seg_eval.world.dataset import RenderedWorldDataset, WorldDataset, to_tensors
from seg_eval.world.io import (
    GENERATOR_VERSION,
    Layout,
    WorldInfo,
    WrittenSplit,
    generate_split,
    list_splits,
    read_sample,
    read_world,
    voc_colormap,
)
from seg_eval.world.sample import WorldInstance, WorldSample
from seg_eval.world.scene import render

__all__ = [
    "CLASSES",
    "GENERATOR_VERSION",
    "IGNORE_LABEL",
    "NUM_CLASSES",
    "SPLITS",
    "STUFF_NAMES",
    "THING_NAMES",
    "AppearanceConfig",
    "CaptionKind",
    "Layout",
    "RenderedWorldDataset",
    "SplitName",
    "WorldClass",
    "WorldConfig",
    "WorldDataset",
    "WorldInfo",
    "WorldInstance",
    "WorldSample",
    "WrittenSplit",
    "class_by_id",
    "class_by_name",
    "generate_split",
    "label_lookup",
    "list_splits",
    "palette",
    "read_sample",
    "read_world",
    "render",
    "to_tensors",
    "unseen_class_names",
    "voc_colormap",
]
