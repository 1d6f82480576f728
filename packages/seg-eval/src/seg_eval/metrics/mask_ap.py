"""COCO mask AP through pycocotools, from in-memory instance predictions (no JSON files).

Each image's instances are RLE-encoded as they arrive (``pycocotools.mask.encode`` on Fortran-ordered uint8), so a
dataset streams through holding only compressed masks. :meth:`MaskAP.compute` builds the COCO ground-truth and
detection objects in memory and runs ``COCOeval(iouType="segm")``: AP is precision averaged over the 101 recall
points, the classes with ground truth and the IoU thresholds 0.50:0.05:0.95 (AP50/AP75 at one threshold); small,
medium and large mean an area below 32², between 32² and 96², above 96² pixels.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

__all__ = ["InstancePredictions", "InstanceTargets", "MaskAP", "MaskAPResult", "mask_ap"]

ArrayOrTensor = npt.NDArray[Any] | Tensor


def _to_numpy(value: ArrayOrTensor) -> npt.NDArray[Any]:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


@dataclass(frozen=True)
class InstancePredictions:
    """Predicted instances of one image.

    Attributes:
        masks: ``[N, H, W]`` binary masks (bool, or numbers where ``> 0`` / ``>= 0.5`` for floats is foreground).
        scores: ``[N]`` confidences (higher = more confident).
        labels: ``[N]`` class ids.
    """

    masks: ArrayOrTensor
    scores: ArrayOrTensor
    labels: ArrayOrTensor


@dataclass(frozen=True)
class InstanceTargets:
    """Ground-truth instances of one image.

    Attributes:
        masks: ``[M, H, W]`` binary masks.
        labels: ``[M]`` class ids.
        iscrowd: Optional ``[M]`` crowd flags (crowd regions are not matched; detections on them are ignored).
    """

    masks: ArrayOrTensor
    labels: ArrayOrTensor
    iscrowd: ArrayOrTensor | None = None


@dataclass(frozen=True)
class MaskAPResult:
    """COCO mask AP summary, fractions in ``[0, 1]``; ``None`` where COCOeval has nothing to average (-1).

    Attributes:
        ap: AP at IoU 0.50:0.95, all areas, ``max_detections`` per image.
        ap50: AP at IoU 0.50.
        ap75: AP at IoU 0.75.
        ap_small: AP over objects of area < 32².
        ap_medium: AP over objects of area in [32², 96²).
        ap_large: AP over objects of area >= 96².
        ar: Recall averaged over IoU 0.50:0.95 at ``max_detections``.
        per_class_ap: Class id -> AP (0.50:0.95, all areas), ``None`` for a class without ground truth.
    """

    ap: float | None
    ap50: float | None
    ap75: float | None
    ap_small: float | None
    ap_medium: float | None
    ap_large: float | None
    ar: float | None
    per_class_ap: Mapping[int, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_class_ap", MappingProxyType(dict(self.per_class_ap)))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "per_class_AP"}``."""
        return {
            "AP": self.ap,
            "AP50": self.ap50,
            "AP75": self.ap75,
            "APs": self.ap_small,
            "APm": self.ap_medium,
            "APl": self.ap_large,
            "AR": self.ar,
            "per_class_AP": {str(k): v for k, v in self.per_class_ap.items()},
        }


def _binary_masks(value: ArrayOrTensor, name: str) -> npt.NDArray[np.uint8]:
    masks = _to_numpy(value)
    if masks.ndim != 3:
        raise ValueError(
            f"{name} must be [N, H, W], got shape {masks.shape} (stack an image's masks; [0, H, W] for none)"
        )
    if masks.dtype == np.bool_:
        binary = masks
    elif np.issubdtype(masks.dtype, np.floating):
        binary = masks >= 0.5
    else:
        binary = masks > 0
    return np.asfortranarray(binary.astype(np.uint8))


def _vector(value: ArrayOrTensor, name: str, length: int) -> npt.NDArray[Any]:
    array = _to_numpy(value)
    if array.ndim != 1 or array.shape[0] != length:
        raise ValueError(f"{name} must be a vector of {length} entries (one per mask), got shape {array.shape}")
    return array


