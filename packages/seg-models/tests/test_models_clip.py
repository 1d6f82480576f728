"""CLIP loading through open_clip, custom configs, local-dir round trip, prompt ensembling and the text cache."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from seg_core import BackgroundClass, BackgroundThreshold, ConceptSet, ImageTextEncoder, Normalization
from seg_models.clip import (
    CONFIG_FILE_NAME,
    SYNTHETIC_CLIP_CONFIG,
    SYNTHETIC_CLIP_NAME,
    WEIGHTS_FILE_NAME,
    ClipModel,
    TextEmbeddingCache,
    concept_embeddings,
    ensemble_text_embeddings,
    load_clip,
    local_dir_config,
    register_model_config,
)


@pytest.fixture(scope="module")
def tiny_clip() -> ClipModel:
    torch.manual_seed(0)
    return load_clip(register_model_config())


class FakeTextEncoder:
    """Deterministic embeddings per string (seeded by its characters), counting how many strings it encoded."""

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.encoded: list[str] = []

    def embed_one(self, text: str) -> torch.Tensor:
        generator = torch.Generator().manual_seed(sum((i + 1) * ord(c) for i, c in enumerate(text)))
        return torch.randn(self.dim, generator=generator) * 3

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        self.encoded.extend(texts)
        return torch.stack([self.embed_one(text) for text in texts])


# ---------------------------------------------------------------------------------------------------------------
# Loading and configs
# ---------------------------------------------------------------------------------------------------------------


def test_registered_synthetic_config_builds_the_tiny_clip_by_name(tiny_clip: ClipModel) -> None:
    assert SYNTHETIC_CLIP_NAME in open_clip.list_models()
    visual = tiny_clip.visual
    assert isinstance(visual, open_clip.transformer.VisionTransformer)
    assert visual.grid_size == (8, 8)
    assert visual.conv1.out_channels == 128
    assert len(visual.transformer.resblocks) == 4
    assert visual.transformer.resblocks[0].attn.num_heads == 4
    assert tiny_clip.model.context_length == 32
    assert tiny_clip.embed_dim == 128
    assert tiny_clip.image_size == (64, 64)
    assert not tiny_clip.model.training


def test_register_is_idempotent_and_refuses_a_different_config_under_the_same_name() -> None:
    assert register_model_config() == SYNTHETIC_CLIP_NAME
    other = json.loads(json.dumps(SYNTHETIC_CLIP_CONFIG))
    other["embed_dim"] = 64
    with pytest.raises(ValueError, match="already has a different config"):
        register_model_config(SYNTHETIC_CLIP_NAME, other)
    with pytest.raises(ValueError, match="lacks"):
        register_model_config("seg-test-broken", {"embed_dim": 8})
    name = register_model_config("seg-test-overwrite", other)
    other["embed_dim"] = 32
    register_model_config(name, other, overwrite=True)
    assert open_clip.get_model_config(name)["embed_dim"] == 32


def test_clip_model_is_an_image_text_encoder_using_the_models_tokenizer(tiny_clip: ClipModel) -> None:
    assert isinstance(tiny_clip, ImageTextEncoder)
    tokens = tiny_clip.tokenize(["a photo of a cow.", "sky"])
    assert tokens.shape == (2, 32)  # the registered context length, not open_clip's default 77
    with torch.no_grad():
        text = tiny_clip.encode_text(["a photo of a cow.", "sky"])
        tokens = open_clip.get_tokenizer(SYNTHETIC_CLIP_NAME)(["a photo of a cow.", "sky"])
        expected = tiny_clip.model.encode_text(tokens)
    torch.testing.assert_close(text, expected)
    with pytest.raises(TypeError, match="not one string"):
        tiny_clip.encode_text("cow")


def test_encode_image_matches_open_clip_at_the_training_size_and_works_at_others(tiny_clip: ClipModel) -> None:
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(tiny_clip.encode_image(images), tiny_clip.model.encode_image(images))
        assert tiny_clip.encode_image(torch.randn(1, 3, 48, 96)).shape == (1, 128)
        assert tiny_clip.dense_features(torch.randn(1, 3, 48, 96)).shape == (1, 128, 6, 12)


def test_normalisation_comes_from_the_model_preprocessing(tiny_clip: ClipModel) -> None:
    assert tiny_clip.normalization.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert tiny_clip.normalization.std == pytest.approx(open_clip.OPENAI_DATASET_STD)
    assert tiny_clip.preprocess is not None


def _save_local_dir(clip: ClipModel, folder: Path, normalization: Normalization) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config = local_dir_config(SYNTHETIC_CLIP_CONFIG, normalization)
    (folder / CONFIG_FILE_NAME).write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, str(folder / WEIGHTS_FILE_NAME))


def test_local_dir_round_trip_loads_the_same_model_and_preprocessing(tiny_clip: ClipModel, tmp_path: Path) -> None:
    imagenet = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    _save_local_dir(tiny_clip, tmp_path / "clip", imagenet)
    loaded = load_clip(f"local-dir:{tmp_path / 'clip'}")
    assert loaded.normalization == imagenet
    assert loaded.image_size == (64, 64)
    assert loaded.has_stable_identity
    assert "sha256=" in loaded.identity
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), tiny_clip.encode_image(images))
        torch.testing.assert_close(loaded.dense_features(images), tiny_clip.dense_features(images))
        torch.testing.assert_close(loaded.encode_text(["grass"]), tiny_clip.encode_text(["grass"]))
    assert loaded.tokenize(["grass"]).shape == (1, 32)


def test_local_dir_errors_name_the_problem(tiny_clip: ClipModel, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_clip(f"local-dir:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=CONFIG_FILE_NAME):
        load_clip(f"local-dir:{tmp_path / 'empty'}")
    (tmp_path / "empty" / CONFIG_FILE_NAME).write_text(
        json.dumps(local_dir_config(SYNTHETIC_CLIP_CONFIG, tiny_clip.normalization))
    )
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_clip(f"local-dir:{tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="pretrained='openai' cannot be combined"):
        load_clip(f"local-dir:{tmp_path / 'empty'}", "openai")


def test_random_models_have_distinct_identities(tiny_clip: ClipModel) -> None:
    other = load_clip(SYNTHETIC_CLIP_NAME)
    assert not tiny_clip.has_stable_identity
    assert other.identity != tiny_clip.identity


# ---------------------------------------------------------------------------------------------------------------
# Prompt ensembling and the cache
# ---------------------------------------------------------------------------------------------------------------


def test_ensembling_normalises_each_prompt_averages_and_renormalises() -> None:
    encoder = FakeTextEncoder()
    templates = ("a photo of a {}.", "{}", "there is a {} in the scene.")
    result = ensemble_text_embeddings(encoder, [("cow",), ("sky",)], templates, batch_size=2)
    for row, name in enumerate(("cow", "sky")):
        prompts = torch.stack([F.normalize(encoder.embed_one(t.format(name)), dim=0) for t in templates])
        torch.testing.assert_close(result[row], F.normalize(prompts.mean(dim=0), dim=0))
    torch.testing.assert_close(result.norm(dim=-1), torch.ones(2))


def test_synonyms_are_ensembled_per_form_then_averaged() -> None:
    encoder = FakeTextEncoder()
    templates = ("a {}.", "the {}.")
    result = ensemble_text_embeddings(encoder, [("person", "man", "woman")], templates)
    forms = [ensemble_text_embeddings(encoder, [(form,)], templates)[0] for form in ("person", "man", "woman")]
    torch.testing.assert_close(result[0], F.normalize(torch.stack(forms).mean(dim=0), dim=0))
    assert not torch.allclose(result[0], forms[0])


def test_ensembling_rejects_bad_templates() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        ensemble_text_embeddings(FakeTextEncoder(), [("cow",)], ("no placeholder",))
    with pytest.raises(ValueError, match="templates is empty"):
        ensemble_text_embeddings(FakeTextEncoder(), [("cow",)], ())


def test_cache_encodes_each_class_once_and_keys_on_templates_and_model() -> None:
    encoder = FakeTextEncoder()
    cache = TextEmbeddingCache()
    first = cache.embeddings(encoder, "model-a", [("cow",), ("sky",)], ("a {}.",))
    assert len(encoder.encoded) == 2
    again = cache.embeddings(encoder, "model-a", [("sky",), ("cow",), ("grass",)], ("a {}.",))
    assert encoder.encoded[2:] == ["a grass."]
    torch.testing.assert_close(again[0], first[1])
    assert (cache.hits, cache.misses) == (2, 3)
    cache.embeddings(encoder, "model-a", [("cow",)], ("the {}.",))
    cache.embeddings(encoder, "model-b", [("cow",)], ("a {}.",))
    assert encoder.encoded[3:] == ["the cow.", "a cow."]


def test_disk_cache_is_shared_between_cache_objects_but_not_for_random_models(tmp_path: Path) -> None:
    encoder = FakeTextEncoder()
    written = TextEmbeddingCache(tmp_path).embeddings(encoder, "model-a", [("cow",)], ("a {}.",))
    fresh_encoder = FakeTextEncoder()
    read = TextEmbeddingCache(tmp_path).embeddings(fresh_encoder, "model-a", [("cow",)], ("a {}.",))
    assert fresh_encoder.encoded == []
    torch.testing.assert_close(read, written)
    TextEmbeddingCache(tmp_path / "other").embeddings(encoder, "random", [("cow",)], ("a {}.",), persistent=False)
    assert not (tmp_path / "other").exists()


def test_concept_embeddings_lay_out_background_rows_first_and_reduce_them_by_max() -> None:
    encoder = FakeTextEncoder()
    concepts = ConceptSet.from_names(
        "cow, sky", templates=("a {}.",), background=BackgroundClass(names=("background", "wall"))
    )
    text = concept_embeddings(encoder, concepts)
    assert text.row_labels == (0, 0, 1, 2)
    assert text.text_labels == (0, 1, 2)
    assert text.label_names == ("background", "cow", "sky")
    features = torch.randn(2, 8, 3, 5)
    similarities = text.similarities(features)
    rows = torch.einsum("bdhw,kd->bkhw", F.normalize(features, dim=1), text.embeddings)
    assert similarities.shape == (2, 3, 3, 5)
    torch.testing.assert_close(similarities[:, 0], rows[:, :2].amax(dim=1))
    torch.testing.assert_close(similarities[:, 1:], rows[:, 2:])


def test_threshold_policy_has_no_background_text_row() -> None:
    concepts = ConceptSet.from_names("cow, sky", templates="single", background=BackgroundThreshold(threshold=0.5))
    text = concept_embeddings(FakeTextEncoder(), concepts)
    assert text.row_labels == (1, 2)
    assert text.similarities(torch.randn(1, 8, 2, 2)).shape == (1, 2, 2, 2)


def test_clip_model_concept_embeddings_use_its_cache(tiny_clip: ClipModel) -> None:
    concepts = ConceptSet.from_names("cow, sky", templates="single")
    misses = tiny_clip.text_cache.misses
    first = tiny_clip.concept_embeddings(concepts)
    second = tiny_clip.concept_embeddings(concepts)
    assert tiny_clip.text_cache.misses == misses + 2
    torch.testing.assert_close(first.embeddings, second.embeddings)
    assert first.embeddings.shape == (2, 128)
