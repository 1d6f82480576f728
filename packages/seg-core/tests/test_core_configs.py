"""Round trips and error messages of every serialised seg-core model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from seg_core import (
    Archive,
    ArchiveItem,
    BackgroundClass,
    BackgroundThreshold,
    CheckpointManifest,
    ConceptArchive,
    ConceptSet,
    ConfigError,
    EvalConfig,
    FileDigest,
    MethodConfig,
    PaperRef,
    ProtocolPreset,
    PseudoMaskRecord,
    PseudoMaskSet,
    ResizeRule,
    ScheduleConfig,
    SegModel,
    SlidingWindow,
    TrainConfig,
    UpstreamWeights,
    ZooEntry,
    method_config_class,
    parse_method_config,
    registered_methods,
)


class ToyMethodConfig(MethodConfig):
    method: Literal["toy-method"] = "toy-method"
    width: int = 8
    concepts: ConceptSet = ConceptSet(names=("cow", "grass"))


def _examples() -> list[SegModel]:
    concepts = ConceptSet(
        names=("cow", "grass", "sky"),
        templates="imagenet85",
        synonyms={"cow": ("cattle",)},
        background=BackgroundThreshold(threshold=0.4),
    )
    preset = ProtocolPreset(
        name="voc21-slide448",
        dataset="voc",
        resize=ResizeRule(short_side=448),
        mode="slide",
        window=SlidingWindow(crop=448, stride=224),
        class_names=("background", "aeroplane"),
        background=BackgroundClass(names=("background", "sky", "wall")),
        refinement="pamr",
    )
    archive = Archive(
        encoder="open_clip:ViT-L-14-336/openai",
        store="synthetic-index",
        k=3,
        concepts=(ConceptArchive(concept="cow", items=(ArchiveItem(image_id="a", score=0.9),)),),
    )
    masks = PseudoMaskSet(
        label_names=("background", "cow"),
        records=(PseudoMaskRecord(image_id="a", mask_path="a.png", concept="cow", category_id=1, source="coseg"),),
    )
    entry = ZooEntry(
        name="reclip-vit-b16.voc",
        method="reclip",
        hf_hub_id="seg-toolkit/reclip-vit-b16-voc",
        concepts=concepts,
        upstream=(UpstreamWeights(name="clip", source="open_clip:ViT-B-16/openai", license="mit"),),
        paper=PaperRef(title="ReCLIP++", arxiv="2408.06747"),
    )
    manifest = CheckpointManifest(
        method="toy-method",
        method_config=ToyMethodConfig().model_dump(mode="json"),
        architecture={"width": 8, "depths": [2, 2]},
        label_names=("cow", "grass"),
        protocol=preset,
        files={"model.safetensors": FileDigest(sha256="0" * 64, size=10)},
    )
    return [
        concepts,
        preset,
        archive,
        masks,
        entry,
        manifest,
        TrainConfig(max_steps=10, schedule=ScheduleConfig(kind="poly", warmup_steps=2)),
        EvalConfig(method="maskclip", dataset="/data/voc"),
        ToyMethodConfig(),
    ]


@pytest.mark.parametrize("model", _examples(), ids=lambda m: type(m).__name__)
def test_json_and_yaml_round_trip(model: SegModel, tmp_path: Path) -> None:
    cls = type(model)
    assert cls.from_json(model.to_json()) == model
    assert cls.from_yaml(model.to_yaml()) == model
    for suffix in (".json", ".yaml", ".yml"):
        path = model.save(tmp_path / f"m{suffix}")
        assert cls.load(path) == model


@pytest.mark.parametrize("model", _examples(), ids=lambda m: type(m).__name__)
def test_models_are_frozen(model: SegModel) -> None:
    first_field = next(iter(type(model).model_fields))
    with pytest.raises(Exception, match="frozen"):
        setattr(model, first_field, None)


def test_unknown_key_names_the_nested_field_path() -> None:
    data = {"name": "p", "mode": "slide", "window": {"crop": 448, "stride": 224, "strid": 1}}
    with pytest.raises(ConfigError) as info:
        ProtocolPreset.parse(data)
    assert "window.strid: unknown field" in str(info.value)


def test_bad_value_names_field_value_and_source(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("max_steps: 10\nschedule:\n  kind: linear\n")
    with pytest.raises(ConfigError) as info:
        TrainConfig.load(path)
    message = str(info.value)
    assert str(path) in message
    assert "schedule.kind" in message
    assert "'linear'" in message


def test_missing_field_is_reported() -> None:
    with pytest.raises(ConfigError, match="max_steps: required field is missing"):
        TrainConfig.parse({})


def test_malformed_files_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="malformed YAML"):
        TrainConfig.from_yaml("max_steps: [1,")
    with pytest.raises(ConfigError, match="malformed JSON"):
        TrainConfig.from_json("{")
    with pytest.raises(ConfigError, match=r"\.json, \.yaml or \.yml"):
        TrainConfig(max_steps=1).save(tmp_path / "x.toml")
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.load(tmp_path / "missing.yaml")


def test_warmup_longer_than_training_is_rejected() -> None:
    with pytest.raises(ConfigError, match="warmup_steps"):
        TrainConfig.parse({"max_steps": 5, "schedule": {"warmup_steps": 6}})


def test_method_config_discriminator_dispatches() -> None:
    assert "toy-method" in registered_methods()
    assert method_config_class("toy-method") is ToyMethodConfig
    parsed = parse_method_config({"method": "toy-method", "width": 3})
    assert isinstance(parsed, ToyMethodConfig)
    assert parsed.width == 3
    with pytest.raises(ConfigError, match=r"unknown method 'nope'.*toy-method"):
        parse_method_config({"method": "nope"})
    with pytest.raises(ConfigError, match="discriminator"):
        parse_method_config({"width": 3})
    with pytest.raises(ConfigError, match="width"):
        parse_method_config({"method": "toy-method", "width": "wide"})


def test_method_name_clash_is_an_error() -> None:
    with pytest.raises(TypeError, match="taken"):

        class OtherToy(MethodConfig):
            method: Literal["toy-method"] = "toy-method"


def test_manifest_rebuilds_method_config() -> None:
    manifest = next(m for m in _examples() if isinstance(m, CheckpointManifest))
    again = CheckpointManifest.from_json(manifest.to_json())
    assert parse_method_config(dict(again.method_config)) == ToyMethodConfig()
    with pytest.raises(ConfigError, match="discriminator"):
        CheckpointManifest.parse({"method": "x", "method_config": {"width": 1}})


def test_manifest_refuses_another_major_version() -> None:
    assert CheckpointManifest.parse({"method": "m", "format_version": "1.7"}).format_version == "1.7"
    with pytest.raises(ConfigError, match=r"format_version.*major version 2.*upgrade"):
        CheckpointManifest.parse({"method": "m", "format_version": "2.0"})
    with pytest.raises(ConfigError, match=r"format_version.*major version 0"):
        CheckpointManifest.parse({"method": "m", "format_version": "0.3"})
    with pytest.raises(ConfigError, match=r"MAJOR\.MINOR"):
        CheckpointManifest.parse({"method": "m", "format_version": "one"})
    with pytest.raises(ConfigError, match="colour"):
        CheckpointManifest.parse({"method": "m", "colour": "red"})


def test_file_digest_requires_hex_sha256() -> None:
    with pytest.raises(ConfigError, match="sha256"):
        FileDigest.parse({"sha256": "xyz", "size": 1})
