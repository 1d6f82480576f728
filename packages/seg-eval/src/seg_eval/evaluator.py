"""Run any :class:`seg_core.Segmenter` over a dataset under a protocol preset and write ``results.json``.

The evaluator owns nothing method-specific: it feeds each image (float RGB in ``[0, 1]``, ``[1, 3, H, W]``, at
its original size) to the segmenter, which applies the preset's resize / sliding window / normalisation itself
and returns logits at the input size; the label map is compared with the ground truth in a streaming confusion
matrix. The record it writes carries the protocol and its signature, so numbers are only ever compared under the
same protocol::

    {"method": ..., "model": ..., "dataset": ..., "split": ..., "num_images": ...,
     "protocol": {...preset..., "class_names": [...], "signature": "..."},
     "metrics": {"mIoU": ..., "pixel_accuracy": ..., "per_class_iou": {...}, ...}}
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
from seg_eval.datasets.base import Sample, SegmentationDataset
from seg_eval.metrics import ConfusionMatrix, SegmentationMetrics
from seg_eval.presets import preset_concepts

__all__ = ["EvaluationRecord", "evaluate", "image_to_tensor", "write_results"]

Progress = Callable[[int, int], None]


def image_to_tensor(image: np.ndarray[Any, np.dtype[np.uint8]], device: torch.device | str = "cpu") -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB to ``[1, 3, H, W]`` float32 in ``[0, 1]``."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float().div_(255.0)


@dataclass(frozen=True)
class EvaluationRecord:
    """One evaluation: what was run, on what, under which protocol, and the scores."""

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
        return {
            "method": self.method,
            "model": self.model,
            "dataset": self.dataset,
            "split": self.split,
            "num_images": self.num_images,
            "protocol": protocol,
            "metrics": self.metrics.to_dict(extended=True),
            "seconds": round(self.seconds, 3),
            "versions": versions,
            **dict(self.extra),
        }


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
        segmenter: Anything with ``segment(images, concepts) -> SegmentationOutput``.
        dataset: Anything with ``class_names``, ``ignore_index``, ``len`` and ``[i] -> Sample``.
        preset: The protocol. Its ``class_names`` (if set) must equal the dataset's.
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
        ValueError: The preset's class names differ from the dataset's, the segmenter's labels do not line up
            with the dataset's, or the dataset is empty.
    """
    class_names = tuple(dataset.class_names)
    if preset.class_names is not None and tuple(preset.class_names) != class_names:
        raise ValueError(
            f"preset {preset.name!r} is for classes {list(preset.class_names)[:5]}..., but the dataset has "
            f"{list(class_names)[:5]}...; choose the preset of this dataset"
        )
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
