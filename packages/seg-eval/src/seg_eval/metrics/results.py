"""The typed result of a semantic-segmentation evaluation and its ``results.json`` form."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["SegmentationMetrics"]

_REQUIRED_KEYS = ("mIoU", "pixel_accuracy", "per_class_iou")
_OPTIONAL_KEYS = ("mean_accuracy", "frequency_weighted_iou")


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _none_to_nan(value: Any, key: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"results field {key!r} must be a number or null, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SegmentationMetrics:
    """Semantic-segmentation scores of one evaluation, all as fractions in ``[0, 1]``.

    A scalar is NaN when it is undefined (no pixel was evaluated). ``per_class_iou`` maps each class name to its IoU,
    or to ``None`` when the class is absent from both the predictions and the ground truth (such classes are left out
    of ``miou``; see ``docs/metrics.md``).

    Attributes:
        miou: Mean IoU over the classes that are present (``nanmean`` of the per-class IoU).
        pixel_accuracy: Correct pixels / evaluated pixels.
        mean_accuracy: Mean over classes with ground-truth pixels of (correct pixels / ground-truth pixels).
        per_class_iou: Class name -> IoU, or ``None`` for a class absent from predictions and ground truth.
        frequency_weighted_iou: Σ_c (ground-truth pixels of c / all pixels) · IoU_c.
    """

    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    per_class_iou: Mapping[str, float | None] = field(default_factory=dict)
    frequency_weighted_iou: float = math.nan

    def __post_init__(self) -> None:
        # A read-only view keeps the frozen dataclass honest about its mapping field.
        object.__setattr__(self, "per_class_iou", MappingProxyType(dict(self.per_class_iou)))

    @classmethod
    def from_arrays(
        cls,
        *,
        iou: npt.NDArray[np.float64],
        pixel_accuracy: float,
        mean_accuracy: float,
        frequency_weighted_iou: float,
        class_names: Sequence[str] | None = None,
    ) -> SegmentationMetrics:
        """Build from a per-class IoU vector (NaN = absent class), naming classes ``"0"``, ``"1"``, ... by default.

        Args:
            iou: Per-class IoU ``[C]``, NaN where a class is absent from predictions and ground truth.
            pixel_accuracy: Pixel accuracy.
            mean_accuracy: Mean class accuracy.
            frequency_weighted_iou: Frequency-weighted IoU.
            class_names: ``C`` distinct names, or ``None`` for the class indices as strings.
        """
        num_classes = int(iou.shape[0])
        names = [str(i) for i in range(num_classes)] if class_names is None else [str(n) for n in class_names]
        if len(names) != num_classes:
            raise ValueError(
                f"class_names has {len(names)} names but there are {num_classes} classes: pass one per class"
            )
        if len(set(names)) != len(names):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"class_names must be distinct, got duplicates {duplicates}")
        finite = iou[~np.isnan(iou)]
        miou = float(finite.mean()) if finite.size else math.nan
        return cls(
            miou=miou,
            pixel_accuracy=float(pixel_accuracy),
            mean_accuracy=float(mean_accuracy),
            per_class_iou={name: _finite_or_none(float(v)) for name, v in zip(names, iou, strict=True)},
            frequency_weighted_iou=float(frequency_weighted_iou),
        )

    def miou_over(self, class_names: Sequence[str]) -> float:
        """Mean IoU over a subset of classes (e.g. things or stuff), absent classes left out; NaN if none is present.

        Raises:
            KeyError: A name is not one of this result's classes.
        """
        unknown = [name for name in class_names if name not in self.per_class_iou]
        if unknown:
            raise KeyError(f"unknown classes {unknown}; known: {', '.join(self.per_class_iou)}")
        values = [value for name in class_names if (value := self.per_class_iou[name]) is not None]
        return float(sum(values) / len(values)) if values else math.nan

    def to_dict(self, *, extended: bool = False) -> dict[str, Any]:
        """The ``results.json`` form: ``{"mIoU", "pixel_accuracy", "per_class_iou"}``; NaN becomes ``None``.

        Args:
            extended: Also write ``"mean_accuracy"`` and ``"frequency_weighted_iou"``.
        """
        out: dict[str, Any] = {
            "mIoU": _finite_or_none(self.miou),
            "pixel_accuracy": _finite_or_none(self.pixel_accuracy),
            "per_class_iou": dict(self.per_class_iou),
        }
        if extended:
            out["mean_accuracy"] = _finite_or_none(self.mean_accuracy)
            out["frequency_weighted_iou"] = _finite_or_none(self.frequency_weighted_iou)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegmentationMetrics:
        """Read the form written by :meth:`to_dict` (either variant); unknown keys are errors.

        A missing ``"mean_accuracy"`` or ``"frequency_weighted_iou"`` reads as NaN.
        """
        unknown = sorted(set(data) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
        if unknown:
            raise ValueError(f"unknown results keys {unknown}: expected {[*_REQUIRED_KEYS, *_OPTIONAL_KEYS]}")
        missing = [key for key in _REQUIRED_KEYS if key not in data]
        if missing:
            raise ValueError(f"results are missing the keys {missing}")
        per_class = data["per_class_iou"]
        if not isinstance(per_class, Mapping):
            raise ValueError(f"results field 'per_class_iou' must be a mapping, got {type(per_class).__name__}")
        return cls(
            miou=_none_to_nan(data["mIoU"], "mIoU"),
            pixel_accuracy=_none_to_nan(data["pixel_accuracy"], "pixel_accuracy"),
            mean_accuracy=_none_to_nan(data.get("mean_accuracy"), "mean_accuracy"),
            per_class_iou={
                str(name): (None if v is None else _none_to_nan(v, f"per_class_iou.{name}"))
                for name, v in per_class.items()
            },
            frequency_weighted_iou=_none_to_nan(data.get("frequency_weighted_iou"), "frequency_weighted_iou"),
        )
