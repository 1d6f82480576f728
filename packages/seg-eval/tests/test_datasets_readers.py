"""Every benchmark reader on tiny files written in its released layout: images, labels, ignore mapping, shifts,
class names, and the errors for a wrong root."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from seg_eval.datasets import (
    ADE20K,
    KITTISTEP,
    Cityscapes,
    COCOObject,
    COCOStuff,
    DatasetLayoutError,
    ImageNetS,
    PascalContext,
    PascalVOC,
    Sample,
    SegmentationDataset,
    coco_stuff_coarse_table,
    coco_stuff_fine_ids,
    open_dataset,
)
from seg_eval.presets import read_class_names

H, W = 6, 8
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]

# ----------------------------------------------------------------------------------------------------- file writers


def _image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (H, W)) -> None:
    """A flat-colour image (flat so that JPEG round-trips it to within a few levels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), colour, dtype=np.uint8)).save(path)


def _label(path: Path, values: list[int], *, palette: bool = False, size: tuple[int, int] = (H, W)) -> None:
    """A label PNG (mode L, or P with a palette, as VOC ships) with ``values`` along its first row."""
    array = np.full(size, values[0], dtype=np.uint8)
    array[0, : len(values)] = values
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array, mode="L")
    if palette:
        image = image.convert("P")
        image.putpalette([channel for index in range(256) for channel in (index, 255 - index, index // 2)])
    image.save(path)


def _row(sample: Sample, count: int) -> list[int]:
    return [int(value) for value in sample.label[0, :count]]


def _assert_colour(sample: Sample, colour: tuple[int, int, int]) -> None:
    assert sample.image.dtype == np.uint8
    assert sample.image.shape == (H, W, 3)
    np.testing.assert_allclose(sample.image.reshape(-1, 3).mean(axis=0), colour, atol=4)


VOC_RAW = [0, 1, 15, 20, 255]


def write_voc(root: Path, *, year: str = "VOC2012", context: bool = False, raw: list[int] | None = None) -> Path:
    """VOCdevkit/<year>/ with two val images and one train image."""
    folder = root / "VOCdevkit" / year
    label_dir, set_dir = (
        ("SegmentationClassContext", "SegmentationContext") if context else ("SegmentationClass", "Segmentation")
    )
    ids = ["2008_000002", "2008_000003", "2008_000007"]
    for index, image_id in enumerate(ids):
        _image(folder / "JPEGImages" / f"{image_id}.jpg", COLOURS[index])
        values = raw or ([0, 1, 59, 255] if context else VOC_RAW)
        _label(folder / label_dir / f"{image_id}.png", [*values, index], palette=not context)
    (folder / "ImageSets" / set_dir).mkdir(parents=True)
    (folder / "ImageSets" / set_dir / "val.txt").write_text(f"{ids[0]}\n{ids[1]}\n\n")
    (folder / "ImageSets" / set_dir / "train.txt").write_text(f"{ids[2]}\n")
    return folder


def write_coco_stuff(root: Path, *, native: bool = False, train_ids: bool = False) -> Path:
    """images/val2017 + annotations/val2017 (or COCO's val2017/ + stuffthingmaps_trainval2017/val2017/)."""
    image_dir = root / ("val2017" if native else "images/val2017")
    label_dir = root / ("stuffthingmaps_trainval2017/val2017" if native else "annotations/val2017")
    for index, stem in enumerate(["000000000139", "000000000285"]):
        _image(image_dir / f"{stem}.jpg", COLOURS[index])
        if train_ids:
            _label(label_dir / f"{stem}_labelTrainIds.png", [0, 11, 80, 170, 255])
        else:
            # person, street sign (unused id), stop sign, banner (first stuff), wood (last stuff), unlabelled
            _label(label_dir / f"{stem}.png", [0, 11, 12, 91, 181, 255])
    return root


def _coco_categories() -> list[dict[str, object]]:
    names = read_class_names("coco-object81")[1:]
    ids = coco_stuff_fine_ids()[:80] + 1  # COCO category ids of the 80 things
    return [{"id": int(category_id), "name": name} for category_id, name in zip(ids, names, strict=True)]


def _rle(mask: npt.NDArray[np.uint8]) -> dict[str, object]:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_coco_instances(root: Path, categories: list[dict[str, object]] | None = None) -> Path:
    """images/val2017 + annotations/instances_val2017.json: a big person, a small dog on it, a crowd of cars."""
    categories = categories or _coco_categories()
    ids = [int(category["id"]) for category in categories]  # type: ignore[call-overload]
    person, dog, car = (ids[0], ids[16], ids[2]) if len(ids) == 80 else (ids[0], ids[1], ids[1])
    big = np.zeros((H, W), dtype=np.uint8)
    big[1:5, 1:7] = 1
    small = np.zeros((H, W), dtype=np.uint8)
    small[2:4, 2:4] = 1
    crowd = np.zeros((H, W), dtype=np.uint8)
    crowd[0:2, 5:8] = 1
    annotations = [
        {"id": 1, "image_id": 1, "category_id": dog, "segmentation": _rle(small), "area": 4.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": person, "segmentation": _rle(big), "area": 24.0, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": car, "segmentation": _rle(crowd), "area": 6.0, "iscrowd": 1},
        {  # a polygon on image 2: the box x 1-5, y 1-4 (interior pixels are checked)
            "id": 4,
            "image_id": 2,
            "category_id": dog,
            "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]],
            "area": 12.0,
            "iscrowd": 0,
            "bbox": [1, 1, 4, 3],
        },
    ]
    images = [
        {"id": 2, "file_name": "000000000285.jpg", "height": H, "width": W},
        {"id": 1, "file_name": "000000000139.jpg", "height": H, "width": W},
    ]
    for index, image in enumerate(sorted(images, key=lambda image: int(image["id"]))):  # type: ignore[call-overload]
        _image(root / "images" / "val2017" / str(image["file_name"]), COLOURS[index])
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    document = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(document))
    return root


def write_cityscapes(root: Path) -> Path:
    for index, (city, stem) in enumerate(
        [("frankfurt", "frankfurt_000000_000294"), ("lindau", "lindau_000001_000019")]
    ):
        _image(root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png", COLOURS[index])
        # unlabeled, ground (void), road, parking, person, bicycle, license plate
        _label(root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png", [0, 6, 7, 9, 24, 33, 255])
        _label(root / "gtFine" / "val" / city / f"{stem}_gtFine_color.png", [0])  # ignored: not labelIds
    (root / "leftImg8bit" / "train").mkdir(parents=True)
    return root


def write_ade20k(root: Path) -> Path:
    folder = root / "ADEChallengeData2016"
    for index, stem in enumerate(["ADE_val_00000001", "ADE_val_00000002"]):
        _image(folder / "images" / "validation" / f"{stem}.jpg", COLOURS[index])
        _label(folder / "annotations" / "validation" / f"{stem}.png", [0, 1, 150, index + 1])
    return folder


def write_kitti_step(root: Path, *, images_folder: bool = True, red: list[int] | None = None) -> Path:
    for index, (sequence, frame) in enumerate([("0002", "000000"), ("0002", "000001"), ("0006", "000000")]):
        image_dir = root / "images" / "val" if images_folder else root / "val"
        _image(image_dir / sequence / f"{frame}.png", COLOURS[index])
        panoptic = np.zeros((H, W, 3), dtype=np.uint8)
        values = red or [0, 13, 255, 18]
        panoptic[..., 0] = values[0]
        panoptic[0, : len(values), 0] = values
        panoptic[..., 1], panoptic[..., 2] = 1, 7  # instance id 263: must not leak into the label
        path = root / "panoptic_maps" / "val" / sequence / f"{frame}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(panoptic).save(path)
    return root


IMAGENET_S_IDS = [0, 3, 50, 1000, 1]


def write_imagenet_s(root: Path, *, categories: bool = True, names: bool = False) -> Path:
    """imagenet-s/ImageNetS50 with validation images of two classes; the category list sits in imagenet-s/."""
    folder = root / "imagenet-s" / "ImageNetS50"
    wnids = [f"n{index:08d}" for index in range(100, 150)]
    for index, wnid in enumerate(wnids[:2]):
        _image(folder / "validation" / wnid / f"ILSVRC2012_val_0000000{index}.JPEG", COLOURS[index], size=(H, W))
        ids = np.array(IMAGENET_S_IDS, dtype=np.int64)
        rgb = np.zeros((H, W, 3), dtype=np.uint8)
        rgb[0, : len(ids), 0], rgb[0, : len(ids), 1] = ids % 256, ids // 256
        path = folder / "validation-segmentation" / wnid / f"ILSVRC2012_val_0000000{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path)
    if categories:
        (root / "imagenet-s" / "ImageNetS_categories_im50.txt").write_text("\n".join(wnids) + "\n")
    if names:  # the first two synsets share a name, like ImageNet's two cranes
        lines = [f"{wnid} {'crane' if index < 2 else f'thing {index}'}, other name" for index, wnid in enumerate(wnids)]
        (root / "imagenet-s" / "LOC_synset_mapping.txt").write_text("\n".join(lines) + "\n")
    return folder


# ---------------------------------------------------------------------------------------------------------- readers


def test_voc21_reads_palette_indices_and_keeps_background(tmp_path: Path) -> None:
    folder = write_voc(tmp_path)
    dataset = PascalVOC(folder, "val")
    assert len(dataset) == 2
    assert dataset.image_ids == ("2008_000002", "2008_000003")
    assert dataset.class_names == read_class_names("voc21")
    assert len(dataset.class_names) == 21
    assert dataset.ignore_index == 255
    for index in range(2):
        sample = dataset[index]
        _assert_colour(sample, COLOURS[index])
        assert sample.label.dtype == np.uint8
        assert sample.label.shape == (H, W)
        assert _row(sample, 6) == [*VOC_RAW, index]  # palette indices, not colours
    assert dataset[-1].image_id == "2008_000003"
    assert isinstance(dataset, SegmentationDataset)


def test_voc20_ignores_background_and_shifts_classes(tmp_path: Path) -> None:
    dataset = PascalVOC(write_voc(tmp_path), "val", num_classes=20)
    assert dataset.class_names == read_class_names("voc20")
    assert _row(dataset[0], 6) == [255, 0, 14, 19, 255, 255]
    assert dataset.name == "voc20"


def test_voc_accepts_the_devkit_folder_and_other_splits(tmp_path: Path) -> None:
    write_voc(tmp_path)
    dataset = PascalVOC(tmp_path / "VOCdevkit", "train")
    assert dataset.root == tmp_path / "VOCdevkit" / "VOC2012"
    assert dataset.image_ids == ("2008_000007",)


def test_voc_errors_name_the_missing_path_and_show_the_layout(tmp_path: Path) -> None:
    folder = write_voc(tmp_path)
    with pytest.raises(DatasetLayoutError, match=r"ImageSets/Segmentation/test\.txt is missing(.|\n)*train, val"):
        PascalVOC(folder, "test")
    (folder / "SegmentationClass" / "2008_000003.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"SegmentationClass/2008_000003\.png is missing.*\n.*Expected layout"):
        PascalVOC(folder, "val")
    with pytest.raises(DatasetLayoutError, match=r"JPEGImages is missing(.|\n)*SegmentationClass/<id>\.png"):
        PascalVOC(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="21 labels with background or 20 without"):
        PascalVOC(folder, num_classes=19)  # type: ignore[arg-type]


def test_labels_with_impossible_values_or_wrong_size_are_refused(tmp_path: Path) -> None:
    folder = write_voc(tmp_path, raw=[0, 21, 254])
    with pytest.raises(ValueError, match=r"label values 21, 254; .* 0-20 and 255"):
        PascalVOC(folder)[0]
    _label(folder / "SegmentationClass" / "2008_000002.png", [0], size=(H + 1, W))
    with pytest.raises(ValueError, match="does not belong to this image"):
        PascalVOC(folder)[0]
    Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)).save(folder / "SegmentationClass" / "2008_000002.png")
    with pytest.raises(ValueError, match="RGB image, not a single-channel label map"):
        PascalVOC(folder)[0]
    with pytest.raises(IndexError, match="out of range for 2 images"):
        PascalVOC(folder)[2]


@pytest.mark.parametrize(("num_classes", "expected"), [(60, [0, 1, 59, 255, 0]), (59, [255, 0, 58, 255, 255])])
def test_pascal_context(tmp_path: Path, num_classes: int, expected: list[int]) -> None:
    write_voc(tmp_path, year="VOC2010", context=True)
    dataset = PascalContext(tmp_path / "VOCdevkit", "val", num_classes=num_classes)  # type: ignore[arg-type]
    assert dataset.root.name == "VOC2010"
    assert len(dataset) == 2
    assert len(dataset.class_names) == num_classes
    assert dataset.class_names == read_class_names(f"context{num_classes}")
    assert _row(dataset[0], 5) == expected
    _assert_colour(dataset[1], COLOURS[1])


def test_pascal_context_refuses_full_459_class_labels(tmp_path: Path) -> None:
    folder = write_voc(tmp_path, year="VOC2010", context=True, raw=[0, 60, 400 - 256])
    with pytest.raises(ValueError, match="0-59 and 255"):
        PascalContext(folder)[0]


def test_coco_stuff_171_skips_unused_ids(tmp_path: Path) -> None:
    dataset = COCOStuff(write_coco_stuff(tmp_path), "val")
    assert dataset.split == "val2017"
    assert dataset.label_format == "stuffthingmaps"
    assert dataset.class_names == read_class_names("coco-stuff171")
    sample = dataset[0]
    _assert_colour(sample, COLOURS[0])
    # person -> 0, street sign (unused) -> ignore, stop sign -> 11, banner -> 80, wood -> 170, unlabelled -> ignore
    assert _row(sample, 6) == [0, 255, 11, 80, 170, 255]
    assert dataset.class_names[11] == "stop sign"
    assert dataset.class_names[80] == "banner"


def test_coco_stuff_27_maps_fine_to_coarse(tmp_path: Path) -> None:
    dataset = COCOStuff(write_coco_stuff(tmp_path), num_classes=27)
    names = dataset.class_names
    assert len(names) == 27
    row = _row(dataset[1], 6)
    assert [names[value] if value != 255 else None for value in row] == [
        "person",
        None,
        "outdoor",
        "textile",
        "solid",
        None,
    ]


def test_coco_stuff_native_folders_and_mmseg_train_ids(tmp_path: Path) -> None:
    native = COCOStuff(write_coco_stuff(tmp_path / "a", native=True))
    assert _row(native[0], 6) == [0, 255, 11, 80, 170, 255]
    converted = COCOStuff(write_coco_stuff(tmp_path / "b", train_ids=True), num_classes=27)
    assert converted.label_format == "trainids"
    assert [converted.class_names[v] for v in _row(converted[0], 4)] == ["person", "outdoor", "textile", "solid"]


def test_coco_stuff_image_list_and_errors(tmp_path: Path) -> None:
    root = write_coco_stuff(tmp_path)
    (tmp_path / "list.txt").write_text("000000000285\n")
    assert COCOStuff(root, image_list=tmp_path / "list.txt").image_ids == ("000000000285",)
    with pytest.raises(DatasetLayoutError, match=r"images/train2017 is missing(.|\n)*splits found: val2017"):
        COCOStuff(root, "train2017")
    (root / "images" / "val2017" / "000000000139.jpg").unlink()
    with pytest.raises(DatasetLayoutError, match=r"000000000139\.jpg is missing"):
        COCOStuff(root)


def test_coco_fine_to_coarse_table() -> None:
    table = coco_stuff_coarse_table()
    fine, coarse = read_class_names("coco-stuff171"), read_class_names("coco-stuff27")
    assert table.shape == (256,)
    assert table[255] == 255
    # The three classes ReCo's shifted table gets wrong, and a few others, by the COCO-Stuff hierarchy.
    expected = {
        "tv": "electronic",
        "book": "indoor",
        "banner": "textile",
        "person": "person",
        "fog": "water",
        "wood": "solid",
        "hot dog": "food-things",
        "salad": "food-stuff",
        "light": "furniture-stuff",
    }
    for name, coarse_name in expected.items():
        assert coarse[table[fine.index(name)]] == coarse_name
    assert sorted(set(table[:171].tolist())) == list(range(27))  # every coarse class has a fine one


def test_coco_object_from_instances(tmp_path: Path) -> None:
    dataset = COCOObject(write_coco_instances(tmp_path))
    assert dataset.source == "instances"
    assert dataset.class_names == read_class_names("coco-object81")
    assert dataset.image_ids == ("000000000139", "000000000285")
    label = dataset[0].label
    _assert_colour(dataset[0], COLOURS[0])
    assert label[0, 0] == 0  # background
    assert label[1, 1] == 1  # person
    assert label[2, 2] == label[3, 3] == dataset.class_names.index("dog") == 17  # the small dog wins the overlap
    assert label[0, 6] == dataset.class_names.index("car")  # crowd region keeps its class
    assert label[1, 6] == 1  # ... except where an instance lies on it
    polygon = dataset[1].label
    assert polygon[2, 2] == polygon[3, 4] == 17
    assert polygon[5, 7] == 0


def test_coco_object_from_a_coco_file_of_other_categories(tmp_path: Path) -> None:
    dataset = COCOObject(
        write_coco_instances(tmp_path, categories=[{"id": 7, "name": "cow"}, {"id": 3, "name": "grass"}])
    )
    assert dataset.class_names == ("background", "grass", "cow")  # category-id order
    label = dataset[0].label
    assert label[1, 1] == 2  # cow
    assert label[2, 2] == 1  # grass


def test_coco_object_from_stuff_maps_and_converted_maps(tmp_path: Path) -> None:
    root = write_coco_stuff(tmp_path)
    stuff = COCOObject(root)
    assert stuff.source == "stuffthingmaps"
    # person -> 1, unused -> ignore, stop sign -> 12, banner (stuff) -> background, wood -> background, unlabelled
    assert _row(stuff[0], 6) == [1, 255, 12, 0, 0, 255]
    for stem in ("000000000139", "000000000285"):
        _label(root / "annotations" / "val2017" / f"{stem}_instanceTrainIds.png", [0, 1, 80, 255])
    converted = COCOObject(root)
    assert converted.source == "converted"
    assert _row(converted[1], 4) == [0, 1, 80, 255]
    with pytest.raises(DatasetLayoutError, match=r"instances_val2017\.json is missing(.|\n)*source='instances'"):
        COCOObject(root, source="instances")


@pytest.mark.parametrize(
    ("num_classes", "expected"),
    [(19, [255, 255, 0, 255, 11, 18, 255]), (27, [255, 255, 0, 2, 17, 26, 255])],
)
def test_cityscapes(tmp_path: Path, num_classes: int, expected: list[int]) -> None:
    dataset = Cityscapes(write_cityscapes(tmp_path), "val", num_classes=num_classes)  # type: ignore[arg-type]
    assert dataset.image_ids == ("frankfurt/frankfurt_000000_000294", "lindau/lindau_000001_000019")
    assert dataset.class_names == read_class_names(f"cityscapes{num_classes}")
    assert _row(dataset[0], 7) == expected
    _assert_colour(dataset[1], COLOURS[1])
    with pytest.raises(DatasetLayoutError, match=r"gtFine/train is missing(.|\n)*splits found in .*gtFine: val"):
        Cityscapes(tmp_path, "train")


def test_cityscapes_27_names_follow_label_ids() -> None:
    names = read_class_names("cityscapes27")
    assert (names[0], names[2], names[17], names[26]) == ("road", "parking", "person", "bicycle")  # ids 7, 9, 24, 33


def test_ade20k_shifts_labels_and_ignores_other(tmp_path: Path) -> None:
    folder = write_ade20k(tmp_path)
    dataset = ADE20K(tmp_path, "val")  # the parent folder and the short split name work too
    assert dataset.root == folder
    assert dataset.split == "validation"
    assert len(dataset.class_names) == 150
    assert (dataset.class_names[0], dataset.class_names[149]) == ("wall", "flag")
    assert _row(dataset[0], 4) == [255, 0, 149, 0]
    assert _row(dataset[1], 4) == [255, 0, 149, 1]
    with pytest.raises(DatasetLayoutError, match=r"images/training is missing(.|\n)*ADEChallengeData2016/"):
        ADE20K(folder, "training")


@pytest.mark.parametrize("images_folder", [True, False])
def test_kitti_step_reads_the_red_channel(tmp_path: Path, images_folder: bool) -> None:
    dataset = KITTISTEP(write_kitti_step(tmp_path, images_folder=images_folder))
    assert dataset.image_ids == ("0002/000000", "0002/000001", "0006/000000")
    assert dataset.class_names == read_class_names("cityscapes19")
    sample = dataset[2]
    assert _row(sample, 4) == [0, 13, 255, 18]
    assert sample.label.dtype == np.uint8
    assert sample.label.flags.c_contiguous
    _assert_colour(sample, COLOURS[2])


def test_kitti_step_refuses_values_beyond_the_19_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="0-18 and 255 in the red channel"):
        KITTISTEP(write_kitti_step(tmp_path, red=[0, 19]))[0]


def test_imagenet_s_decodes_rgb_ids(tmp_path: Path) -> None:
    folder = write_imagenet_s(tmp_path)
    dataset = ImageNetS(folder, "val")
    assert dataset.variant == 50
    assert dataset.ignore_index == 1000
    assert dataset.names_are_wnids
    assert len(dataset.class_names) == 51
    assert dataset.class_names[:2] == ("background", "n00000100")
    sample = dataset[0]
    assert sample.label.dtype == np.int64
    assert _row(sample, 5) == IMAGENET_S_IDS
    assert sample.image_id == "n00000100/ILSVRC2012_val_00000000"
    _assert_colour(dataset[1], COLOURS[1])


def test_imagenet_s_names_from_a_synset_file(tmp_path: Path) -> None:
    write_imagenet_s(tmp_path, names=True)
    dataset = ImageNetS(tmp_path / "imagenet-s", variant=50)  # the parent of ImageNetS50, with the variant
    assert not dataset.names_are_wnids
    assert dataset.class_names[:4] == ("background", "crane (n00000100)", "crane (n00000101)", "thing 2")


def test_imagenet_s_without_its_category_list_says_where_to_get_it(tmp_path: Path) -> None:
    folder = write_imagenet_s(tmp_path, categories=False)
    with pytest.raises(DatasetLayoutError, match=r"ImageNetS_categories_im50\.txt(.|\n)*LUSSeg/ImageNet-S"):
        ImageNetS(folder)
    with pytest.raises(DatasetLayoutError, match="pass variant=919, 300 or 50"):
        ImageNetS(tmp_path)


def test_imagenet_s_refuses_ids_beyond_the_variant(tmp_path: Path) -> None:
    folder = write_imagenet_s(tmp_path)
    (tmp_path / "imagenet-s" / "ImageNetS_categories_im50.txt").rename(tmp_path / "cats.txt")
    dataset = ImageNetS(folder, categories_file=tmp_path / "cats.txt")
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[0, 0] = (51, 0, 0)
    Image.fromarray(rgb).save(sorted((folder / "validation-segmentation").glob("*/*.png"))[0])
    with pytest.raises(ValueError, match=r"ids \[51\]"):
        dataset[0]


# ---------------------------------------------------------------------------------------------------- open_dataset

WRITERS: dict[str, tuple[Callable[[Path], Path], type, int]] = {
    "voc21": (write_voc, PascalVOC, 21),
    "voc20": (write_voc, PascalVOC, 20),
    "context60": (lambda root: write_voc(root, year="VOC2010", context=True), PascalContext, 60),
    "context59": (lambda root: write_voc(root, year="VOC2010", context=True), PascalContext, 59),
    "coco-object": (write_coco_instances, COCOObject, 81),
    "coco-stuff171": (write_coco_stuff, COCOStuff, 171),
    "coco-stuff27": (write_coco_stuff, COCOStuff, 27),
    "cityscapes19": (write_cityscapes, Cityscapes, 19),
    "cityscapes27": (write_cityscapes, Cityscapes, 27),
    "ade20k": (write_ade20k, ADE20K, 150),
    "kitti-step": (write_kitti_step, KITTISTEP, 19),
    "imagenet-s50": (write_imagenet_s, ImageNetS, 51),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_open_dataset_by_name(tmp_path: Path, name: str) -> None:
    writer, reader, count = WRITERS[name]
    root = writer(tmp_path)
    dataset = open_dataset(root, name=name)
    assert type(dataset) is reader
    assert len(dataset.class_names) == count
    assert len(dataset) >= 2
    sample = dataset[0]
    assert sample.image.shape[:2] == sample.label.shape


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("voc21", "voc21"),
        ("context60", "context60"),
        ("coco-stuff171", "coco-stuff171"),
        ("cityscapes19", "cityscapes19"),
        ("ade20k", "ade20k"),
        ("kitti-step", "kitti-step"),
        ("imagenet-s50", "imagenet-s50"),
        ("coco-object", "coco-object"),
    ],
)
def test_open_dataset_detects_the_layout(tmp_path: Path, name: str, default: str) -> None:
    root = WRITERS[name][0](tmp_path)
    dataset = open_dataset(root)
    assert isinstance(dataset, WRITERS[name][1])
    assert getattr(dataset, "name", None) == default


def test_open_dataset_default_split_and_layout_names(tmp_path: Path) -> None:
    root = write_voc(tmp_path)
    assert len(open_dataset(root, split="train", name="voc")) == 1
    assert open_dataset(root).class_names == read_class_names("voc21")
