"""The layout detector on folder skeletons of each released layout, its errors, and the register_layout hook."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from seg_core import ConfigError
from seg_eval.datasets import (
    DatasetLayoutError,
    Sample,
    SegmentationDataset,
    dataset_names,
    detect_layout,
    list_layouts,
    open_dataset,
    register_layout,
    unregister_layout,
)


def _tree(root: Path, *paths: str) -> Path:
    """Create folders (paths ending in ``/``) and empty files under ``root``."""
    for path in paths:
        target = root / path
        if path.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    return root


SKELETONS: dict[str, tuple[str, tuple[str, ...]]] = {
    # name: (expected layout, paths)
    "voc": ("voc", ("JPEGImages/", "SegmentationClass/", "ImageSets/Segmentation/val.txt")),
    "voc-devkit": ("voc", ("VOC2012/JPEGImages/", "VOC2012/SegmentationClass/", "VOC2012/ImageSets/Segmentation/")),
    "context": (
        "context",
        (
            "JPEGImages/",
            "SegmentationClass/",
            "SegmentationClassContext/",
            "ImageSets/Segmentation/",
            "ImageSets/SegmentationContext/val.txt",
        ),
    ),
    "context-devkit": (
        "context",
        ("VOC2010/JPEGImages/", "VOC2010/SegmentationClassContext/", "VOC2010/ImageSets/SegmentationContext/"),
    ),
    "cityscapes": ("cityscapes", ("leftImg8bit/val/", "gtFine/val/")),
    "ade20k": ("ade20k", ("ADEChallengeData2016/images/validation/", "ADEChallengeData2016/annotations/validation/")),
    "kitti-step": ("kitti-step", ("images/val/", "panoptic_maps/val/")),
    "imagenet-s": ("imagenet-s", ("validation/", "validation-segmentation/")),
    "imagenet-s-parent": ("imagenet-s", ("ImageNetS919/validation/", "ImageNetS919/validation-segmentation/")),
    "coco-stuff": ("coco-stuff", ("images/val2017/", "annotations/val2017/000000000139.png")),
    "coco-stuff-native": ("coco-stuff", ("val2017/", "stuffthingmaps_trainval2017/val2017/000000000139.png")),
    "coco-stuff-and-instances": (
        "coco-stuff",
        ("images/val2017/", "annotations/val2017/000000000139.png", "annotations/instances_val2017.json"),
    ),
    "coco-instances": ("coco-object", ("val2017/", "annotations/instances_val2017.json")),
    "coco-object-converted": ("coco-object", ("images/val2017/", "annotations/val2017/1_instanceTrainIds.png")),
}


@pytest.mark.parametrize("skeleton", sorted(SKELETONS))
def test_detect_each_layout(tmp_path: Path, skeleton: str) -> None:
    expected, paths = SKELETONS[skeleton]
    assert detect_layout(_tree(tmp_path, *paths)) == expected


def test_unknown_layout_lists_what_was_looked_for(tmp_path: Path) -> None:
    _tree(tmp_path, "pictures/", "masks/", "readme.txt")
    with pytest.raises(DatasetLayoutError) as error:
        detect_layout(tmp_path)
    message = str(error.value)
    assert "It holds: masks/, pictures/, readme.txt" in message
    for layout in ("voc", "context", "cityscapes", "ade20k", "kitti-step", "imagenet-s", "coco-stuff", "coco-object"):
        assert f"\n  {layout}: " in message
    assert "SegmentationClassContext" in message
    assert "leftImg8bit/ and gtFine/" in message


def test_missing_root_and_ambiguous_roots(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        detect_layout(tmp_path / "absent")
    # A VOCdevkit holding both VOC2010 (Context) and VOC2012 is two benchmarks: the user must choose.
    _tree(tmp_path, *SKELETONS["voc-devkit"][1], *SKELETONS["context-devkit"][1])
    with pytest.raises(DatasetLayoutError, match=r"matches several layouts \(context, voc\)"):
        detect_layout(tmp_path)


def test_a_written_world_is_recognised_as_itself_not_as_voc(tmp_path: Path) -> None:
    from seg_eval.world import generate_split
    from seg_eval.world.benchmark import WorldBenchmark

    generate_split(tmp_path, "test", 2, 4, fmt="voc")
    assert detect_layout(tmp_path) == "synthetic"
    dataset = open_dataset(tmp_path, split="test")
    assert isinstance(dataset, WorldBenchmark)
    assert len(dataset) == 2
    assert "cow" in dataset.class_names


class _Constant:
    """A minimal third-party dataset: one black image of class 1."""

    class_names = ("cow", "grass")
    ignore_index = 255

    def __init__(self, root: Path, split: str | None) -> None:
        self.root, self.split = root, split or "val"

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Sample:
        return Sample(np.zeros((2, 2, 3), np.uint8), np.ones((2, 2), np.uint8), f"{self.split}-{index}")


@pytest.fixture
def world_layout() -> Iterator[str]:
    register_layout(
        "test-world",
        lambda root: (root / "world.json").is_file(),
        _Constant,
        looks_for="world.json next to a VOC or COCO layout",
    )
    yield "test-world"
    unregister_layout("test-world")


def test_registered_layouts_come_first(tmp_path: Path, world_layout: str) -> None:
    _tree(tmp_path, "world.json", *SKELETONS["voc"][1])
    assert detect_layout(tmp_path) == world_layout
    assert list_layouts()[0] == world_layout
    assert world_layout in dataset_names()
    dataset = open_dataset(tmp_path, split="test")
    assert isinstance(dataset, _Constant)
    assert isinstance(dataset, SegmentationDataset)
    assert dataset[0].image_id == "test-0"
    assert isinstance(open_dataset(tmp_path / "anywhere", name=world_layout), _Constant)  # by name: no detection
    with pytest.raises(DatasetLayoutError, match=r"  test-world: world\.json next to a VOC or COCO layout"):
        detect_layout(_tree(tmp_path / "other", "x/"))


def test_register_layout_guards_names(world_layout: str) -> None:
    with pytest.raises(ValueError, match="registered already"):
        register_layout(world_layout, lambda root: False, _Constant)
    register_layout(world_layout, lambda root: False, _Constant, replace=True)
    with pytest.raises(ValueError, match="built-in"):
        register_layout("voc21", lambda root: False, _Constant)
    with pytest.raises(ValueError, match="built-in"):
        register_layout("coco-stuff", lambda root: False, _Constant)
    unregister_layout("never-registered")  # no error


def test_open_dataset_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'voc22'; known: voc21, voc20, .*imagenet-s919"):
        open_dataset(tmp_path, name="voc22")
