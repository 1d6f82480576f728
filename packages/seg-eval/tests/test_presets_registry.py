"""Built-in protocol presets: they validate, round-trip, match the published settings and the dataset names; the
registry, user preset files and concept sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from seg_core import (
    CLIP_MEAN_STD,
    IMAGENET_MEAN_STD,
    BackgroundClass,
    BackgroundThreshold,
    ConceptSet,
    ConfigError,
    ProtocolPreset,
    resolve_templates,
)
from seg_eval.datasets import DATASET_NAMES, IMAGENET_S_IGNORE_INDEX
from seg_eval.presets import (
    PresetInfo,
    get_preset,
    list_class_files,
    list_presets,
    load_preset,
    preset_concepts,
    preset_info,
    read_class_names,
    register_preset,
    unregister_preset,
)
from seg_eval.presets.builtin import DATASET_LABEL_FILES
from seg_eval.world.classes import THING_NAMES

ALL = list_presets()


def test_every_family_is_there() -> None:
    for name in (
        "groupvit-voc21",
        "groupvit-context60",
        "groupvit-coco-object",
        "pgseg-voc21",
        "sclip-voc21",
        "sclip-voc20",
        "sclip-context60",
        "sclip-context59",
        "sclip-coco-object",
        "sclip-coco-stuff171",
        "sclip-cityscapes19",
        "sclip-ade20k",
        "reclip-voc20",
        "reclip-context59",
        "reclip-ade20k",
        "reclip-cityscapes19",
        "reclip-coco-stuff27",
        "maskclip-voc20",
        "maskclip-context59",
        "maskclip-coco-stuff171",
        "reco-cityscapes27",
        "reco-coco-stuff27",
        "reco-kitti-step",
        "zutis-coco-object",
        "zutis-imagenet-s919",
        "synthetic",
        "synthetic-object",
    ):
        assert name in ALL


@pytest.mark.parametrize("name", ALL)
def test_preset_validates_and_round_trips(name: str, tmp_path: Path) -> None:
    preset = get_preset(name)
    assert preset.name == name
    assert ProtocolPreset.parse(preset.model_dump(mode="json")) == preset
    assert ProtocolPreset.from_yaml(preset.to_yaml()) == preset
    assert ProtocolPreset.from_json(preset.to_json()) == preset
    saved = preset.save(tmp_path / f"{name}.yaml")
    assert load_preset(saved) == preset
    assert load_preset(saved).signature() == preset.signature()
    assert preset.refinement == "none"
    resolve_templates(preset.templates)  # a known template set


@pytest.mark.parametrize("name", ALL)
def test_preset_class_names_are_the_dataset_labels(name: str) -> None:
    preset, info = get_preset(name), preset_info(name)
    assert preset.dataset in DATASET_NAMES or preset.dataset == "synthetic"
    if preset.class_names is None:  # taken from the dataset at evaluation time
        assert preset.dataset in {"synthetic", "imagenet-s919"}
        return
    if preset.dataset == "synthetic":  # synthetic-object: the world's things on a background view of the world
        assert preset.class_names == ("background", *THING_NAMES)
        assert preset.background.kind == "class"
        assert preset_concepts(name).label_names == preset.class_names
        return
    label_file = DATASET_LABEL_FILES[preset.dataset]
    assert preset.class_names == read_class_names(label_file)
    assert preset.class_names_file == f"{label_file}.txt"
    assert (preset.background.kind != "none") <= (preset.class_names[0] == "background")
    if info.prompt_names is not None:
        assert info.prompt_file in list_class_files()
        expected = 171 if info.prediction_map == "coco-stuff171_to_27" else len(preset.class_names)
        assert len(info.prompt_names) == expected
        assert set(info.synonyms) <= set(info.prompt_names)
    concepts = preset_concepts(name)
    if info.prediction_map is None:
        assert concepts.num_labels == len(preset.class_names)


def test_groupvit_family_settings() -> None:
    thresholds = {
        "groupvit-voc21": 0.95,
        "groupvit-context60": 0.35,
        "groupvit-coco-object": 0.95,
        "pgseg-voc21": 0.95,
        "pgseg-context60": 0.36,
        "pgseg-coco-object": 0.85,
    }
    for name, threshold in thresholds.items():
        preset = get_preset(name)
        assert preset.resize.short_side == 448
        assert preset.mode == "slide"
        assert preset.window is not None
        assert (preset.window.crop, preset.window.stride) == (448, 224)
        assert preset.background == BackgroundThreshold(threshold=threshold, score="probability")
        assert preset.templates == "single"
        assert preset.normalization == IMAGENET_MEAN_STD
    prompts = preset_info("groupvit-voc21").prompt_names
    assert prompts is not None
    assert (prompts[0], prompts[11], prompts[16], prompts[20]) == ("background", "table", "plant", "monitor")
    assert get_preset("groupvit-voc21").class_names[11] == "diningtable"  # type: ignore[index]
    assert preset_info("groupvit-context60").prompt_names[1] == "airplane"  # type: ignore[index]
    assert preset_info("groupvit-coco-object").prompt_names is None  # COCO names are prompted as they are


def test_sclip_family_settings() -> None:
    voc = get_preset("sclip-voc21")
    assert (voc.resize.short_side, voc.mode) == (336, "slide")
    assert voc.window is not None
    assert (voc.window.crop, voc.window.stride) == (224, 112)
    assert voc.normalization == CLIP_MEAN_STD
    assert voc.templates == "imagenet80"
    assert voc.logit_scale == 65
    assert isinstance(voc.background, BackgroundClass)
    assert voc.background.names[:3] == ("sky", "wall", "tree")
    assert len(voc.background.names) == 26
    info = preset_info("sclip-voc21")
    assert info.prompt_names is not None
    assert info.prompt_names[0] == "background"
    assert {"ship", "table", "television monitor"} <= set(info.prompt_names)
    assert info.synonyms["person"][0] == "person in shirt"
    assert "prob_thd 0.1" in info.notes
    assert get_preset("sclip-cityscapes19").resize.short_side == 560
    assert get_preset("sclip-coco-stuff171").resize.short_side == 448
    assert get_preset("sclip-context60").background == BackgroundClass(names=("background",))
    assert get_preset("sclip-context59").background.kind == "none"
    assert "body" in preset_info("sclip-coco-object").synonyms["person"]
    assert "trafficlight" in preset_info("sclip-cityscapes19").prompt_names  # type: ignore[operator]


def test_whole_image_families() -> None:
    for name, short in {"reclip-voc20": 336, "reclip-context59": 448, "reclip-ade20k": 512}.items():
        preset = get_preset(name)
        assert (preset.mode, preset.resize.short_side, preset.background.kind) == ("whole", short, "none")
        assert preset.normalization == CLIP_MEAN_STD
        assert preset.templates == "imagenet85"
    maskclip = get_preset("maskclip-context59")
    assert (maskclip.resize.short_side, maskclip.resize.max_long_side) == (512, 520)
    assert maskclip.normalization == IMAGENET_MEAN_STD
    reco = get_preset("reco-cityscapes27")
    assert (reco.resize.short_side, reco.resize.center_crop, reco.resize.interpolation) == (320, 320, "nearest")
    assert "parking lot" in preset_info("reco-cityscapes27").prompt_names  # type: ignore[operator]
    assert get_preset("reco-kitti-step").resize.short_side is None
    assert "tree" in preset_info("reco-kitti-step").prompt_names  # type: ignore[operator]
    assert "vegetation" in get_preset("reco-kitti-step").class_names  # type: ignore[operator]
    stuff = preset_info("reco-coco-stuff27")
    assert stuff.prediction_map == "coco-stuff171_to_27"
    assert stuff.prompt_names is not None
    assert "building other" in stuff.prompt_names
    zutis = get_preset("zutis-coco-object")
    assert (zutis.templates, zutis.background, zutis.resize.short_side) == (
        "bare",
        BackgroundClass(names=("background",)),
        None,
    )
    assert get_preset("zutis-imagenet-s919").ignore_index == IMAGENET_S_IGNORE_INDEX
    synthetic = get_preset("synthetic")
    assert (synthetic.class_names, synthetic.mode, synthetic.resize.short_side) == (None, "whole", None)


def test_groupvit_and_pgseg_on_voc_are_comparable_but_sclip_is_not() -> None:
    assert get_preset("groupvit-voc21").signature() == get_preset("pgseg-voc21").signature()
    assert get_preset("groupvit-voc21").signature() != get_preset("sclip-voc21").signature()
    assert list_presets(dataset="context59") == (
        "maskclip-context59",
        "reclip-context59",
        "sclip-context59",
    )


def test_unknown_preset_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'sclip-voc22'; known presets: groupvit-coco-object"):
        get_preset("sclip-voc22")
    with pytest.raises(ConfigError, match=r"neither a preset name nor an existing preset file.*sclip-voc21"):
        load_preset(tmp_path / "missing.yaml")


def test_user_preset_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: my-voc\ndataset: voc21\nresize: {short_side: 512}\nmode: slide\nwindow: {crop: 512, stride: 256}\n"
        "background: {kind: threshold, threshold: 0.7}\ntemplates: single\n"
    )
    preset = load_preset(str(path))
    assert preset.window is not None
    assert (preset.window.stride, preset.background) == (256, BackgroundThreshold(threshold=0.7))
    path.write_text("name: bad\nmode: slide\nwindo: {crop: 1, stride: 1}\n")
    with pytest.raises(ConfigError, match=r"windo: unknown field"):
        load_preset(path)


def test_register_preset() -> None:
    preset = get_preset("sclip-voc20").model_copy(update={"name": "test-preset"})
    register_preset(preset)
    try:
        assert get_preset("test-preset") == preset
        assert load_preset("test-preset") == preset
        with pytest.raises(ValueError, match="registered already"):
            register_preset(preset)
        with pytest.raises(ValueError, match=r"synonyms given for classes it does not have: \['unicorn'\]"):
            register_preset(preset, PresetInfo(synonyms={"unicorn": ("horse",)}), replace=True)
    finally:
        unregister_preset("test-preset")
    assert "test-preset" not in list_presets()


def test_preset_concepts() -> None:
    concepts = preset_concepts("sclip-voc21")
    assert isinstance(concepts, ConceptSet)
    assert concepts.num_labels == 21
    assert concepts.label_names[0] == "background"
    assert concepts.label_names[4] == "ship"  # label 4 is boat, prompted as "ship"
    assert concepts.prompts_for("person")[:2] == ("person", "person in shirt")
    assert concepts.template_list() == resolve_templates("imagenet80")
    assert isinstance(concepts.background, BackgroundClass)
    assert len(concepts.background.names) == 26
    with pytest.raises(ConfigError, match="pass class_names"):
        preset_concepts("synthetic")
    assert preset_concepts("synthetic", ["sky", "cow"]).names == ("sky", "cow")
    # With a background policy the dataset's label 0 is background, not a concept.
    zutis = preset_concepts("zutis-imagenet-s919", ["background", "n01", "n02"])
    assert (zutis.names, zutis.label_names) == (("n01", "n02"), ("background", "n01", "n02"))
    with pytest.raises(ConfigError, match="label 0 must be background, but it is 'sky'"):
        preset_concepts(get_preset("zutis-imagenet-s919"), ["sky", "cow"])
    with pytest.raises(ConfigError, match="choose the preset of this dataset"):
        preset_concepts("groupvit-voc21", read_class_names("voc20"))
    # An unregistered preset object: its own names, no prompt renames.
    custom = get_preset("groupvit-voc21").model_copy(update={"name": "custom"})
    assert preset_concepts(custom).names[10] == "diningtable"


def test_voc_labels_and_voc21_concepts_line_up() -> None:
    # Concept i of a background preset is label i + 1 of the dataset.
    labels = read_class_names("voc21")
    concepts = preset_concepts("groupvit-voc21")
    assert len(concepts.label_names) == len(labels)
    assert concepts.label_names[labels.index("cow")] == "cow"
