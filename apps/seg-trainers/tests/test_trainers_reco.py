"""The ReCo recipe's plumbing with a tiny random CLIP (the end-to-end checks with the bundled CLIP live in tests/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seg_core import ConceptSet, ConfigError
from seg_coseg.context import CoSegConfig
from seg_models.clip import load_clip, register_model_config
from seg_models.reco import load_reference_embeddings
from seg_trainers.reco import ReCoRecipe, WorldImages, build_reco, load_reco


def test_build_reco_with_a_random_clip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    clip = load_clip(register_model_config())
    recipe = ReCoRecipe(
        collection_size=24,
        k=3,
        concepts=("cow", "grass"),
        templates=("a photo of a {}.",),
        coseg=CoSegConfig(context_concepts=("sky",)),
    )
    run = build_reco(recipe, clip, tmp_path, clip_source="random")
    archive = json.loads((tmp_path / "archive.json").read_text())
    # The context concept is retrieved too (its archive gates the others) but gets no reference embedding.
    assert [c["concept"] for c in archive["concepts"]] == ["cow", "grass", "sky"]
    assert load_reference_embeddings(run.model_dir).names == ("cow", "grass")
    segmenter = load_reco(run.model_dir, clip)
    image = WorldImages(recipe.world, "val", 1).pixels(0)[None]
    assert segmenter.segment(image, ConceptSet(names=("grass", "cow"))).logits.shape == (1, 2, 64, 64)


def test_world_images_ids_round_trip() -> None:
    images = WorldImages(ReCoRecipe().world, "index", 5)
    assert images.index_of(images.image_id(3)) == 3
    with pytest.raises(KeyError, match="not an image id"):
        images.index_of("val_000001")
    with pytest.raises(IndexError):
        images.pixels(5)


def test_recipe_typo_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="colection_size"):
        ReCoRecipe.parse({"colection_size": 3})
