"""Resize rules, whole vs sliding-window inference, and background policies."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seg_core import (
    BackgroundClass,
    BackgroundThreshold,
    ConceptSet,
    ProtocolPreset,
    ResizeRule,
    SegmentationOutput,
    SlidingWindow,
)
from seg_models.inference import (
    center_crop_box,
    infer,
    normalize_images,
    pad_to_multiple,
    resize_images,
    resized_shape,
    segmentation_from_similarities,
    sliding_window_counts,
    sliding_window_logits,
    whole_image_logits,
)


def _pixelwise_logits_fn(num_classes: int = 4) -> torch.nn.Conv2d:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, num_classes, kernel_size=1)
    conv.requires_grad_(False)
    return conv


@pytest.mark.parametrize(
    ("size", "rule", "expected"),
    [
        ((375, 500), ResizeRule(short_side=448), (448, 597)),
        ((500, 375), ResizeRule(short_side=448), (597, 448)),
        ((375, 1000), ResizeRule(short_side=512, max_long_side=520), (195, 520)),
        ((40, 60), ResizeRule(), (40, 60)),
        ((100, 100), ResizeRule(short_side=320, center_crop=320), (320, 320)),
    ],
)
def test_resized_shape_follows_short_side_and_long_side_cap(
    size: tuple[int, int], rule: ResizeRule, expected: tuple[int, int]
) -> None:
    assert resized_shape(*size, rule) == expected


@pytest.mark.parametrize(
    ("size", "window"),
    [
        ((50, 70), SlidingWindow(crop=32, stride=16)),
        ((45, 100), SlidingWindow(crop=32, stride=20)),
        ((20, 70), SlidingWindow(crop=32, stride=16)),  # shorter than the crop: padded
        ((20, 24), SlidingWindow(crop=32, stride=32)),  # smaller than the crop both ways
    ],
)
def test_sliding_window_equals_whole_image_for_a_position_independent_logits_fn(
    size: tuple[int, int], window: SlidingWindow
) -> None:
    logits_fn = _pixelwise_logits_fn()
    images = torch.randn(2, 3, *size)
    slide = sliding_window_logits(logits_fn, images, window)
    whole = whole_image_logits(logits_fn, images)
    assert slide.shape == (2, 4, *size)
    torch.testing.assert_close(slide, whole)


def test_sliding_window_averages_overlaps_by_the_count_map() -> None:
    """A logits function that returns the same constant for every window tells the average from the sum."""
    images = torch.zeros(1, 3, 48, 48)
    window = SlidingWindow(crop=32, stride=16)
    ones = sliding_window_logits(lambda x: torch.ones(x.shape[0], 1, 2, 2), images, window)
    torch.testing.assert_close(ones, torch.ones(1, 1, 48, 48))
    calls: list[tuple[int, int]] = []

    def recording(x: torch.Tensor) -> torch.Tensor:
        calls.append((int(x.shape[-2]), int(x.shape[-1])))
        return torch.zeros(x.shape[0], 1, 4, 4)

    sliding_window_logits(recording, torch.zeros(1, 3, 48, 80), window)
    assert calls == [(32, 32)] * (2 * 4)


def test_counts_cover_every_pixel_and_match_the_windows() -> None:
    counts = sliding_window_counts(48, 80, SlidingWindow(crop=32, stride=16))
    assert counts.min() >= 1
    # rows: windows at 0 and 16 -> rows 16..31 twice; columns: windows at 0, 16, 32, 48.
    assert counts[0, 0] == 1
    assert counts[20, 0] == 2
    assert counts[20, 40] == 2 * 2
    assert counts[47, 79] == 1
    assert sliding_window_counts(20, 24, SlidingWindow(crop=32, stride=16)).eq(1).all()
    # A stride that does not divide: the last window is moved back to the border, nothing is skipped.
    assert sliding_window_counts(50, 50, SlidingWindow(crop=32, stride=30)).min() >= 1


def test_infer_resizes_runs_and_returns_logits_at_the_original_size() -> None:
    seen: list[tuple[int, int]] = []

    def logits_fn(x: torch.Tensor) -> torch.Tensor:
        seen.append((int(x.shape[-2]), int(x.shape[-1])))
        return F.avg_pool2d(x[:, :2], 8)  # low-resolution logits, as from a ViT

    images = torch.randn(1, 3, 30, 45)
    whole = infer(logits_fn, images, ProtocolPreset(name="t", resize=ResizeRule(short_side=64)))
    assert seen == [(64, 96)]
    assert whole.shape == (1, 2, 30, 45)
    seen.clear()
    slide = infer(
        logits_fn,
        images,
        ProtocolPreset(
            name="t", resize=ResizeRule(short_side=64), mode="slide", window=SlidingWindow(crop=64, stride=32)
        ),
    )
    assert seen == [(64, 64), (64, 64)]
    assert slide.shape == (1, 2, 30, 45)


def test_center_crop_output_covers_the_crop_box() -> None:
    rule = ResizeRule(short_side=32, center_crop=32)
    images = torch.randn(1, 3, 40, 60)
    assert center_crop_box(40, 60, rule) == (0, 10, 40, 40)
    assert resize_images(images, rule).shape == (1, 3, 32, 32)
    logits = infer(lambda x: x[:, :1], images, ProtocolPreset(name="t", resize=rule))
    assert logits.shape == (1, 1, 40, 40)
    assert center_crop_box(40, 60, ResizeRule(short_side=32)) is None
    with pytest.raises(ValueError, match="larger than the resized image"):
        center_crop_box(40, 60, ResizeRule(short_side=16, center_crop=32))


def test_pad_and_normalize_helpers() -> None:
    images = torch.rand(1, 3, 17, 30)
    padded = pad_to_multiple(images, (16, 16))
    assert padded.shape == (1, 3, 32, 32)
    torch.testing.assert_close(padded[..., :17, :30], images)
    assert padded[..., 17:, :].abs().sum() == 0
    normalized = normalize_images(torch.full((1, 3, 2, 2), 0.5), (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    torch.testing.assert_close(normalized[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.5]))


# ---------------------------------------------------------------------------------------------------------------
# Background policies
# ---------------------------------------------------------------------------------------------------------------


def test_no_background_and_background_class_scale_similarities() -> None:
    similarities = torch.randn(2, 3, 4, 5)
    plain = segmentation_from_similarities(similarities, ConceptSet.from_names("a, b, c"))
    assert plain.label_names == ("a", "b", "c")
    torch.testing.assert_close(plain.logits, similarities)
    scaled = segmentation_from_similarities(
        similarities, ConceptSet.from_names("a, b", background=BackgroundClass()), logit_scale=10.0
    )
    assert scaled.label_names == ("background", "a", "b")
    torch.testing.assert_close(scaled.logits, similarities * 10)
    with pytest.raises(ValueError, match="needs 4"):
        segmentation_from_similarities(similarities, ConceptSet.from_names("a, b, c", background=BackgroundClass()))


def test_threshold_on_similarity_marks_low_pixels_as_background() -> None:
    similarities = torch.tensor([[0.1, 0.3], [0.25, 0.2]]).reshape(1, 2, 1, 2)  # pixel 0: best .25, pixel 1: .3
    concepts = ConceptSet.from_names("a, b", background=BackgroundThreshold(threshold=0.28, score="similarity"))
    output = segmentation_from_similarities(similarities, concepts, logit_scale=2.0)
    assert output.label_names == ("background", "a", "b")
    assert output.labels.tolist() == [[[0, 1]]]
    assert output.logits.argmax(dim=1).tolist() == output.labels.tolist()
    torch.testing.assert_close(output.logits[:, 0], torch.full((1, 1, 2), 0.56))


def test_threshold_on_probability_uses_the_softmax_of_scaled_similarities() -> None:
    torch.manual_seed(0)
    similarities = torch.randn(2, 3, 6, 7) * 0.3
    concepts = ConceptSet.from_names("a, b, c", background=BackgroundThreshold(threshold=0.6))
    output = segmentation_from_similarities(similarities, concepts, logit_scale=5.0)
    probabilities = (similarities * 5).softmax(dim=1)
    best, best_index = probabilities.max(dim=1)
    expected = torch.where(best < 0.6, 0, best_index + 1)
    assert torch.equal(output.labels, expected)
    assert 0 < (expected == 0).float().mean() < 1  # both outcomes occur
    assert torch.equal(output.logits.argmax(dim=1), expected)
    # The background probability is threshold / (1 + threshold) everywhere.
    torch.testing.assert_close(output.probabilities[:, 0], torch.full((2, 6, 7), 0.6 / 1.6))


def test_threshold_zero_never_gives_background() -> None:
    concepts = ConceptSet.from_names("a, b", background=BackgroundThreshold(threshold=0.0))
    output = segmentation_from_similarities(torch.randn(1, 2, 3, 3), concepts)
    assert output.labels.min() >= 1
    assert torch.isfinite(output.logits).all()
    assert not math.isnan(float(output.probabilities.sum()))


class _RampSegmenter:
    """Two classes whose logits are +x and -x (x: column position), whatever the image: not flip-equivariant."""

    def segment(self, images: torch.Tensor, concepts: ConceptSet) -> SegmentationOutput:
        batch, _, height, width = images.shape
        x = torch.linspace(-1.0, 1.0, width).expand(batch, height, width)
        return SegmentationOutput(logits=torch.stack([x, -x], dim=1), label_names=concepts.label_names)


class _ColourSegmenter:
    """Three classes whose logits are the RGB channels: flip- and scale-equivariant on a constant image."""

    def segment(self, images: torch.Tensor, concepts: ConceptSet) -> SegmentationOutput:
        return SegmentationOutput(logits=images.clone(), label_names=concepts.label_names)


def test_tta_averages_flipped_probabilities_by_hand() -> None:
    from seg_models.inference import TestTimeAugmentation

    concepts = ConceptSet(names=["a", "b"], templates="single")
    output = TestTimeAugmentation(_RampSegmenter(), flip=True).segment(torch.rand(1, 3, 2, 3), concepts)
    x = torch.tensor([-1.0, 0.0, 1.0])
    straight = torch.stack([x, -x]).softmax(dim=0)
    mirrored = torch.stack([x.flip(0), -x.flip(0)]).softmax(dim=0)
    expected = ((straight + mirrored) / 2).log()  # [2, 3]: the same on both rows
    torch.testing.assert_close(output.logits[0, :, 0], expected)
    torch.testing.assert_close(output.logits.softmax(dim=1)[0, 0, 0], torch.full((3,), 0.5))


def test_tta_with_scales_keeps_an_equivariant_segmenter_unchanged() -> None:
    from seg_models.inference import TestTimeAugmentation

    concepts = ConceptSet(names=["r", "g", "b"], templates="single")
    images = torch.tensor([0.9, 0.2, 0.4]).view(1, 3, 1, 1).expand(2, 3, 8, 6).contiguous()
    output = TestTimeAugmentation(_ColourSegmenter(), scales=(0.5, 1.0, 1.5)).segment(images, concepts)
    assert output.logits.shape == (2, 3, 8, 6)
    torch.testing.assert_close(output.logits, images.log_softmax(dim=1), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="scales"):
        TestTimeAugmentation(_ColourSegmenter(), scales=(0.0,))
