"""ReCLIP++'s class- and space-preference scores on constructed predictors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seg_eval.metrics import (
    ConfusionMatrix,
    SpacePreference,
    class_preference_score,
    controlled_space_slope,
    object_centroid_distances,
    object_ious,
    semantic_objects,
    space_preference_score,
)

# ---------------------------------------------------------------------------------------------------------------------
# Class preference


def test_class_preference_hand_example() -> None:
    # Rows normalised: [0.6, 0.3, 0.1] -> 0.6 - 0.3 = 0.3;  [0.5, 0.5, 0] -> 0.5 - 0.5 = 0;  row 2 empty -> NaN.
    counts = [[6, 3, 1], [2, 2, 0], [0, 0, 0]]
    result = class_preference_score(counts)
    np.testing.assert_allclose(result.per_class[:2], [0.3, 0.0])
    assert math.isnan(result.per_class[2])
    assert result.score == pytest.approx(0.15)
    assert result.preferred_class.tolist() == [1, 0, -1]


def test_perfect_predictor_scores_one() -> None:
    assert class_preference_score(np.diag([5, 7, 9])).score == 1.0


def _predictor_confusion(preferred: int | None, seed: int = 0) -> ConfusionMatrix:
    """70 % of pixels right; the wrong 30 % go to `preferred` (or, if None, to a uniformly random other class)."""
    generator = np.random.default_rng(seed)
    num_classes = 5
    target = np.repeat(np.arange(num_classes), 2000)
    wrong = generator.random(target.shape) < 0.3
    other = (target + generator.integers(1, num_classes, size=target.shape)) % num_classes
    if preferred is not None:
        other = np.where(target == preferred, other, preferred)
    pred = np.where(wrong, other, target)
    cm = ConfusionMatrix(num_classes)
    cm.update(pred, target)
    return cm


def test_class_biased_predictor_scores_lower_than_unbiased() -> None:
    unbiased, biased = _predictor_confusion(None), _predictor_confusion(preferred=0)
    # Same pixel accuracy, so mIoU-style accuracy alone cannot tell them apart...
    assert unbiased.pixel_accuracy == pytest.approx(biased.pixel_accuracy, abs=0.02)
    unbiased_score = class_preference_score(unbiased).score
    biased_result = class_preference_score(biased)
    # ... but the class-preference score does: about 0.7 - 0.075 vs 0.7 - 0.3 (classes 1-4) and 0.625 (class 0).
    assert unbiased_score == pytest.approx(0.625, abs=0.03)
    assert biased_result.score == pytest.approx((4 * 0.4 + 0.625) / 5, abs=0.03)
    assert biased_result.score < unbiased_score - 0.15
    assert biased_result.preferred_class[1:].tolist() == [0, 0, 0, 0]


def test_class_preference_accepts_rectangular_counts() -> None:
    # An unmatched-cluster column counts in the row sum but is not a "preferred class".
    result = class_preference_score([[6, 1, 3], [0, 4, 0]])
    np.testing.assert_allclose(result.per_class, [0.6 - 0.1, 1.0])


# ---------------------------------------------------------------------------------------------------------------------
# Space preference: the building blocks


def test_centroid_distances_by_hand() -> None:
    masks = np.zeros((3, 10, 10), dtype=bool)
    masks[0, 4:6, 4:6] = True  # centred: centroid (5, 5) = image centre
    masks[1, 0, 0] = True  # corner pixel: centroid (0.5, 0.5), distance sqrt(2)·4.5 / (sqrt(2)·5) = 0.9
    # masks[2] empty -> NaN
    distances = object_centroid_distances(masks)
    assert distances[0] == pytest.approx(0.0)
    assert distances[1] == pytest.approx(0.9)
    assert math.isnan(distances[2])


def test_object_ious_by_hand() -> None:
    masks = np.zeros((2, 6, 6), dtype=bool)
    masks[0, 0:2, 0:2] = True  # object A, class 1, 4 px
    masks[1, 4:6, 4:6] = True  # object B, class 1, 4 px
    pred = np.zeros((6, 6), dtype=np.int64)
    pred[0:2, 0:2] = 1  # A fully predicted
    pred[4, 4:6] = 1  # half of B predicted
    pred[0, 5] = 1  # one false positive pixel on background
    pred[3, 3] = 1  # one more, but the ground truth there is ignored
    ignore = np.zeros((6, 6), dtype=bool)
    ignore[3, 3] = True
    ious = object_ious(pred, masks, np.array([1, 1]), ignore_mask=ignore)
    # A: 4 / (4 ∪ 1 FP) = 4/5 (B's predicted pixels are not A's false positives); B: 2 / (4 + 1) = 2/5
    np.testing.assert_allclose(ious, [0.8, 0.4])
    with pytest.raises(ValueError, match="labels must be"):
        object_ious(pred, masks, np.array([1]))


def test_semantic_objects_are_connected_components() -> None:
    target = np.zeros((6, 6), dtype=np.int64)
    target[0:2, 0:2] = 1
    target[4:6, 4:6] = 1
    target[0:2, 4:6] = 2
    target[3, 0] = 255
    masks, labels = semantic_objects(target, exclude_classes=[0])
    assert labels.tolist() == [1, 1, 2]
    assert masks.sum(axis=(1, 2)).tolist() == [4, 4, 4]


def test_space_preference_score_by_hand() -> None:
    # Four bins of [0, 1]: centres 0.125, 0.375, 0.625, 0.875; mean IoUs 1.0, 0.8, (empty), 0.2.
    distances = [0.1, 0.2, 0.3, 0.9]
    ious = [1.0, 1.0, 0.8, 0.2]
    result = space_preference_score(distances, ious, num_bins=4)
    np.testing.assert_allclose(result.bin_iou, [1.0, 0.8, np.nan, 0.2])
    assert result.bin_counts.tolist() == [2, 1, 0, 1]
    # finite differences: (0.8 - 1.0) / 0.25 = -0.8 and (0.2 - 0.8) / 0.5 = -1.2 -> mean -1.0
    assert result.mean_finite_difference_slope == pytest.approx(-1.0)
    x, y = np.array([0.125, 0.375, 0.875]), np.array([1.0, 0.8, 0.2])
    assert result.least_squares_slope == pytest.approx(np.polyfit(x, y, 1)[0])
    assert result.score == result.least_squares_slope
    literal = space_preference_score(distances, ious, num_bins=4, slope="mean_finite_difference")
    assert literal.score == pytest.approx(-1.0)
    assert math.isnan(space_preference_score([0.1], [1.0]).score)  # one bin: no slope


# ---------------------------------------------------------------------------------------------------------------------
# Space preference: constructed predictors


def _object_images(seed: int = 0) -> list[tuple[np.ndarray, float]]:
    """64×64 label maps with one 8×8 square of class 1..3 on background 0, at random places."""
    generator = np.random.default_rng(seed)
    images = []
    for _ in range(60):
        target = np.zeros((64, 64), dtype=np.int64)
        top, left = generator.integers(0, 57, size=2)
        target[top : top + 8, left : left + 8] = generator.integers(1, 4)
        centre = np.array([top + 4, left + 4], dtype=np.float64)
        distance = float(np.hypot(*(centre - 32)) / np.hypot(32, 32))
        images.append((target, distance))
    return images


def test_predictor_failing_far_from_centre_has_negative_slope() -> None:
    oracle, border_blind = SpacePreference(), SpacePreference()
    for target, distance in _object_images():
        oracle.update_from_semantic(target, target, exclude_classes=[0])
        # Predicts the object right near the centre and misses it (background) past 40 % of the half-diagonal.
        pred = target if distance < 0.4 else np.zeros_like(target)
        border_blind.update_from_semantic(torch.from_numpy(pred), target, exclude_classes=[0])
    assert oracle.num_objects == border_blind.num_objects == 60
    oracle_result, blind_result = oracle.compute(num_bins=5), border_blind.compute(num_bins=5)
    assert oracle_result.score == pytest.approx(0.0, abs=1e-12)
    assert blind_result.score < -0.5
    assert blind_result.mean_finite_difference_slope < 0
    assert blind_result.bin_iou[0] == 1.0
    assert np.nanmax(blind_result.bin_iou[3:]) == 0.0


def test_uniformly_degraded_predictor_has_no_spatial_slope() -> None:
    # Erodes every object by its top row, wherever it is: IoU 7/8 everywhere, slope 0.
    collector = SpacePreference()
    for target, _ in _object_images(1):
        pred = target.copy()
        rows = np.flatnonzero(target.any(axis=1))
        pred[rows[0]] = 0
        collector.update_from_semantic(pred, target, exclude_classes=[0])
    result = collector.compute(num_bins=5)
    assert np.allclose(result.bin_iou[~np.isnan(result.bin_iou)], 7 / 8)
    assert result.score == pytest.approx(0.0, abs=1e-9)


def test_space_preference_merge_and_arguments() -> None:
    a, b = SpacePreference(), SpacePreference()
    target = np.zeros((8, 8), dtype=np.int64)
    target[3:5, 3:5] = 1
    a.update_from_semantic(target, target, exclude_classes=[0])
    b.update_from_semantic(target, target, exclude_classes=[0])
    assert a.merge(b).num_objects == 2
    with pytest.raises(ValueError, match="num_bins must be >= 2"):
        space_preference_score([0.1], [1.0], num_bins=1)
    with pytest.raises(ValueError, match="distances has 2 entries but ious has 1"):
        space_preference_score([0.1, 0.2], [1.0])


# ---------------------------------------------------------------------------------------------------------------------
# Space preference controlled for class and size


def test_controlled_slope_recovers_a_linear_within_class_effect() -> None:
    generator = np.random.default_rng(3)
    labels = generator.integers(0, 4, size=200)
    distances = generator.uniform(0, 1, size=200)
    areas = generator.integers(20, 400, size=200)
    class_offset = np.array([0.1, 0.5, 0.3, 0.7])[labels]
    ious = class_offset - 0.25 * distances + 0.05 * np.log(areas)
    result = controlled_space_slope(distances, ious, labels, areas)
    assert result.slope == pytest.approx(-0.25)
    assert result.area_coefficient == pytest.approx(0.05)
    assert (result.num_objects, result.num_classes) == (200, 4)


def test_controlled_slope_ignores_class_layout_and_border_truncation() -> None:
    # A hard class that sits far out and an easy one near the centre, and objects that are small because the border
    # cuts them: the binned slope is steep, yet within a class and size position changes nothing.
    generator = np.random.default_rng(4)
    far = generator.uniform(0.6, 1.0, size=100)
    near = generator.uniform(0.0, 0.5, size=100)
    distances = np.concatenate([far, near])
    labels = np.repeat([1, 2], 100)
    areas = np.where(distances > 0.8, 30, 300) * generator.uniform(0.8, 1.2, size=200)
    ious = np.where(labels == 1, 0.1, 0.6) + 0.1 * np.log(areas / 300)
    binned = space_preference_score(distances, ious, labels=labels, areas=areas)
    assert binned.score < -0.3
    assert binned.controlled is not None
    assert binned.controlled.slope == pytest.approx(0.0, abs=1e-9)
    assert binned.controlled.area_coefficient == pytest.approx(0.1)


def test_collector_fits_the_controlled_slope_on_the_objects_it_saw() -> None:
    # Class 1 squares are found only near the centre: a genuine position effect within the class.
    collector = SpacePreference()
    for target, distance in _object_images(2):
        pred = target if distance < 0.4 or target.max() != 1 else np.zeros_like(target)
        collector.update_from_semantic(pred, target, exclude_classes=[0])
    assert collector.labels.shape == collector.areas.shape == (collector.num_objects,)
    assert set(collector.areas.tolist()) == {64}
    result = collector.compute(num_bins=5)
    assert result.controlled is not None
    expected = controlled_space_slope(collector.distances, collector.ious, collector.labels, collector.areas)
    assert result.controlled == expected
    assert result.controlled.slope < -0.3
    assert result.controlled.area_coefficient == 0.0  # every square is 8x8: distance alone
    merged = SpacePreference().merge(collector)
    assert merged.labels.tolist() == collector.labels.tolist()
    collector.reset()
    assert collector.num_objects == 0
    assert collector.labels.size == collector.areas.size == 0


def test_controlled_slope_arguments() -> None:
    with pytest.raises(ValueError, match="one entry per object, got 2, 2, 1 and 2"):
        controlled_space_slope([0.1, 0.2], [1.0, 0.5], [1], [4, 4])
    with pytest.raises(ValueError, match="areas must be > 0"):
        controlled_space_slope([0.1, 0.2], [1.0, 0.5], [1, 1], [4, 0])
    with pytest.raises(ValueError, match="labels and areas go together"):
        space_preference_score([0.1, 0.2], [1.0, 0.5], labels=[1, 1])
    lone = controlled_space_slope([0.1, 0.2], [1.0, 0.5], [1, 2], [4, 4])  # one object per class: nothing to fit
    assert math.isnan(lone.slope)
    assert lone.num_classes == 0
    assert space_preference_score([0.1, 0.2], [1.0, 0.5]).controlled is None
