"""Writing splits in the COCO and VOC layouts, and reading them back (pycocotools, PIL, WorldDataset)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from seg_core import ConfigError
from seg_eval.world import (
    CLASSES,
    GENERATOR_VERSION,
    RenderedWorldDataset,
    WorldConfig,
    WorldDataset,
    generate_split,
    list_splits,
    read_sample,
    read_world,
    render,
    to_tensors,
)

NUM = 24

# pycocotools' RLE decoder trips numpy 2's __array__ copy deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def _coco(path: Path) -> Any:
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_coco_layout_loads_with_pycocotools(tmp_path: Path) -> None:
    config = WorldConfig(seed=5)
    written = generate_split(tmp_path, "val", NUM, seed=5, fmt="coco")
    assert written.num == NUM
    assert written.files_written == 2 * NUM
    coco = _coco(tmp_path / "annotations" / "instances_val.json")
    thing_ids = {c.id for c in CLASSES if c.kind == "thing"}
    assert set(coco.getCatIds()) == thing_ids
    assert sorted(coco.getImgIds()) == list(range(1, NUM + 1))
    for index in range(NUM):
        sample = render(config, "val", index)
        image_info = coco.loadImgs(sample.image_id)[0]
        stored = np.asarray(Image.open(tmp_path / "images" / "val" / image_info["file_name"]))
        assert np.array_equal(stored, sample.image)
        annotations = sorted(
            coco.loadAnns(coco.getAnnIds(imgIds=[sample.image_id])),
            key=lambda annotation: annotation["id"],
        )
        assert len(annotations) == len(sample.instances)
        for annotation, instance, mask in zip(annotations, sample.instances, sample.instance_masks(), strict=True):
            assert np.array_equal(coco.annToMask(annotation).astype(bool), mask)
            assert annotation["category_id"] == instance.class_id
            assert annotation["iscrowd"] == 0
            assert annotation["area"] == instance.area == int(mask.sum())
            assert tuple(annotation["bbox"]) == instance.bbox
        semantic = np.asarray(Image.open(tmp_path / "annotations" / "semantic_val" / f"{sample.stem}.png"))
        assert np.array_equal(semantic, sample.semantic)
    captions = _coco(tmp_path / "annotations" / "captions_val.json")
    assert captions.loadAnns([1])[0]["caption"] == render(config, "val", 0).caption


def test_voc_layout_gives_back_the_rendered_label_maps(tmp_path: Path) -> None:
    config = WorldConfig(void_border=1)
    generate_split(tmp_path, "test", NUM, fmt="voc", config=config)
    stems = (tmp_path / "ImageSets" / "Segmentation" / "test.txt").read_text().split()
    assert stems == [f"test_{index:06d}" for index in range(NUM)]
    with Image.open(tmp_path / "SegmentationClass" / f"{stems[0]}.png") as label_png:
        assert label_png.mode == "P"
    dataset = WorldDataset(tmp_path, "test")
    assert dataset.fmt == "voc"
    assert len(dataset) == NUM
    for index in range(NUM):
        rendered, read = render(config, "test", index), dataset[index]
        assert np.array_equal(read.semantic, rendered.semantic)
        assert np.array_equal(read.instance_map, rendered.instance_map)
        assert read.instances == rendered.instances
        assert (read.caption, read.caption_kind, read.mentioned) == (
            rendered.caption,
            rendered.caption_kind,
            rendered.mentioned,
        )
        assert read.labels == rendered.labels
        assert read.stuff_map is None
        # JPEG, as in VOC: close, not equal.
        assert np.abs(read.image.astype(np.int16) - rendered.image).mean() < 5


def test_coco_dataset_round_trip_with_void_borders(tmp_path: Path) -> None:
    config = WorldConfig(void_border=2, size=48)
    generate_split(tmp_path, "val", NUM, fmt="coco", config=config)
    dataset = WorldDataset(tmp_path, "val")
    for index in range(NUM):
        rendered, read = render(config, "val", index), dataset[index]
        assert np.array_equal(read.image, rendered.image)
        assert np.array_equal(read.semantic, rendered.semantic)
        assert np.array_equal(read.instance_map, rendered.instance_map)
        assert read.instances == rendered.instances


def test_captions_jsonl_records_noise(tmp_path: Path) -> None:
    config = WorldConfig(p_noise=0.5)
    generate_split(tmp_path, "pairs", 40, config=config)
    lines = (tmp_path / "captions_pairs.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["index"] for r in records] == list(range(40))
    for record in records:
        sample = render(config, "pairs", record["index"])
        assert record["caption"] == sample.caption
        assert record["noisy"] == sample.noisy
        assert (tmp_path / record["file"]).is_file()
    assert 5 < sum(r["noisy"] for r in records) < 35


def test_world_file_describes_the_world_and_guards_the_directory(tmp_path: Path) -> None:
    generate_split(tmp_path, "val", 4, seed=2, size=40)
    info = read_world(tmp_path)
    assert info.generator_version == GENERATOR_VERSION
    assert (info.config.seed, info.config.size) == (2, 40)
    assert info.classes == CLASSES
    generate_split(tmp_path, "test", 4, seed=2, size=40, fmt="voc")
    assert list_splits(tmp_path) == {"val": ("coco",), "test": ("voc",)}
    with pytest.raises(ConfigError, match="describes another world"):
        generate_split(tmp_path, "test", 4, seed=3, size=40)
    with pytest.raises(ConfigError, match="was not"):
        WorldDataset(tmp_path, "shift")
    with pytest.raises(ConfigError, match="written as voc, not coco"):
        WorldDataset(tmp_path, "test", fmt="coco")


def test_rerun_resumes_and_writes_the_same_bytes(tmp_path: Path) -> None:
    first = generate_split(tmp_path, "val", NUM)
    before = _tree_bytes(tmp_path)
    (tmp_path / "images" / "val" / "val_000003.png").unlink()
    again = generate_split(tmp_path, "val", NUM)
    assert (again.files_written, again.files_kept) == (1, first.files_written - 1)
    assert _tree_bytes(tmp_path) == before


def test_parallel_workers_write_the_same_bytes(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate_split(
        tmp_path / "serial", "index", 150, fmt="voc", progress=lambda done, total: calls.append((done, total))
    )
    generate_split(tmp_path / "parallel", "index", 150, fmt="voc", workers=2)
    assert _tree_bytes(tmp_path / "serial") == _tree_bytes(tmp_path / "parallel")
    assert calls[0] == (0, 150)
    assert calls[-1] == (150, 150)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_read_sample_and_torch_batches(tmp_path: Path) -> None:
    import torch
    from torch.utils.data import DataLoader

    generate_split(tmp_path, "val", 8, size=32)
    assert read_sample(tmp_path, "val", 3).caption == render(WorldConfig(size=32), "val", 3).caption
    loader = DataLoader(WorldDataset(tmp_path, "val", transform=to_tensors), batch_size=4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 32, 32)
    assert batch["image"].dtype == torch.float32
    assert batch["semantic"].shape == (4, 32, 32)
    assert batch["semantic"].dtype == torch.int64
    assert batch["labels"].shape == (4, len(CLASSES))
    assert len(batch["caption"]) == 4
    rendered = RenderedWorldDataset(WorldConfig(size=32), "val", 8, transform=to_tensors)
    assert torch.equal(rendered[2]["semantic"], WorldDataset(tmp_path, "val", transform=to_tensors)[2]["semantic"])
    with pytest.raises(IndexError):
        rendered[8]
