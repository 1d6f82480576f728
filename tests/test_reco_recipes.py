"""ReCo and ReCo+ recipes end to end on a small world with the bundled reference CLIP (seg-trainers + seg-zoo)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seg_core import ConceptSet, ConfigError, TrainConfig
from seg_coseg.context import CoSegConfig
from seg_eval.world import WorldConfig
from seg_models.clip import ClipModel, load_clip
from seg_models.reco import ReCoSegmenter, load_reference_embeddings
from seg_trainers.reco import (
    ReCoPlusRecipe,
    ReCoRecipe,
    WorldImages,
    build_reco,
    load_reco,
    load_reco_plus,
    make_pseudo_labels,
    read_reco_info,
    read_reco_plus_info,
    train_reco_plus,
)
from seg_zoo.bundled import REFERENCE_CLIP, bundled_model_dir

CONCEPTS = ("cow", "grass", "water", "sky")


@pytest.fixture(scope="module")
def clip() -> ClipModel:
    return load_clip(f"local-dir:{bundled_model_dir(REFERENCE_CLIP)}")


def _recipe(**overrides: object) -> ReCoRecipe:
    settings: dict[str, object] = {
        "collection_size": 160,
        "k": 8,
        "concepts": CONCEPTS,
        "coseg": CoSegConfig(context_concepts=("grass", "sky", "water")),
        "templates": ("a photo of a {}.", "a photo of the {}."),
    }
    settings.update(overrides)
    return ReCoRecipe.parse(
        {key: value.model_dump() if hasattr(value, "model_dump") else value for key, value in settings.items()}
    )


@pytest.fixture(scope="module")
def reco_dir(clip: ClipModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = build_reco(_recipe(), clip, tmp_path_factory.mktemp("reco"), clip_source="bundled:synthetic-clip")
    return run.model_dir


def test_build_reco_writes_archives_references_and_purity(reco_dir: Path) -> None:
    run_dir = reco_dir.parent
    archive = json.loads((run_dir / "archive.json").read_text())
    assert [c["concept"] for c in archive["concepts"]] == list(CONCEPTS)
    assert all(len(c["items"]) == 8 for c in archive["concepts"])
    purity = json.loads((run_dir / "purity.json").read_text())
    # The reference CLIP retrieves stuff almost perfectly (the study measured P@50 = 1.0 for grass and sky).
    assert purity["grass"]["8"] >= 0.75
    assert purity["sky"]["8"] >= 0.75
    references = load_reference_embeddings(reco_dir)
    assert references.names == CONCEPTS
    torch.testing.assert_close(references.embeddings.norm(dim=-1), torch.ones(len(CONCEPTS)), atol=1e-3, rtol=0)
    info = read_reco_info(reco_dir)
    assert info["clip"] == "bundled:synthetic-clip"
    assert info["recipe"]["k"] == 8


def test_rerun_reuses_the_store_and_refuses_another_collection(clip: ClipModel, reco_dir: Path) -> None:
    run_dir = reco_dir.parent
    shard = next((run_dir / "store").glob("shard-*.npy"))
    before = shard.stat().st_mtime_ns
    build_reco(_recipe(), clip, run_dir, clip_source="bundled:synthetic-clip")
    assert shard.stat().st_mtime_ns == before  # nothing re-embedded
    with pytest.raises(ConfigError):
        build_reco(_recipe(collection_size=100), clip, run_dir, clip_source="bundled:synthetic-clip")


def test_reco_segments_with_the_built_references(clip: ClipModel, reco_dir: Path) -> None:
    segmenter = load_reco(reco_dir, clip)
    assert isinstance(segmenter, ReCoSegmenter)
    images = WorldImages(WorldConfig(seed=5), "val", 2)
    batch = torch.stack([images.pixels(0), images.pixels(1)])
    output = segmenter.segment(batch, ConceptSet(names=("sky", "cow")))
    assert output.logits.shape == (2, 2, 64, 64)
    with pytest.raises(ConfigError, match="duck"):
        segmenter.segment(batch, ConceptSet(names=("duck",)))


def test_reco_plus_trains_on_pseudo_labels_and_loads(clip: ClipModel, reco_dir: Path, tmp_path: Path) -> None:
    reco = load_reco(reco_dir, clip)
    concepts = ConceptSet(names=CONCEPTS)
    recipe = ReCoPlusRecipe(
        num_images=12,
        batch_size=4,
        train=TrainConfig(max_steps=4, lr=5e-4, log_every=1, progress=False, tensorboard=False),
    )
    run = train_reco_plus(recipe, reco, concepts, tmp_path)
    labels = np.load(run.pseudo_labels)
    images = WorldImages(recipe.world, recipe.split, 12)
    # The pseudo-labels are exactly ReCo's argmax on the target images.
    expected = reco.segment(torch.stack([images.pixels(i) for i in range(3)]), concepts).labels.numpy()
    np.testing.assert_array_equal(labels[:3], expected)
    assert labels.shape == (12, 64, 64)
    assert run.result.final_step == 4
    assert all(np.isfinite(record["loss"]) for record in run.result.history)

    info = read_reco_plus_info(run.model_dir)
    assert info.label_names == CONCEPTS
    assert info.image_size == (64, 64)
    weights = (run.model_dir / "model.safetensors").stat().st_size
    assert weights < 4_000_000  # fp16 and small: fit for bundling
    segmenter = load_reco_plus(run.model_dir)
    output = segmenter.segment(torch.stack([images.pixels(0)]), ConceptSet(names=("water", "cow")))
    assert output.logits.shape == (1, 2, 64, 64)

    with pytest.raises(ConfigError, match="not a ReCo\\+ model folder"):
        read_reco_plus_info(reco_dir)
    with pytest.raises(ConfigError, match="not a ReCo model folder"):
        read_reco_info(run.model_dir)


def test_make_pseudo_labels_refuses_too_many_labels(clip: ClipModel, reco_dir: Path) -> None:
    names = tuple(f"class {i}" for i in range(300))
    with pytest.raises(ValueError, match="uint8"):
        make_pseudo_labels(load_reco(reco_dir, clip), WorldImages(WorldConfig(), "val", 1), ConceptSet(names=names))


def test_recipe_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="colection_size"):
        ReCoRecipe.parse({"colection_size": 10})
    with pytest.raises(ConfigError, match=r"\n  k: Input should be greater than 0"):
        ReCoRecipe.parse({"k": 0})
    with pytest.raises(ConfigError, match="batch_size"):
        ReCoPlusRecipe.parse({"batch_size": 0})


class _AllSecond:
    """A refiner that puts every pixel on label 1 (to see that refined probabilities decide the pseudo-labels)."""

    def refine(self, images: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        refined = torch.zeros_like(probabilities)
        refined[:, 1] = 1.0
        return refined


def test_pseudo_labels_take_the_refined_probabilities(clip: ClipModel, reco_dir: Path) -> None:
    images = WorldImages(WorldConfig(), "val", 2)
    labels = make_pseudo_labels(load_reco(reco_dir, clip), images, ConceptSet(names=CONCEPTS), refiner=_AllSecond())
    assert labels.shape == (2, 64, 64)
    assert (labels == 1).all()
