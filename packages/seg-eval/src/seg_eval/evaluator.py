"""Run any :class:`seg_core.Segmenter` over a dataset under a protocol preset and write ``results.json``.

The evaluator owns nothing method-specific: it feeds each image (float RGB in ``[0, 1]``, ``[1, 3, H, W]``, at
its original size) to the segmenter, which applies the preset's resize / sliding window / normalisation itself
and returns logits at the input size; the label map is compared with the ground truth in a streaming confusion
matrix. A preset whose class names are a background name followed by some of the dataset's classes is scored on
a :class:`~seg_eval.datasets.BackgroundView` of the dataset (e.g. ``synthetic-object`` on the world).

Instance-aware segmenters (``SegmentationOutput.instances``, ZUTIS) are also scored by COCO mask AP
(:class:`~seg_eval.metrics.MaskAP`) against the dataset's ground-truth instances (``Sample.instances``), twice:
class-aware (a detection matches a ground-truth object of its own class; background is not a category) and
class-agnostic (every label is one "object" category: how well the objects are found and delineated, whatever
their class). The record it writes carries the protocol and its signature, so numbers are only ever compared under
the same protocol::

    {"method": ..., "model": ..., "dataset": ..., "split": ..., "num_images": ...,
     "protocol": {...preset..., "class_names": [...], "signature": "..."},
     "metrics": {"mIoU": ..., "pixel_accuracy": ..., "per_class_iou": {...}, ...},
     "instance_metrics": {"class_aware": {"AP": ..., "AP50": ..., ...}, "class_agnostic": {...}}}

``instance_metrics`` is there only when the segmenter returned instances and the dataset has instance ground truth.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg_core import ConceptSet, ProtocolPreset, Segmenter
from seg_core import InstancePredictions as CoreInstancePredictions
from seg_eval.datasets.base import Sample, SegmentationDataset
from seg_eval.datasets.views import BACKGROUND_NAMES, view_for_preset
from seg_eval.metrics import ConfusionMatrix, SegmentationMetrics
from seg_eval.metrics.mask_ap import InstancePredictions, InstanceTargets, MaskAP, MaskAPResult, _to_numpy
from seg_eval.presets import preset_concepts

__all__ = [
    "AGNOSTIC_CATEGORY",
    "EvaluationRecord",
    "InstanceEvaluation",
    "evaluate",
    "image_to_tensor",
    "write_results",
]

Progress = Callable[[int, int], None]


def image_to_tensor(image: np.ndarray[Any, np.dtype[np.uint8]], device: torch.device | str = "cpu") -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB to ``[1, 3, H, W]`` float32 in ``[0, 1]``."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float().div_(255.0)


AGNOSTIC_CATEGORY = 1
"""The one category id every instance gets in class-agnostic mask AP."""


class InstanceEvaluation:
    """Streaming class-aware and class-agnostic COCO mask AP of one evaluation.

    Args:
        class_names: The evaluated labels; when the first is a background name, label 0 is not an object category
            (predictions and ground truth labelled 0 are left out of both scores).
        max_detections: Detections kept per image, COCO's 100 by default.

    Example:
        >>> import numpy as np
        >>> masks = np.zeros((1, 8, 8), dtype=bool)
        >>> masks[0, 2:6, 2:6] = True
        >>> scores = InstanceEvaluation(("background", "cow", "car"))
        >>> scores.update(
        ...     InstancePredictions(masks=masks, scores=np.array([0.9]), labels=np.array([2])),
        ...     InstanceTargets(masks=masks, labels=np.array([1])),
        ... )
        >>> result = scores.compute()
        >>> round(result["class_aware"].ap, 6), round(result["class_agnostic"].ap, 6)
        (0.0, 1.0)
    """

    def __init__(self, class_names: Sequence[str], *, max_detections: int = 100) -> None:
        if not class_names:
            raise ValueError("class_names is empty: give the evaluated label names")
        self.first_category = 1 if class_names[0].lower() in BACKGROUND_NAMES else 0
        self.category_ids = tuple(range(self.first_category, len(class_names)))
        self.class_aware = MaskAP(category_ids=self.category_ids, max_detections=max_detections)
        self.class_agnostic = MaskAP(category_ids=(AGNOSTIC_CATEGORY,), max_detections=max_detections)

    @property
    def num_images(self) -> int:
        """Images added so far."""
        return self.class_aware.num_images

    def update(self, prediction: InstancePredictions, target: InstanceTargets) -> None:
        """Add one image to both scores.

        Args:
            prediction: Predicted instances, labels are ids into ``class_names`` (numpy or torch).
            target: Ground-truth instances in the same label space.
        """
        pred_labels = _to_numpy(prediction.labels).astype(np.int64).reshape(-1)
        gt_labels = _to_numpy(target.labels).astype(np.int64).reshape(-1)
        pred_kept = pred_labels >= self.first_category  # background "instances" are no objects: not detections
        gt_kept = gt_labels >= self.first_category
        pred_masks, scores = _to_numpy(prediction.masks), _to_numpy(prediction.scores)
        gt_masks = _to_numpy(target.masks)
        crowd = None if target.iscrowd is None else _to_numpy(target.iscrowd).reshape(-1)
        # Mis-shaped inputs are passed on unfiltered: MaskAP.update raises with a message naming the field.
        if pred_masks.ndim == 3 and scores.shape == pred_labels.shape == pred_masks.shape[:1]:
            pred_masks, scores, pred_labels = pred_masks[pred_kept], scores[pred_kept], pred_labels[pred_kept]
        if (
            gt_masks.ndim == 3
            and gt_labels.shape == gt_masks.shape[:1]
            and (crowd is None or crowd.shape == gt_labels.shape)
        ):
            gt_masks, gt_labels = gt_masks[gt_kept], gt_labels[gt_kept]
            crowd = None if crowd is None else crowd[gt_kept]
        self.class_aware.update(
            InstancePredictions(masks=pred_masks, scores=scores, labels=pred_labels),
            InstanceTargets(masks=gt_masks, labels=gt_labels, iscrowd=crowd),
        )
        self.class_agnostic.update(
            InstancePredictions(masks=pred_masks, scores=scores, labels=np.full_like(pred_labels, AGNOSTIC_CATEGORY)),
            InstanceTargets(masks=gt_masks, labels=np.full_like(gt_labels, AGNOSTIC_CATEGORY), iscrowd=crowd),
        )

    def compute(self) -> dict[str, MaskAPResult]:
        """``{"class_aware": ..., "class_agnostic": ...}`` over every image added."""
        return {"class_aware": self.class_aware.compute(), "class_agnostic": self.class_agnostic.compute()}


def _instance_predictions(instances: CoreInstancePredictions) -> InstancePredictions:
    """A segmenter's instances (torch, any device) as :class:`~seg_eval.metrics.InstancePredictions` (numpy)."""
    return InstancePredictions(
        masks=instances.masks.detach().cpu().bool().numpy(),
        scores=instances.scores.detach().cpu().double().numpy(),
        labels=instances.labels.detach().cpu().long().numpy(),
    )