def _encode(masks: npt.NDArray[np.uint8]) -> list[dict[str, Any]]:
    if masks.shape[0] == 0:
        return []
    rles: list[dict[str, Any]] = mask_utils.encode(masks.transpose(1, 2, 0).copy(order="F"))
    return rles


class MaskAP:
    """Streaming COCO mask AP: RLE-encodes each image's instances, runs ``COCOeval`` on :meth:`compute`.

    Args:
        category_ids: The class ids to evaluate; default every id seen in the ground truth or the predictions.
            Predictions of ids outside the list are dropped.
        max_detections: Detections kept per image (highest scores), COCO's 100 by default.

    Example:
        >>> import numpy as np
        >>> masks = np.zeros((1, 8, 8), dtype=bool)
        >>> masks[0, 2:6, 2:6] = True
        >>> metric = MaskAP()
        >>> prediction = InstancePredictions(masks=masks, scores=np.array([0.9]), labels=np.array([1]))
        >>> metric.update(prediction, InstanceTargets(masks=masks, labels=np.array([1])))
        >>> round(metric.compute().ap, 6)
        1.0
    """

    def __init__(self, *, category_ids: Sequence[int] | None = None, max_detections: int = 100) -> None:
        if max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {max_detections}")
        self.category_ids = None if category_ids is None else [int(c) for c in category_ids]
        self.max_detections = max_detections
        self._images: list[dict[str, Any]] = []
        self._ground_truth: list[dict[str, Any]] = []
        self._detections: list[dict[str, Any]] = []
        self._seen_ids: set[int] = set()

    def reset(self) -> None:
        """Forget every image."""
        self._images.clear()
        self._ground_truth.clear()
        self._detections.clear()
        self._seen_ids.clear()

    @property
    def num_images(self) -> int:
        """Images added so far."""
        return len(self._images)

    def update(self, prediction: InstancePredictions, target: InstanceTargets) -> None:
        """Add one image.

        Args:
            prediction: The image's predicted instances (masks ``[N, H, W]``, scores ``[N]``, labels ``[N]``).
            target: The image's ground-truth instances (masks ``[M, H, W]``, labels ``[M]``).

        Raises:
            ValueError: Mis-shaped inputs, or prediction and target masks of different image sizes.
        """
        image_id = len(self._images) + 1  # COCO ids start at 1 (0 means "unmatched" inside COCOeval)
        where = f"image {image_id - 1}"
        gt_masks = _binary_masks(target.masks, f"target.masks ({where})")
        pred_masks = _binary_masks(prediction.masks, f"prediction.masks ({where})")
        height, width = gt_masks.shape[1:] if gt_masks.shape[0] or not pred_masks.shape[0] else pred_masks.shape[1:]
        if gt_masks.shape[0] and pred_masks.shape[0] and pred_masks.shape[1:] != gt_masks.shape[1:]:
            raise ValueError(
                f"{where}: prediction masks are {pred_masks.shape[1:]} but target masks are {gt_masks.shape[1:]}; "
                f"resize the predictions to the label size"
            )
        gt_labels = _vector(target.labels, f"target.labels ({where})", gt_masks.shape[0]).astype(np.int64)
        crowd = (
            np.zeros(gt_masks.shape[0], dtype=bool)
            if target.iscrowd is None
            else _vector(target.iscrowd, f"target.iscrowd ({where})", gt_masks.shape[0]).astype(bool)
        )
        pred_labels = _vector(prediction.labels, f"prediction.labels ({where})", pred_masks.shape[0]).astype(np.int64)
        scores = _vector(prediction.scores, f"prediction.scores ({where})", pred_masks.shape[0]).astype(np.float64)
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"prediction.scores ({where}) holds non-finite values")

        self._images.append({"id": image_id, "height": int(height), "width": int(width)})
        for rle, label, is_crowd in zip(_encode(gt_masks), gt_labels, crowd, strict=True):
            self._ground_truth.append(self._annotation(rle, image_id, int(label), iscrowd=int(is_crowd)))
        order = np.argsort(-scores, kind="stable")[: self.max_detections]
        rles = _encode(pred_masks)
        for index in order:
            annotation = self._annotation(rles[index], image_id, int(pred_labels[index]), iscrowd=0)
            annotation["score"] = float(scores[index])
            self._detections.append(annotation)
        self._seen_ids.update(int(v) for v in gt_labels)
        self._seen_ids.update(int(v) for v in pred_labels)

    @staticmethod
    def _annotation(rle: dict[str, Any], image_id: int, category_id: int, *, iscrowd: int) -> dict[str, Any]:
        return {
            "image_id": image_id,
            "category_id": category_id,
            "segmentation": rle,
            "area": float(mask_utils.area(rle)),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "iscrowd": iscrowd,
        }

    def compute(self) -> MaskAPResult:
        """Run ``COCOeval(iouType="segm")`` over every image added.

        Returns:
            The summary; with no detections at all every AP is 0 (``None`` if there is no ground truth either).
        """
        category_ids = sorted(self._seen_ids) if self.category_ids is None else self.category_ids
        if not self._images or not category_ids:
            return MaskAPResult(None, None, None, None, None, None, None, {})
        categories = [{"id": c, "name": str(c)} for c in category_ids]
        wanted = set(category_ids)

        def dataset(annotations: list[dict[str, Any]]) -> COCO:
            coco = COCO()
            kept = [dict(a, id=i) for i, a in enumerate(annotations, start=1) if a["category_id"] in wanted]
            coco.dataset = {"images": self._images, "annotations": kept, "categories": categories}
            with contextlib.redirect_stdout(io.StringIO()):
                coco.createIndex()
            return coco

        coco_gt, coco_dt = dataset(self._ground_truth), dataset(self._detections)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        evaluator.params.imgIds = [image["id"] for image in self._images]
        evaluator.params.catIds = category_ids
        evaluator.params.maxDets = sorted({1, 10, self.max_detections})
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress on stdout
            evaluator.evaluate()
            evaluator.accumulate()
        # Read the summary off the accumulated arrays (as COCOeval.summarize does, but for any max_detections):
        # precision [T IoU thresholds, R recall points, K classes, A area ranges, M max-dets], recall [T, K, A, M].
        params = evaluator.params
        detections_index = params.maxDets.index(self.max_detections)
        precision = np.asarray(evaluator.eval["precision"])[..., detections_index]
        recall = np.asarray(evaluator.eval["recall"])[..., detections_index]
        thresholds = np.asarray(params.iouThrs)
        areas = {label: index for index, label in enumerate(params.areaRngLbl)}

        def average(values: npt.NDArray[np.float64]) -> float | None:
            valid = values[values > -1]
            return float(valid.mean()) if valid.size else None

        def ap_at(threshold: float | None = None, area: str = "all") -> float | None:
            values = precision[..., areas[area]]
            if threshold is not None:
                values = values[np.flatnonzero(np.isclose(thresholds, threshold))]
            return average(values)

        return MaskAPResult(
            ap=ap_at(),
            ap50=ap_at(0.5),
            ap75=ap_at(0.75),
            ap_small=ap_at(area="small"),
            ap_medium=ap_at(area="medium"),
            ap_large=ap_at(area="large"),
            ar=average(recall[..., areas["all"]]),
            per_class_ap={c: average(precision[:, :, k, areas["all"]]) for k, c in enumerate(category_ids)},
        )


def mask_ap(
    predictions: Sequence[InstancePredictions],
    targets: Sequence[InstanceTargets],
    *,
    category_ids: Sequence[int] | None = None,
    max_detections: int = 100,
) -> MaskAPResult:
    """COCO mask AP of per-image instance predictions against per-image ground truth.

    Args:
        predictions: One :class:`InstancePredictions` per image (masks ``[N, H, W]``, scores ``[N]``, labels ``[N]``).
        targets: One :class:`InstanceTargets` per image, in the same order.
        category_ids: Classes to evaluate; default every id seen.
        max_detections: Detections kept per image.

    Returns:
        AP, AP50, AP75, AP small/medium/large, AR and per-class AP (see :class:`MaskAPResult`).
    """
    if len(predictions) != len(targets):
        raise ValueError(f"got {len(predictions)} predictions but {len(targets)} targets: pass one of each per image")
    metric = MaskAP(category_ids=category_ids, max_detections=max_detections)
    for prediction, target in zip(predictions, targets, strict=True):
        metric.update(prediction, target)
    return metric.compute()
