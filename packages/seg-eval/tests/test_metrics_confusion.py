"""ConfusionMatrix and the scores read off it: hand-computed values, torchmetrics parity, streaming, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seg_eval.metrics import (
    ConfusionMatrix,
    SegmentationMetrics,
    frequency_weighted_iou,
    iou_per_class,
    mean_accuracy,
    mean_iou,
    pixel_accuracy,
)

# Tiny example, worked by hand. Valid (target, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,0); (255,2) is ignored.
#   counts = [[1, 1, 0],      IoU_0 = 1 / (2 + 2 - 1) = 1/3     Acc_0 = 1/2
#             [0, 2, 0],      IoU_1 = 2 / (2 + 3 - 2) = 2/3     Acc_1 = 1
#             [1, 0, 0]]      IoU_2 = 0 / (1 + 0 - 0) = 0       Acc_2 = 0
# mIoU = 1/3, pixel accuracy = 3/5, mean accuracy = 1/2, fwIoU = 2/5·1/3 + 2/5·2/3 + 1/5·0 = 2/5.
HAND_TARGET = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8)
HAND_PRED = np.array([[0, 1, 1], [1, 0, 2]], dtype=np.int64)
HAND_COUNTS = [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_hand_example(backend: str) -> None:
    cm = ConfusionMatrix(num_classes=3)
    if backend == "torch":
        cm.update(torch.from_numpy(HAND_PRED), torch.from_numpy(HAND_TARGET))
    else:
        cm.update(HAND_PRED, HAND_TARGET)
    assert cm.counts.tolist() == HAND_COUNTS
    assert cm.counts.dtype == torch.int64
    np.testing.assert_allclose(cm.iou_per_class, [1 / 3, 2 / 3, 0.0])
    assert cm.miou == pytest.approx(1 / 3)
    assert cm.pixel_accuracy == pytest.approx(3 / 5)
    np.testing.assert_allclose(cm.accuracy_per_class, [0.5, 1.0, 0.0])
    assert cm.mean_accuracy == pytest.approx(0.5)
    assert cm.frequency_weighted_iou == pytest.approx(0.4)


def test_absent_class_is_nan_and_left_out_of_the_mean() -> None:
    # Class 3 appears in neither prediction nor ground truth: NaN, and mIoU is the mean of the other three.
    cm = ConfusionMatrix(num_classes=4)
    cm.update(HAND_PRED, HAND_TARGET)
    iou = cm.iou_per_class
    assert math.isnan(iou[3])
    assert cm.miou == pytest.approx(1 / 3)
    assert math.isnan(cm.accuracy_per_class[3])
    assert cm.mean_accuracy == pytest.approx(0.5)
    metrics = cm.compute(["road", "car", "sky", "boat"])
    assert metrics.per_class_iou["boat"] is None
    assert metrics.per_class_iou["road"] == pytest.approx(1 / 3)


def test_predicted_but_absent_class_counts_as_zero() -> None:
    # Class 3 is predicted once but never in the ground truth: IoU 0, and it *does* pull the mean down.
    pred = HAND_PRED.copy()
    pred[0, 0] = 3  # was a correct class-0 pixel
    cm = ConfusionMatrix(num_classes=4)
    cm.update(pred, HAND_TARGET)
    # IoU_0 = 0 / (2 + 1 - 0) = 0, IoU_1 = 2/3, IoU_2 = 0, IoU_3 = 0 / (0 + 1) = 0
    np.testing.assert_allclose(cm.iou_per_class, [0.0, 2 / 3, 0.0, 0.0])
    assert cm.miou == pytest.approx(2 / 3 / 4)
    assert math.isnan(cm.accuracy_per_class[3])  # no ground truth: no recall


def test_nothing_counted_gives_nan_without_warnings() -> None:
    cm = ConfusionMatrix(num_classes=3)
    cm.update(np.zeros((0,), np.int64), np.zeros((0,), np.int64))
    with np.errstate(all="raise"):
        assert math.isnan(cm.miou)
        assert math.isnan(cm.pixel_accuracy)
        assert math.isnan(cm.mean_accuracy)
        assert math.isnan(cm.frequency_weighted_iou)
    assert cm.compute().to_dict() == {"mIoU": None, "pixel_accuracy": None, "per_class_iou": dict.fromkeys("012")}


def _random_batch(generator: np.random.Generator, num_classes: int, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    # Leave the last two classes out of the ground truth and the last one out of the predictions, so the batch has a
    # class absent from both and one present only in the predictions.
    target = generator.integers(0, num_classes - 2, size=shape)
    pred = np.where(generator.random(shape) < 0.6, target, generator.integers(0, num_classes - 1, size=shape))
    target[generator.random(shape) < 0.1] = 255
    return pred, target


def test_matches_torchmetrics_on_random_inputs() -> None:
    tm = pytest.importorskip("torchmetrics.classification")
    num_classes = 7
    generator = np.random.default_rng(0)
    cm = ConfusionMatrix(num_classes=num_classes)
    jaccard_none = tm.MulticlassJaccardIndex(num_classes=num_classes, average=None, ignore_index=255)
    jaccard_macro = tm.MulticlassJaccardIndex(num_classes=num_classes, average="macro", ignore_index=255)
    accuracy_micro = tm.MulticlassAccuracy(num_classes=num_classes, average="micro", ignore_index=255)
    confmat = tm.MulticlassConfusionMatrix(num_classes=num_classes, ignore_index=255)
    for _ in range(3):
        pred, target = _random_batch(generator, num_classes, (2, 33, 47))
        cm.update(pred, target)
        for metric in (jaccard_none, jaccard_macro, accuracy_micro, confmat):
            metric.update(torch.from_numpy(pred), torch.from_numpy(target))

    assert cm.counts.tolist() == confmat.compute().tolist()
    ours = cm.iou_per_class
    theirs = jaccard_none.compute().double().numpy()
    # torchmetrics writes zero_division (0) for a class absent from prediction and target; we write NaN. The classes
    # that are present must agree exactly, and the absent ones must be exactly those torchmetrics zeroed.
    absent = np.isnan(ours)
    assert absent.tolist() == [False] * 6 + [True]
    np.testing.assert_allclose(ours[~absent], theirs[~absent], rtol=1e-6)
    assert theirs[absent].tolist() == [0.0]
    # Its "macro" average leaves absent classes out (weight 0), which is our nanmean.
    assert cm.miou == pytest.approx(float(jaccard_macro.compute()), rel=1e-6)
    assert cm.pixel_accuracy == pytest.approx(float(accuracy_micro.compute()), rel=1e-6)


def test_numpy_and_torch_paths_agree_and_stream() -> None:
    generator = np.random.default_rng(1)
    batches = [_random_batch(generator, 9, (3, 16, 20)) for _ in range(4)]
    streamed_numpy, streamed_torch, whole = (ConfusionMatrix(9) for _ in range(3))
    for pred, target in batches:
        streamed_numpy.update(pred, target)
        streamed_torch.update(torch.from_numpy(pred).to(torch.int32), torch.from_numpy(target).to(torch.uint8))
    whole.update(np.concatenate([p for p, _ in batches]), np.concatenate([t for _, t in batches]))
    assert torch.equal(streamed_numpy.counts, whole.counts)
    assert torch.equal(streamed_torch.counts, whole.counts)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.uint32, np.int64, np.uint64])
def test_integer_dtypes(dtype: type[np.integer]) -> None:
    cm = ConfusionMatrix(3)
    cm.update(HAND_PRED.astype(dtype), HAND_TARGET.astype(dtype))
    assert cm.counts.tolist() == HAND_COUNTS


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("ignore_index", [-1, 1, 100_000, None])
def test_other_ignore_indices(backend: str, ignore_index: int | None) -> None:
    target = HAND_TARGET.astype(np.int64)
    target[target == 255] = 2 if ignore_index is None else ignore_index
    pred = HAND_PRED
    if backend == "torch":
        pred, target = torch.from_numpy(pred), torch.from_numpy(target)  # type: ignore[assignment]
    cm = ConfusionMatrix(3, ignore_index=ignore_index)
    cm.update(pred, target)
    expected = np.array(HAND_COUNTS)
    if ignore_index is None:
        expected[2, 2] += 1  # the formerly ignored pixel is now a correct class-2 pixel
    if ignore_index == 1:
        expected[1] = 0  # ignoring a real class drops its row
    assert cm.counts.tolist() == expected.tolist()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_prediction_out_of_range_names_the_value(backend: str) -> None:
    pred = HAND_PRED.copy()
    pred[1, 1] = 7
    cm = ConfusionMatrix(3)
    args = (torch.from_numpy(pred), torch.from_numpy(HAND_TARGET)) if backend == "torch" else (pred, HAND_TARGET)
    with pytest.raises(ValueError, match=r"pred holds the id 7, outside \[0, 3\)"):
        cm.update(*args)
    pred[1, 1] = -2
    args = (torch.from_numpy(pred), torch.from_numpy(HAND_TARGET)) if backend == "torch" else (pred, HAND_TARGET)
    with pytest.raises(ValueError, match="pred holds the id -2"):
        cm.update(*args)
    assert cm.counts.sum() == 0  # a rejected batch leaves no trace


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize(("bad", "ignore_index"), [(5, 255), (254, 255), (300, 255), (-3, 255), (4, -1), (7, None)])
def test_target_out_of_range_names_the_value(backend: str, bad: int, ignore_index: int | None) -> None:
    target = HAND_TARGET.astype(np.int64)
    target[0, 2] = bad
    cm = ConfusionMatrix(3, ignore_index=ignore_index)
    args = (torch.from_numpy(HAND_PRED), torch.from_numpy(target)) if backend == "torch" else (HAND_PRED, target)
    with pytest.raises(ValueError, match=rf"target holds the id {bad}, outside \[0, 3\)"):
        cm.update(*args)


def test_input_type_and_shape_errors() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(TypeError, match=r"pred must hold integer class ids, got a torch.float32 tensor \(take logits"):
        cm.update(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="target must hold integer class ids, got a float64 array"):
        cm.update(np.zeros((2, 3), np.int64), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"pred has shape \(2, 3\) but target has shape \(3, 2\).*nearest"):
        cm.update(np.zeros((2, 3), np.int64), np.zeros((3, 2), np.int64))
    with pytest.raises(TypeError, match="numpy array or a torch tensor, got list"):
        cm.update([0, 1], np.zeros(2, np.int64))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        ConfusionMatrix(0)


def test_numpy_and_torch_mixed_in_one_call() -> None:
    cm = ConfusionMatrix(3)
    cm.update(torch.from_numpy(HAND_PRED), HAND_TARGET)
    cm.update(HAND_PRED, torch.from_numpy(HAND_TARGET))
    assert cm.counts.tolist() == (2 * np.array(HAND_COUNTS)).tolist()


def test_merge_add_and_reset() -> None:
    generator = np.random.default_rng(2)
    first, second = _random_batch(generator, 5, (40, 40)), _random_batch(generator, 5, (40, 40))
    a, b, both = ConfusionMatrix(5), ConfusionMatrix(5), ConfusionMatrix(5)
    a.update(*first)
    b.update(*second)
    both.update(*first)
    both.update(*second)
    a_before = a.counts.clone()
    total = a + b
    assert torch.equal(total.counts, both.counts)
    assert torch.equal(a.counts, a_before)  # + does not mutate
    a += b
    assert torch.equal(a.counts, both.counts)
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(ConfusionMatrix(4))
    with pytest.raises(ValueError, match="ignore_index"):
        a.merge(ConfusionMatrix(5, ignore_index=None))
    a.reset()
    assert a.counts.sum() == 0


def test_all_reduce_without_distributed_is_a_no_op() -> None:
    cm = ConfusionMatrix(3)
    cm.update(HAND_PRED, HAND_TARGET)
    assert cm.all_reduce() is cm
    assert cm.counts.tolist() == HAND_COUNTS


def test_from_counts_and_functions_on_plain_arrays() -> None:
    cm = ConfusionMatrix.from_counts(HAND_COUNTS)
    assert cm.miou == pytest.approx(1 / 3)
    assert mean_iou(HAND_COUNTS) == pytest.approx(1 / 3)
    assert pixel_accuracy(torch.tensor(HAND_COUNTS)) == pytest.approx(0.6)
    assert mean_accuracy(np.array(HAND_COUNTS)) == pytest.approx(0.5)
    assert frequency_weighted_iou(cm) == pytest.approx(0.4)
    with pytest.raises(ValueError, match=r"\[C, K\] matrix with K >= C"):
        iou_per_class([[1, 2], [3, 4], [5, 6]])
    with pytest.raises(ValueError, match="negative counts"):
        iou_per_class([[1, -1], [0, 1]])


def test_extra_columns_count_as_errors() -> None:
    # [C, K] with K > C: the third column is "no class". Class 0: TP 2, FN 1 (to no class) + 1 (to class 1).
    counts = [[2, 1, 1], [0, 3, 0]]
    # IoU_0 = 2 / (4 + 2 - 2) = 1/2; IoU_1 = 3 / (3 + 4 - 3) = 3/4; pixel accuracy = 5 / 7
    np.testing.assert_allclose(iou_per_class(counts), [0.5, 0.75])
    assert pixel_accuracy(counts) == pytest.approx(5 / 7)


def test_follows_the_device_of_the_first_tensor_batch() -> None:
    cm = ConfusionMatrix(3)
    assert cm.device.type == "cpu"
    fixed = ConfusionMatrix(3, device="meta")
    assert fixed.device.type == "meta"


def test_segmentation_metrics_round_trip() -> None:
    cm = ConfusionMatrix(4)
    cm.update(HAND_PRED, HAND_TARGET)
    metrics = cm.compute(["a", "b", "c", "d"])
    data = metrics.to_dict()
    assert set(data) == {"mIoU", "pixel_accuracy", "per_class_iou"}
    assert data["per_class_iou"]["d"] is None
    assert data["mIoU"] == pytest.approx(1 / 3)
    extended = metrics.to_dict(extended=True)
    assert extended["mean_accuracy"] == pytest.approx(0.5)
    assert extended["frequency_weighted_iou"] == pytest.approx(0.4)
    assert SegmentationMetrics.from_dict(extended) == metrics
    short = SegmentationMetrics.from_dict(data)
    assert short.miou == metrics.miou
    assert math.isnan(short.mean_accuracy)
    with pytest.raises(ValueError, match="unknown results keys"):
        SegmentationMetrics.from_dict({**data, "mIOU": 0.1})
    with pytest.raises(ValueError, match="pass one per class"):
        cm.compute(["a", "b"])
    with pytest.raises(ValueError, match="duplicates"):
        cm.compute(["a", "a", "b", "c"])
    with pytest.raises(TypeError):
        metrics.per_class_iou["a"] = 1.0  # type: ignore[index]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_are_counted_on_the_gpu() -> None:
    generator = np.random.default_rng(4)
    pred, target = _random_batch(generator, 6, (2, 64, 64))
    on_gpu, on_cpu = ConfusionMatrix(6), ConfusionMatrix(6)
    on_gpu.update(torch.from_numpy(pred).cuda(), torch.from_numpy(target).cuda())
    on_cpu.update(pred, target)
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.counts.cpu(), on_cpu.counts)
    on_gpu.update(pred, target)  # a numpy batch still lands in the GPU counts
    assert torch.equal(on_gpu.counts.cpu(), 2 * on_cpu.counts)


def test_miou_over_a_subset_of_classes() -> None:
    from seg_eval.metrics import SegmentationMetrics

    metrics = SegmentationMetrics(
        miou=0.5, pixel_accuracy=0.5, mean_accuracy=0.5, per_class_iou={"a": 0.2, "b": 0.6, "c": None}
    )
    assert metrics.miou_over(["a", "b"]) == pytest.approx(0.4)
    assert metrics.miou_over(["b", "c"]) == pytest.approx(0.6)
    assert math.isnan(metrics.miou_over(["c"]))
    with pytest.raises(KeyError, match="unknown classes"):
        metrics.miou_over(["d"])