@dataclass(frozen=True)
class EvaluationRecord:
    """One evaluation: what was run, on what, under which protocol, and the scores.

    ``instance_metrics`` is ``{"class_aware": MaskAPResult, "class_agnostic": MaskAPResult}`` when the segmenter
    returned instances and the dataset has instance ground truth, else ``None``.
    """

    method: str
    model: str
    dataset: str
    split: str
    num_images: int
    preset: ProtocolPreset
    class_names: tuple[str, ...]
    metrics: SegmentationMetrics
    seconds: float
    extra: Mapping[str, Any] = field(default_factory=dict)
    instance_metrics: dict[str, MaskAPResult] | None = None

    @property
    def signature(self) -> str:
        """The protocol signature (preset + class names)."""
        return self.preset.signature(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` record."""
        protocol = self.preset.model_dump(mode="json")
        protocol["class_names"] = list(self.class_names)
        protocol["signature"] = self.signature
        versions = {}
        for dist in ("seg-core", "seg-eval", "seg-models"):
            try:
                versions[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        record: dict[str, Any] = {
            "method": self.method,
            "model": self.model,
            "dataset": self.dataset,
            "split": self.split,
            "num_images": self.num_images,
            "protocol": protocol,
            "metrics": self.metrics.to_dict(extended=True),
        }
        if self.instance_metrics is not None:
            record["instance_metrics"] = {kind: result.to_dict() for kind, result in self.instance_metrics.items()}
        return {**record, "seconds": round(self.seconds, 3), "versions": versions, **dict(self.extra)}


def evaluate(
    segmenter: Segmenter,
    dataset: SegmentationDataset,
    *,
    preset: ProtocolPreset,
    method: str,
    model: str,
    dataset_name: str,
    split: str = "",
    concepts: ConceptSet | None = None,
    limit: int | None = None,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> EvaluationRecord:
    """Evaluate ``segmenter`` on ``dataset`` and return the record (see :func:`write_results`).

    Args:
        segmenter: Anything with ``segment(images, concepts) -> SegmentationOutput``; when it returns
            ``instances`` (and the dataset's samples carry ``instances``), mask AP is computed too.
        dataset: Anything with ``class_names``, ``ignore_index``, ``len`` and ``[i] -> Sample``.
        preset: The protocol. Its ``class_names`` (if set) must equal the dataset's, or be a background name
            followed by dataset class names: the dataset is then scored through a
            :class:`~seg_eval.datasets.BackgroundView` (see :func:`~seg_eval.datasets.view_for_preset`).
        method: Method name for the record.
        model: Model name for the record.
        dataset_name: Dataset name for the record.
        split: Split name for the record.
        concepts: The concept set to segment with; by default the preset's
            (:func:`~seg_eval.presets.preset_concepts`: its prompt names and synonyms, the dataset's class names
            when the preset leaves them open, background first under a background policy).
        limit: Evaluate only the first ``limit`` images.
        device: Where input tensors are placed.
        progress: Called as ``progress(done, total)`` after each image.

    Raises:
        ValueError: The preset's class names are neither the dataset's nor a background view of them, the
            segmenter's labels do not line up with the dataset's, it predicts at another resolution, it returns
            instances for some images only, or the dataset is empty.
    """
    dataset = view_for_preset(dataset, preset)
    class_names = tuple(dataset.class_names)
    concepts = concepts if concepts is not None else preset_concepts(preset, class_names)
    if concepts.num_labels != len(class_names):
        raise ValueError(
            f"the concept set has {concepts.num_labels} labels ({', '.join(concepts.label_names[:5])}, ...) but the "
            f"dataset has {len(class_names)} classes"
        )
    total = len(dataset) if limit is None else min(limit, len(dataset))
    if total == 0:
        raise ValueError("the dataset is empty: nothing to evaluate")
    confusion = ConfusionMatrix(len(class_names), ignore_index=dataset.ignore_index)
    instance_scores = InstanceEvaluation(class_names)
    with_instances: bool | None = None  # whether the segmenter returns instances (it must do so for every image)
    start = time.perf_counter()
    with torch.inference_mode():
        for index in range(total):
            sample: Sample = dataset[index]
            output = segmenter.segment(image_to_tensor(sample.image, device), concepts)
            labels = output.labels[0]
            if tuple(labels.shape) != sample.label.shape:
                raise ValueError(
                    f"the segmenter returned a {tuple(labels.shape)} label map for image {sample.image_id} of size "
                    f"{sample.label.shape}: segmenters must predict at the input resolution"
                )
            confusion.update(labels.cpu().numpy(), sample.label)
            returned = output.instances is not None
            if with_instances is not None and returned != with_instances:
                before, now = ("no instances", "some") if returned else ("instances", "none")
                raise ValueError(
                    f"the segmenter returned {before} for the earlier images but {now} for image {sample.image_id}: "
                    "an instance-aware segmenter returns InstancePredictions for every image (empty ones when it "
                    "finds nothing)"
                )
            with_instances = returned
            if output.instances is not None and sample.instances is not None:
                predicted = output.instances[0]
                if tuple(predicted.masks.shape[1:]) != sample.label.shape:
                    raise ValueError(
                        f"the segmenter returned {tuple(predicted.masks.shape[1:])} instance masks for image "
                        f"{sample.image_id} of size {sample.label.shape}: segmenters must predict at the input "
                        "resolution"
                    )
                instance_scores.update(_instance_predictions(predicted), sample.instances)
            if progress is not None:
                progress(index + 1, total)
    seconds = time.perf_counter() - start
    return EvaluationRecord(
        method=method,
        model=model,
        dataset=dataset_name,
        split=split,
        num_images=total,
        preset=preset,
        class_names=class_names,
        metrics=confusion.compute(class_names),
        seconds=seconds,
        instance_metrics=instance_scores.compute() if instance_scores.num_images else None,
    )


def write_results(records: EvaluationRecord | Sequence[EvaluationRecord], path: str | Path) -> Path:
    """Write one record as a JSON object, or several as a JSON list (NaN written as ``null``), atomically."""
    path = Path(path)
    payload: Any = (
        records.to_dict() if isinstance(records, EvaluationRecord) else [record.to_dict() for record in records]
    )
    text = json.dumps(_nan_to_none(payload), indent=2, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(item) for item in value]
    return value
