"""Validation rules of concept sets, presets, archives, records and zoo entries."""

from __future__ import annotations

import pytest

from seg_core import (
    IMAGENET_TEMPLATES,
    TEMPLATE_SETS,
    Archive,
    ArchiveItem,
    BackgroundClass,
    BackgroundThreshold,
    ConceptArchive,
    ConceptSet,
    ConfigError,
    ProtocolPreset,
    PseudoMaskRecord,
    PseudoMaskSet,
    ResizeRule,
    SlidingWindow,
    ZooEntry,
    resolve_templates,
)


def test_template_sets() -> None:
    assert len(IMAGENET_TEMPLATES) == 80
    assert len(set(IMAGENET_TEMPLATES)) == 80
    assert len(TEMPLATE_SETS["imagenet85"]) == 85
    assert TEMPLATE_SETS["imagenet85"][:80] == IMAGENET_TEMPLATES
    assert all(t.count("{}") == 1 for t in TEMPLATE_SETS["imagenet85"])
    assert resolve_templates(("a {}",)) == ("a {}",)
    with pytest.raises(KeyError, match="unknown template set"):
        resolve_templates("nope")


def test_concept_set_from_names_and_labels() -> None:
    concepts = ConceptSet.from_names(" cow, grass ,sky,")
    assert concepts.names == ("cow", "grass", "sky")
    assert not concepts.has_background
    assert concepts.label_names == ("cow", "grass", "sky")
    with_bg = ConceptSet.from_names(["cow"], background={"kind": "threshold", "threshold": 0.3})
    assert isinstance(with_bg.background, BackgroundThreshold)
    assert with_bg.label_names == ("background", "cow")
    assert with_bg.num_labels == 2
    assert ConceptSet(names=("a",), templates="imagenet80").template_list() == IMAGENET_TEMPLATES


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"names": []}, "names"),
        ({"names": ["cow", "cow"]}, "repeated: cow"),
        ({"names": ["cow", " "]}, "non-empty"),
        ({"names": ["cow"], "templates": "imagenet81"}, "unknown template set"),
        ({"names": ["cow"], "templates": ["a photo"]}, "exactly one"),
        ({"names": ["cow"], "synonyms": {"horse": ["pony"]}}, "unknown classes"),
        ({"names": ["cow"], "background": {"kind": "magic"}}, "background"),
        ({"names": ["cow"], "background": {"kind": "threshold", "threshold": 1.5}}, "background.threshold.threshold"),
        ({"names": ["cow"], "background": {"kind": "class", "names": []}}, "non-empty"),
    ],
)
def test_concept_set_rejects(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ConceptSet.parse(data)


def test_prompts_for_includes_synonyms() -> None:
    concepts = ConceptSet(names=("person", "cow"), synonyms={"person": ("man", "woman")})
    assert concepts.prompts_for("person") == ("person", "man", "woman")
    assert concepts.prompts_for("cow") == ("cow",)
    with pytest.raises(KeyError, match="not in this concept set"):
        concepts.prompts_for("horse")


def test_preset_window_rules() -> None:
    with pytest.raises(ConfigError, match="window is missing"):
        ProtocolPreset.parse({"name": "p", "mode": "slide"})
    with pytest.raises(ConfigError, match=r"mode: slide"):
        ProtocolPreset.parse({"name": "p", "window": {"crop": 8, "stride": 4}})
    with pytest.raises(ConfigError, match="skipped"):
        SlidingWindow.parse({"crop": 8, "stride": 16})
    with pytest.raises(ConfigError, match="max_long_side"):
        ResizeRule.parse({"short_side": 512, "max_long_side": 256})


def test_preset_signature_tracks_settings_not_labels() -> None:
    base = ProtocolPreset(name="a", resize=ResizeRule(short_side=448), class_names=("cat", "dog"))
    renamed = base.model_copy(update={"name": "b", "class_names_file": "x.txt"})
    assert base.signature() == renamed.signature()
    assert len(base.signature()) == 16
    different = [
        base.model_copy(update={"resize": ResizeRule(short_side=336)}),
        base.model_copy(update={"background": BackgroundThreshold(threshold=0.5)}),
        base.model_copy(update={"background": BackgroundThreshold(threshold=0.4)}),
        base.model_copy(update={"refinement": "crf"}),
        base.model_copy(update={"templates": "single"}),
        base.model_copy(update={"class_names": ("cat", "horse")}),
    ]
    signatures = {base.signature(), *(p.signature() for p in different)}
    assert len(signatures) == len(different) + 1
    assert base.signature(["cat", "dog"]) == base.signature()
    assert base.signature(["dog", "cat"]) != base.signature()


def _items(*pairs: tuple[str, float]) -> list[dict[str, object]]:
    return [{"image_id": image_id, "score": score} for image_id, score in pairs]


def test_archive_rules() -> None:
    items = (ArchiveItem(image_id="a", score=0.9), ArchiveItem(image_id="b", score=0.5))
    archive = Archive(encoder="e", store="s", k=2, concepts=(ConceptArchive(concept="cow", items=items),))
    assert archive["cow"].image_ids == ("a", "b")
    assert archive.concept_names == ("cow",)
    with pytest.raises(KeyError, match="no archive for 'sky'"):
        archive["sky"]
    with pytest.raises(ConfigError, match="twice"):
        ConceptArchive.parse({"concept": "cow", "items": _items(("a", 1), ("a", 0))})
    with pytest.raises(ConfigError, match="not sorted"):
        ConceptArchive.parse({"concept": "cow", "items": _items(("a", 0), ("b", 1))})
    concept = {"concept": "cow", "items": [i.model_dump() for i in items]}
    with pytest.raises(ConfigError, match="longer than k=1"):
        Archive.parse({"encoder": "e", "store": "s", "k": 1, "concepts": [concept]})


def test_pseudo_mask_records() -> None:
    record = PseudoMaskRecord(image_id="a", mask_path="m.png", concept="cow", category_id=2)
    with pytest.raises(ConfigError, match="out of range"):
        PseudoMaskSet.parse({"label_names": ("bg", "cow"), "records": (record,)})
    with pytest.raises(ConfigError, match="source"):
        PseudoMaskRecord.parse({**record.model_dump(), "source": "magic"})


@pytest.mark.parametrize("name", ["reclip-vit-b16.voc", "groupvit-tiny.synthetic", "reco_plus-rn50.coco-stuff27"])
def test_zoo_names_accepted(name: str) -> None:
    entry = ZooEntry(name=name, method=name.split("-", maxsplit=1)[0], hf_hub_id="org/repo")
    assert entry.name == name
    assert entry.arch + "." + entry.tag == name


@pytest.mark.parametrize("name", ["ReCLIP.voc", "reclip", "reclip.voc.extra", "reclip vit.voc", ".voc"])
def test_zoo_names_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match=r"method-arch\.tag"):
        ZooEntry.parse({"name": name, "method": "m"})


def test_zoo_hub_id_shape() -> None:
    with pytest.raises(ConfigError, match="org/name"):
        ZooEntry.parse({"name": "a-b.c", "method": "a", "hf_hub_id": "no-slash"})


def test_zoo_entry_needs_a_weight_source() -> None:
    with pytest.raises(ConfigError, match="names no weights"):
        ZooEntry.parse({"name": "a-b.c", "method": "a"})
    with pytest.raises(ConfigError, match="weights_format must be 'open_clip'"):
        ZooEntry.parse({"name": "a-b.c", "method": "a", "open_clip": "ViT-B-16/openai"})
    entry = ZooEntry(name="a-b.c", method="a", open_clip="ViT-B-16/openai", weights_format="open_clip")
    assert entry.hf_hub_id is None
    assert ZooEntry(name="a-b.c", method="a", bundled="synthetic-clip").bundled == "synthetic-clip"
    assert isinstance(BackgroundClass().names, tuple)
