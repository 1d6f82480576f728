"""Hungarian-matched scores for cluster outputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from seg_eval.metrics import HungarianMatchedIoU, hungarian_match


def test_permuted_oracle_scores_one() -> None:
    generator = np.random.default_rng(0)
    target = generator.integers(0, 5, size=(4, 24, 24))
    target[:, :2] = 255
    permutation = np.array([3, 0, 4, 1, 2])
    clusters = permutation[np.where(target == 255, 0, target)]
    metric = HungarianMatchedIoU(num_classes=5)
    metric.update(clusters, target)
    match = metric.match()
    assert match.miou == 1.0
    assert match.pixel_accuracy == 1.0
    assert match.cluster_to_class[permutation].tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(match.remap(clusters)[target != 255], target[target != 255])


def test_permuted_oracle_with_spare_clusters_scores_one() -> None:
    # 8 clusters for 5 classes; the 3 unused clusters match nothing and cost nothing.
    generator = np.random.default_rng(1)
    target = generator.integers(0, 5, size=(30, 30))
    clusters = np.array([6, 2, 7, 0, 4])[target]
    metric = HungarianMatchedIoU(num_classes=5, num_clusters=8)
    metric.update(torch.from_numpy(clusters), torch.from_numpy(target))
    match = metric.match()
    assert match.miou == 1.0
    assert sorted(match.cluster_to_class.tolist()) == [-1, -1, -1, 0, 1, 2, 3, 4]


def test_hand_example_with_an_unmatched_cluster() -> None:
    # 2 classes × 3 clusters. Best matching: cluster 0 -> class 0 (5 px), cluster 1 -> class 1 (4 px) = 9 px;
    # cluster 2 stays unmatched and its 2 + 3 pixels are wrong.
    counts = np.array([[5, 1, 2], [0, 4, 3]])
    match = hungarian_match(counts)
    assert match.cluster_to_class.tolist() == [0, 1, -1]
    assert match.confusion.tolist() == [[5, 1, 2], [0, 4, 3]]
    # IoU_0 = 5 / (8 + 5 - 5) = 5/8; IoU_1 = 4 / (7 + 5 - 4) = 1/2; pixel accuracy = 9 / 15
    np.testing.assert_allclose(match.iou_per_class, [5 / 8, 1 / 2])
    assert match.miou == pytest.approx(9 / 16)
    assert match.pixel_accuracy == pytest.approx(0.6)
    metrics = match.metrics(["cat", "dog"])
    assert metrics.per_class_iou == {"cat": 0.625, "dog": 0.5}
    remapped = match.remap(np.array([0, 1, 2, 2]), unmatched_value=99)
    assert remapped.tolist() == [0, 1, 99, 99]


def test_splitting_a_class_over_two_clusters_is_penalised() -> None:
    # Class 0 is split over clusters 0 and 2: only one of them can be matched, the other half of class 0 is wrong.
    target = np.array([0, 0, 0, 0, 1, 1])
    clusters = np.array([0, 0, 2, 2, 1, 1])
    metric = HungarianMatchedIoU(2, num_clusters=3)
    metric.update(clusters, target)
    match = metric.match()
    assert match.iou_per_class.tolist() == [0.5, 1.0]
    assert match.pixel_accuracy == pytest.approx(4 / 6)


def test_fewer_clusters_than_classes() -> None:
    target = np.array([0, 0, 1, 1, 2, 2])
    clusters = np.array([1, 1, 0, 0, 0, 0])
    metric = HungarianMatchedIoU(3, num_clusters=2)
    metric.update(clusters, target)
    match = metric.match()
    # cluster 1 -> class 0 (2 px), cluster 0 -> class 1 or 2 (2 px each, a tie); the unmatched class scores 0.
    assert match.iou_per_class[0] == 1.0
    assert sorted(match.iou_per_class[1:].tolist()) == [0.0, 0.5]


def test_matching_is_optimal_against_brute_force() -> None:
    generator = np.random.default_rng(2)
    for _ in range(20):
        counts = generator.integers(0, 50, size=(4, 4))
        match = hungarian_match(counts)
        best = max(sum(counts[perm[k], k] for k in range(4)) for perm in itertools.permutations(range(4)))
        assert int(np.trace(match.confusion)) == best


def test_matching_is_over_the_dataset_not_per_image() -> None:
    # Image 1 names class 0 "cluster 0", image 2 names it "cluster 1": a global matching cannot fix both.
    metric = HungarianMatchedIoU(2)
    metric.update(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 1]))
    metric.update(np.array([1, 0]), np.array([0, 1]))
    match = metric.match()
    assert match.cluster_to_class.tolist() == [0, 1]
    assert match.pixel_accuracy == pytest.approx(4 / 6)


def test_cluster_id_out_of_range_is_an_error() -> None:
    metric = HungarianMatchedIoU(2, num_clusters=3)
    with pytest.raises(ValueError, match=r"clusters holds the id 3, outside \[0, 3\)"):
        metric.update(np.array([0, 3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="clusters holds the id 5"):
        hungarian_match(np.eye(3)).remap(np.array([0, 5]))
