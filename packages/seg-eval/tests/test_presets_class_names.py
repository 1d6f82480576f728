"""The shipped class-name files: counts, consistency between variants, prompt files, the fine->coarse mapping."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from seg_core import ConfigError
from seg_eval.datasets import coco_stuff_fine_ids
from seg_eval.presets import list_class_files, read_class_mapping, read_class_names, read_prompt_names

COUNTS = {
    "voc21": 21,
    "voc20": 20,
    "context60": 60,
    "context59": 59,
    "coco-object81": 81,
    "coco-stuff171": 171,
    "coco-stuff27": 27,
    "cityscapes19": 19,
    "cityscapes27": 27,
    "ade20k150": 150,
    "kitti-step19": 19,
}


@pytest.mark.parametrize(("name", "count"), sorted(COUNTS.items()))
def test_label_file_counts(name: str, count: int) -> None:
    names = read_class_names(name)
    assert len(names) == count
    assert all(name == name.strip() and name for name in names)
    assert read_class_names(f"{name}.txt") == names


def test_variants_agree() -> None:
    assert read_class_names("voc20") == read_class_names("voc21")[1:]
    assert read_class_names("context59") == read_class_names("context60")[1:]
    assert read_class_names("coco-stuff171")[:80] == read_class_names("coco-object81")[1:]
    assert read_class_names("kitti-step19") == read_class_names("cityscapes19")
    assert read_class_names("voc21")[0] == read_class_names("context60")[0] == "background"
    # Every VOC class is one of Context's 59 (Context extends VOC 2010), up to the table/diningtable rename.
    assert set(read_class_names("voc20")) - set(read_class_names("context59")) == {"diningtable"}


def test_a_few_known_positions() -> None:
    assert read_class_names("voc21")[15] == "person"
    assert read_class_names("cityscapes19")[13] == "car"
    assert read_class_names("ade20k150")[12] == "person"
    assert read_class_names("coco-stuff171")[84] == "building-other"  # the 5th stuff class
    assert coco_stuff_fine_ids()[84] == 96 - 1  # its COCO id is 96, stored as 95 in the label PNGs
    assert read_class_names("context59")[36] == "person"


PROMPT_FILES = [name for name in list_class_files() if re.fullmatch(r".+_[a-z]+\.txt", name)]


def test_prompt_files_are_listed() -> None:
    assert {
        "voc21_sclip.txt",
        "voc20_sclip.txt",
        "coco-object81_sclip.txt",
        "voc21_groupvit.txt",
        "context60_groupvit.txt",
        "cityscapes27_reco.txt",
        "coco-stuff171_reco.txt",
    } <= set(PROMPT_FILES)


@pytest.mark.parametrize("file_name", PROMPT_FILES)
def test_prompt_files_have_one_row_per_label(file_name: str) -> None:
    text = resources.files("seg_eval.presets").joinpath("classes", file_name).read_text(encoding="utf-8")
    match = re.search(r"Label file: (\S+)\.txt", text)
    assert match, f"{file_name} does not name its label file"
    assert len(read_prompt_names(file_name)) == len(read_class_names(match.group(1)))


def test_sclip_voc21_prompts() -> None:
    rows = read_prompt_names("voc21_sclip")
    assert rows[0][:3] == ("sky", "wall", "tree")
    assert len(rows[0]) == 26
    labels = read_class_names("voc21")
    renamed = {labels[i]: row[0] for i, row in enumerate(rows) if row[0] != labels[i]}
    assert renamed == {"background": "sky", "boat": "ship", "diningtable": "table", "tvmonitor": "television monitor"}
    assert rows[labels.index("person")][1:3] == ("person in shirt", "person in jeans")


def test_fine_to_coarse_mapping_covers_both_lists() -> None:
    mapping = read_class_mapping("coco-stuff171_to_27")
    assert tuple(mapping) == read_class_names("coco-stuff171")
    assert set(mapping.values()) == set(read_class_names("coco-stuff27"))
    assert mapping["wall-brick"] == "wall"
    assert mapping["teddy bear"] == "indoor"


def test_bad_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no shipped class-name file 'voc22\.txt'; shipped: .*voc21\.txt"):
        read_class_names("voc22")
    path = tmp_path / "mine.txt"
    path.write_text("# comment\ncow\n\ngrass\ncow\n")
    with pytest.raises(ConfigError, match="repeats cow"):
        read_class_names(path)
    path.write_text("cow, heifer\ngrass\n")
    assert read_prompt_names(str(path)) == (("cow", "heifer"), ("grass",))
    path.write_text("cow, \n")
    with pytest.raises(ConfigError, match="row 0 has an empty name"):
        read_prompt_names(path)
    path.write_text("cow grass\n")
    with pytest.raises(ConfigError, match="expected '<name><TAB><name>'"):
        read_class_mapping(path)
    with pytest.raises(ConfigError, match="not found"):
        read_class_names(tmp_path / "absent.txt")
