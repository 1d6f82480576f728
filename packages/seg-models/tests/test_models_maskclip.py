"""The MaskCLIP segmenter on the tiny synthetic-CLIP architecture (random weights)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seg_core import (
    BackgroundClass,
    BackgroundThreshold,
    ConceptSet,
    ProtocolPreset,
    ResizeRule,
    Segmenter,
    SlidingWindow,
)
from seg_models.clip import ClipModel, ConceptEmbeddings, load_clip, register_model_config
from seg_models.inference import normalize_images
from seg_models.maskclip import MaskCLIPSegmenter, build_maskclip
from seg_models.refiners import PAMR


@pytest.fixture(scope="module")
def tiny_clip() -> ClipModel:
    torch.manual_seed(0)
    return load_clip(register_model_config())


def _images(height: int = 64, width: int = 64, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(1))


def test_segmenter_protocol_and_label_order(tiny_clip: ClipModel) -> None:
    segmenter = MaskCLIPSegmenter(tiny_clip)
    assert isinstance(segmenter, Segmenter)
    output = segmenter.segment(_images(), ConceptSet.from_names("cow, grass, sky"))
    assert output.logits.shape == (2, 3, 64, 64)
    assert output.label_names == ("cow", "grass", "sky")
    assert output.label_map is None
    with_background = segmenter.segment(_images(), ConceptSet.from_names("cow, sky", background=BackgroundClass()))
    assert with_background.label_names == ("background", "cow", "sky")
    assert with_background.logits.shape == (2, 3, 64, 64)


def test_logits_are_cosines_of_dense_features_and_ensembled_text(tiny_clip: ClipModel) -> None:
    images = _images()
    concepts = ConceptSet.from_names("cow, sky", templates=("a photo of a {}.", "a {}."))
    output = MaskCLIPSegmenter(tiny_clip).segment(images, concepts)
    with torch.no_grad():
        normalized = normalize_images(images, tiny_clip.normalization.mean, tiny_clip.normalization.std)
        features = F.normalize(tiny_clip.dense_features(normalized), dim=1)
        text = []
        for name in ("cow", "sky"):
            prompts = F.normalize(tiny_clip.encode_text([f"a photo of a {name}.", f"a {name}."]), dim=-1)
            text.append(F.normalize(prompts.mean(dim=0), dim=0))
        cosines = torch.einsum("bdhw,kd->bkhw", features, torch.stack(text))
    expected = F.interpolate(cosines, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(output.logits, expected, atol=1e-5, rtol=1e-5)
    preset = ProtocolPreset(name="s", logit_scale=50.0, normalization=tiny_clip.normalization)
    scaled = MaskCLIPSegmenter(tiny_clip, preset)
    torch.testing.assert_close(scaled.segment(images, concepts).logits, expected * 50, atol=1e-3, rtol=1e-4)


def test_segmentation_follows_image_regions_when_text_matches_them(
    tiny_clip: ClipModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text embeddings set to the mean dense feature of two regions must label those regions (checks that rows,
    columns and labels are not mixed up along the way)."""
    image = torch.zeros(1, 3, 48, 80)
    image[:, 0] = 0.9  # red everywhere ...
    image[:, :, :24, 40:] = torch.tensor([0.1, 0.2, 0.9]).reshape(1, 3, 1, 1)  # ... except a blue top-right quadrant
    segmenter = MaskCLIPSegmenter(tiny_clip)
    with torch.no_grad():
        normalized = normalize_images(image, tiny_clip.normalization.mean, tiny_clip.normalization.std)
        features = F.normalize(tiny_clip.dense_features(normalized), dim=1)[0]  # [D, 6, 10]
    blue = F.normalize(features[:, :3, 5:].mean(dim=(1, 2)), dim=0)
    red = F.normalize(features[:, 3:, :5].mean(dim=(1, 2)), dim=0)

    def fake_text(concepts: ConceptSet) -> ConceptEmbeddings:
        return ConceptEmbeddings(torch.stack([red, blue]), (0, 1), concepts.label_names, (0, 1))

    monkeypatch.setattr(tiny_clip, "concept_embeddings", fake_text)
    labels = segmenter.segment(image, ConceptSet.from_names("red, blue")).labels[0]
    truth = torch.zeros(48, 80, dtype=torch.long)
    truth[:24, 40:] = 1
    assert (labels == truth).float().mean() > 0.9


def test_sliding_window_and_resize_return_input_resolution(tiny_clip: ClipModel) -> None:
    preset = ProtocolPreset(
        name="slide",
        resize=ResizeRule(short_side=64),
        mode="slide",
        window=SlidingWindow(crop=64, stride=32),
        normalization=tiny_clip.normalization,
    )
    output = MaskCLIPSegmenter(tiny_clip, preset).segment(_images(50, 70, batch=1), ConceptSet.from_names("a, b"))
    assert output.logits.shape == (1, 2, 50, 70)
    whole = MaskCLIPSegmenter(tiny_clip).segment(_images(37, 53, batch=1), ConceptSet.from_names("a, b"))
    assert whole.logits.shape == (1, 2, 37, 53)
    cropped = MaskCLIPSegmenter(
        tiny_clip, ProtocolPreset(name="crop", resize=ResizeRule(short_side=64, center_crop=64))
    ).segment(_images(40, 60, batch=1), ConceptSet.from_names("a, b"))
    assert cropped.logits.shape == (1, 2, 40, 40)


def test_threshold_background_sets_a_label_map(tiny_clip: ClipModel) -> None:
    concepts = ConceptSet.from_names("a, b", background=BackgroundThreshold(threshold=0.99))
    output = MaskCLIPSegmenter(tiny_clip).segment(_images(), concepts)
    assert output.label_map is not None
    assert output.label_names == ("background", "a", "b")
    assert (output.labels == 0).all()  # two classes at scale 1 never reach 0.99


def test_variants_differ_and_refiners_keep_probabilities(tiny_clip: ClipModel) -> None:
    images, concepts = _images(), ConceptSet.from_names("a, b, c")
    maskclip = MaskCLIPSegmenter(tiny_clip, variant="maskclip").segment(images, concepts)
    naive = MaskCLIPSegmenter(tiny_clip, variant="naive").segment(images, concepts)
    assert not torch.allclose(maskclip.logits, naive.logits)
    refined = MaskCLIPSegmenter(tiny_clip, refiner=PAMR(iterations=2)).segment(images, concepts)
    torch.testing.assert_close(refined.probabilities.sum(dim=1), torch.ones(2, 64, 64))
    preset = ProtocolPreset(name="pamr", refinement="pamr")
    assert isinstance(MaskCLIPSegmenter(tiny_clip, preset).refiner, PAMR)


def test_segment_refuses_normalised_or_misshaped_images(tiny_clip: ClipModel) -> None:
    segmenter = MaskCLIPSegmenter(tiny_clip)
    with pytest.raises(ValueError, match=r"RGB in \[0, 1\]"):
        segmenter.segment(torch.randn(1, 3, 64, 64) * 2, ConceptSet.from_names("a"))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        segmenter.segment(torch.rand(3, 64, 64), ConceptSet.from_names("a"))
    with pytest.raises(ValueError, match="variant"):
        MaskCLIPSegmenter(tiny_clip, variant="keys")  # type: ignore[arg-type]


def test_build_maskclip_loads_by_name() -> None:
    segmenter = build_maskclip(register_model_config(), pretrained=None, variant="value")
    assert segmenter.variant == "value"
    assert segmenter.clip.embed_dim == 128
