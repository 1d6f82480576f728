"""ReCo inference: reference-embedding files, the co-segmentation backbone and the segmenter (tiny random CLIP)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from seg_core import BackgroundClass, BackgroundThreshold, ConceptSet, ConfigError, ProtocolPreset, Segmenter
from seg_models.clip import ClipModel, load_clip, register_model_config
from seg_models.dense_clip import dense_clip_features
from seg_models.inference import normalize_images
from seg_models.reco import (
    CosegBackbone,
    CosegBackboneConfig,
    ReCoOptions,
    ReCoSegmenter,
    ReferenceEmbeddings,
    build_coseg_backbone,
    load_reference_embeddings,
    save_reference_embeddings,
)

TEMPLATES = ("a photo of a {}.", "a {}.")


@pytest.fixture(scope="module")
def tiny_clip() -> ClipModel:
    torch.manual_seed(0)
    return load_clip(register_model_config())


def _images(height: int = 64, width: int = 64, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(1))


def _references(names: tuple[str, ...], dim: int, seed: int = 0) -> ReferenceEmbeddings:
    rows = F.normalize(torch.randn(len(names), dim, generator=torch.Generator().manual_seed(seed)), dim=-1)
    return ReferenceEmbeddings(names=names, embeddings=rows, backbone=CosegBackboneConfig())


def _text(clip: ClipModel, names: tuple[str, ...]) -> torch.Tensor:
    rows = []
    for name in names:
        prompts = F.normalize(clip.encode_text([t.format(name) for t in TEMPLATES]), dim=-1)
        rows.append(F.normalize(prompts.mean(dim=0), dim=0))
    return torch.stack(rows)


def test_reference_file_round_trip_and_refusals(tmp_path: Path) -> None:
    references = ReferenceEmbeddings(
        names=("cow", "sky"),
        embeddings=torch.tensor([[3.0, 4.0], [0.0, 2.0]]),
        backbone=CosegBackboneConfig(kind="clip", clip_variant="maskclip"),
        metadata={"k": 50},
    )
    path = save_reference_embeddings(references, tmp_path)
    loaded = load_reference_embeddings(path)
    assert loaded.names == ("cow", "sky")
    # Rows come back L2-normalised whatever was stored.
    torch.testing.assert_close(loaded.embeddings, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    assert loaded.backbone.clip_variant == "maskclip"
    assert loaded.metadata == {"k": 50}
    with pytest.raises(ConfigError, match=r"no ReCo reference embedding for \['duck'\]"):
        loaded.select(["sky", "duck"])
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(other), metadata={"format": "pt"})
    with pytest.raises(ConfigError, match="another method"):
        load_reference_embeddings(other)
    with pytest.raises(ConfigError, match="seg train reco"):
        load_reference_embeddings(tmp_path / "missing")
    with pytest.raises(ValueError, match="unique"):
        ReferenceEmbeddings(names=("a", "a"), embeddings=torch.zeros(2, 3), backbone=CosegBackboneConfig())


def test_backbone_config_validation() -> None:
    with pytest.raises(ConfigError, match="timm_name"):
        CosegBackboneConfig.parse({"kind": "timm"})
    with pytest.raises(ConfigError, match="kind is 'clip'"):
        CosegBackboneConfig.parse({"kind": "clip", "timm_name": "resnet18"})
    with pytest.raises(ConfigError, match="no model 'not_a_model'"):
        CosegBackbone(CosegBackboneConfig(kind="timm", timm_name="not_a_model"))


def test_clip_backbone_is_the_dense_clip_tower(tiny_clip: ClipModel) -> None:
    backbone = build_coseg_backbone(CosegBackboneConfig(clip_variant="naive"), tiny_clip)
    images = _images(60, 70)  # not a multiple of the patch: padded to 64x72
    with torch.no_grad():
        features = backbone(images)
        normalized = normalize_images(images, tiny_clip.normalization.mean, tiny_clip.normalization.std)
        expected = dense_clip_features(tiny_clip.visual, F.pad(normalized, (0, 2, 0, 4)), variant="naive")
    torch.testing.assert_close(features, expected)
    # The CLIP is borrowed, not owned: the backbone has no parameters of its own.
    assert list(backbone.parameters()) == []


def test_timm_vit_backbone_gives_a_patch_grid() -> None:
    config = CosegBackboneConfig(kind="timm", timm_name="vit_tiny_patch16_224")
    backbone = build_coseg_backbone(config)
    assert backbone.stride == (16, 16)
    with torch.no_grad():
        features = backbone(_images(40, 72, batch=1))
    assert features.shape == (1, 192, 3, 5)  # padded to 48x80


def test_probability_maps_are_coseg_sigmoid_times_dense_clip_saliency(tiny_clip: ClipModel) -> None:
    names = ("cow", "sky", "grass")
    references = _references(names, tiny_clip.embed_dim)
    segmenter = ReCoSegmenter(tiny_clip, references)
    concepts = ConceptSet.from_names(list(names), templates=TEMPLATES)
    images = _images()
    output = segmenter.segment(images, concepts)
    with torch.no_grad():
        normalized = normalize_images(images, tiny_clip.normalization.mean, tiny_clip.normalization.std)
        tokens = F.normalize(dense_clip_features(tiny_clip.visual, normalized, variant="naive"), dim=1)
        values = F.normalize(dense_clip_features(tiny_clip.visual, normalized, variant="maskclip"), dim=1)
        coseg = torch.sigmoid(torch.einsum("bdhw,kd->bkhw", tokens, references.embeddings))
        saliency = torch.sigmoid(10 * torch.einsum("bdhw,kd->bkhw", values, _text(tiny_clip, names)))
    up = lambda x: F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)  # noqa: E731
    torch.testing.assert_close(output.logits, up(coseg) * up(saliency), atol=1e-5, rtol=1e-5)
    assert isinstance(segmenter, Segmenter)

    without = ReCoSegmenter(tiny_clip, references, options=ReCoOptions(dense_clip=False)).segment(images, concepts)
    torch.testing.assert_close(without.logits, up(coseg), atol=1e-5, rtol=1e-5)
    # No temperature on the co-segmentation sigmoid: cosines in [-1, 1] give [0.27, 0.73].
    assert float(without.logits.min()) > 0.268
    assert float(without.logits.max()) < 0.732


def test_background_policies_and_missing_concepts(tiny_clip: ClipModel) -> None:
    references = _references(("background", "cow", "sky"), tiny_clip.embed_dim)
    segmenter = ReCoSegmenter(tiny_clip, references)
    images = _images()
    with_class = segmenter.segment(images, ConceptSet.from_names("cow, sky", background=BackgroundClass()))
    assert with_class.label_names == ("background", "cow", "sky")
    assert with_class.logits.shape == (2, 3, 64, 64)
    plain = segmenter.segment(images, ConceptSet.from_names("cow, sky"))
    # A threshold above every product map makes every pixel background; below every map, none.
    high = ConceptSet.from_names("cow, sky", background=BackgroundThreshold(threshold=0.99, score="similarity"))
    assert int(segmenter.segment(images, high).labels.max()) == 0
    low = ConceptSet.from_names("cow, sky", background=BackgroundThreshold(threshold=0.0, score="similarity"))
    torch.testing.assert_close(segmenter.segment(images, low).labels, plain.labels + 1)
    with pytest.raises(ConfigError, match="duck"):
        segmenter.segment(images, ConceptSet.from_names("cow, duck"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        segmenter.segment(images * 255, ConceptSet.from_names("cow"))


def test_a_reference_that_matches_a_region_claims_it(tiny_clip: ClipModel) -> None:
    """Reference embeddings taken from the features of a region make that region win (saliency off)."""
    left = torch.zeros(1, 3, 64, 64)
    left[..., :32] = torch.tensor([0.9, 0.1, 0.1]).reshape(1, 3, 1, 1)
    left[..., 32:] = torch.tensor([0.1, 0.2, 0.9]).reshape(1, 3, 1, 1)
    config = CosegBackboneConfig(clip_variant="naive")
    backbone = build_coseg_backbone(config, tiny_clip)
    with torch.no_grad():
        features = F.normalize(backbone(left), dim=1)[0]
    red = F.normalize(features[:, 3, 1], dim=0)
    blue = F.normalize(features[:, 3, 6], dim=0)
    references = ReferenceEmbeddings(names=("red", "blue"), embeddings=torch.stack([red, blue]), backbone=config)
    segmenter = ReCoSegmenter(tiny_clip, references, options=ReCoOptions(dense_clip=False))
    labels = segmenter.segment(left, ConceptSet.from_names("red, blue")).labels[0]
    assert float((labels[:, 4:28] == 0).float().mean()) > 0.95
    assert float((labels[:, 36:60] == 1).float().mean()) > 0.95


def test_preset_logit_scale_multiplies_the_maps(tiny_clip: ClipModel) -> None:
    references = _references(("cow", "sky"), tiny_clip.embed_dim)
    concepts = ConceptSet.from_names("cow, sky")
    base = ReCoSegmenter(tiny_clip, references).segment(_images(), concepts)
    preset = ProtocolPreset(name="scaled", logit_scale=20.0, normalization=tiny_clip.normalization)
    scaled = ReCoSegmenter(tiny_clip, references, preset).segment(_images(), concepts)
    torch.testing.assert_close(scaled.logits, 20.0 * base.logits)
