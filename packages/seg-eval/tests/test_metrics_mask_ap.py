"""COCO mask AP through pycocotools."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seg_eval.metrics import InstancePredictions, InstanceTargets, MaskAP, mask_ap


def _square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def _dataset(num_images: int = 4) -> list[InstanceTargets]:
    """Each image: three non-overlapping squares (small, medium, large at 128 px) of classes 1, 2, 3."""
    targets = []
    for image in range(num_images):
        masks = np.stack([_square(128, 4, 4 + image, 20), _square(128, 40, 4, 40), _square(128, 20, 26, 100)])
        masks[2] &= ~masks[1]
        targets.append(InstanceTargets(masks=masks, labels=np.array([1, 2, 3])))
    return targets


def _perfect(targets: list[InstanceTargets]) -> list[InstancePredictions]:
    return [InstancePredictions(masks=t.masks, scores=np.array([0.9, 0.8, 0.7]), labels=t.labels) for t in targets]


def test_perfect_predictions_score_one() -> None:
    targets = _dataset()
    result = mask_ap(_perfect(targets), targets)
    for value in (result.ap, result.ap50, result.ap75, result.ap_small, result.ap_medium, result.ap_large, result.ar):
        assert value == pytest.approx(1.0)
    assert result.per_class_ap == pytest.approx({1: 1.0, 2: 1.0, 3: 1.0})


def test_empty_predictions_score_zero() -> None:
    targets = _dataset()
    empty = [
        InstancePredictions(masks=np.zeros((0, 128, 128), bool), scores=np.zeros(0), labels=np.zeros(0, np.int64))
        for _ in targets
    ]
    result = mask_ap(empty, targets)
    assert result.ap == 0.0
    assert result.ap50 == 0.0
    assert result.ar == 0.0


def test_shuffled_labels_score_lower() -> None:
    targets = _dataset()
    generator = np.random.default_rng(0)
    shuffled = [
        InstancePredictions(masks=t.masks, scores=np.array([0.9, 0.8, 0.7]), labels=generator.permutation(t.labels))
        for t in targets
    ]
    # Make sure at least one image is actually mislabelled.
    assert any(not np.array_equal(p.labels, t.labels) for p, t in zip(shuffled, targets, strict=True))
    perfect = mask_ap(_perfect(targets), targets).ap
    assert perfect is not None
    result = mask_ap(shuffled, targets)
    assert result.ap is not None
    assert result.ap < perfect - 0.2


def test_iou_thresholds_separate_ap50_and_ap75() -> None:
    # Prediction covers the 20×20 object plus 10 extra rows: IoU = 400 / 600 = 0.67, matched at 0.5, not at 0.75.
    target = InstanceTargets(masks=_square(64, 10, 10, 20)[None], labels=np.array([1]))
    loose = np.zeros((1, 64, 64), dtype=bool)
    loose[0, 10:40, 10:30] = True
    result = mask_ap([InstancePredictions(masks=loose, scores=np.array([1.0]), labels=np.array([1]))], [target])
    assert result.ap50 == pytest.approx(1.0)
    assert result.ap75 == pytest.approx(0.0)
    # 0.50, 0.55, 0.60, 0.65 match: AP = 4 / 10 thresholds
    assert result.ap == pytest.approx(0.4)
    # No medium or large objects: COCOeval has nothing to average there.
    assert result.ap_medium is None
    assert result.ap_large is None


def test_score_order_matters() -> None:
    # A false positive ranked above the true positive halves the precision at the only recall level.
    target = InstanceTargets(masks=_square(64, 10, 10, 20)[None], labels=np.array([1]))
    masks = np.stack([_square(64, 40, 40, 20), _square(64, 10, 10, 20)])
    fp_first = InstancePredictions(masks=masks, scores=np.array([0.9, 0.5]), labels=np.array([1, 1]))
    tp_first = InstancePredictions(masks=masks, scores=np.array([0.5, 0.9]), labels=np.array([1, 1]))
    assert mask_ap([tp_first], [target]).ap == pytest.approx(1.0)
    assert mask_ap([fp_first], [target]).ap == pytest.approx(0.5, abs=0.01)


def test_torch_inputs_streaming_and_errors() -> None:
    targets = _dataset(2)
    metric = MaskAP()
    for target in targets:
        metric.update(
            InstancePredictions(
                masks=torch.from_numpy(target.masks).float(),
                scores=torch.tensor([0.9, 0.8, 0.7]),
                labels=torch.from_numpy(target.labels),
            ),
            InstanceTargets(masks=torch.from_numpy(target.masks), labels=torch.from_numpy(target.labels)),
        )
    assert metric.num_images == 2
    assert metric.compute().ap == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"image 2: prediction masks are \(32, 32\) but target masks are \(128, 128\)"):
        metric.update(
            InstancePredictions(masks=np.ones((1, 32, 32), bool), scores=np.ones(1), labels=np.ones(1)),
            targets[0],
        )
    with pytest.raises(ValueError, match=r"prediction.scores \(image 2\) must be a vector of 3 entries"):
        metric.update(
            InstancePredictions(masks=targets[0].masks, scores=np.ones(2), labels=np.ones(3)),
            targets[0],
        )
    with pytest.raises(ValueError, match="got 1 predictions but 2 targets"):
        mask_ap(_perfect(targets)[:1], targets)
    assert MaskAP().compute().ap is None


def test_max_detections_keeps_the_highest_scores() -> None:
    # With one detection per image kept, the higher-scored false positive pushes the true positive out.
    target = InstanceTargets(masks=_square(64, 10, 10, 20)[None], labels=np.array([1]))
    masks = np.stack([_square(64, 10, 10, 20), _square(64, 40, 40, 20)])
    prediction = InstancePredictions(masks=masks, scores=np.array([0.5, 0.9]), labels=np.array([1, 1]))
    assert mask_ap([prediction], [target], max_detections=1).ap == pytest.approx(0.0)
    assert mask_ap([prediction], [target], max_detections=2).ap == pytest.approx(0.5, abs=0.01)


def test_summary_matches_pycocotools_standard_pipeline() -> None:
    """Same numbers as the usual COCO(json) + loadRes + COCOeval.summarize route, on noisy predictions."""
    import contextlib
    import io

    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    generator = np.random.default_rng(3)
    targets = _dataset(3)
    predictions = []
    for target in targets:
        masks = target.masks.copy()
        masks[:, ::7] = False  # damage every mask a little
        extra = _square(128, 100, 100, 16)[None]
        predictions.append(
            InstancePredictions(
                masks=np.concatenate([masks, extra]),
                scores=generator.random(4),
                labels=np.concatenate([generator.permutation(target.labels), [2]]),
            )
        )
    ours = mask_ap(predictions, targets)

    images, annotations, detections = [], [], []
    for image_id, (prediction, target) in enumerate(zip(predictions, targets, strict=True), start=1):
        images.append({"id": image_id, "height": 128, "width": 128})
        for mask, label in zip(target.masks, target.labels, strict=True):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": list(mask_utils.toBbox(rle)),
                    "iscrowd": 0,
                }
            )
        for mask, label, score in zip(prediction.masks, prediction.labels, prediction.scores, strict=True):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            detections.append({"image_id": image_id, "category_id": int(label), "segmentation": rle, "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations, "categories": [{"id": c} for c in (1, 2, 3)]}
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(detections), iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    assert 0.1 < stats[0] < 0.9  # a non-trivial case
    expected = [stats[0], stats[1], stats[2], stats[3], stats[4], stats[5], stats[8]]
    got = [ours.ap, ours.ap50, ours.ap75, ours.ap_small, ours.ap_medium, ours.ap_large, ours.ar]
    assert got == pytest.approx(expected)
