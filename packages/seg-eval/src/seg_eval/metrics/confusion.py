"""Streaming confusion matrices and the semantic-segmentation scores read off them.

Convention (as in torchmetrics and mmseg): ``confusion[c, k]`` counts pixels whose ground truth is class ``c`` and
whose prediction is ``k``; rows are ground truth, columns are predictions. With ``n = confusion``:

* ``TP_c = n[c, c]``, ``FN_c = Σ_k n[c, k] − TP_c``, ``FP_c = Σ_r n[r, c] − TP_c``.
* ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``; ``mIoU = nanmean_c IoU_c``.
* ``pixel accuracy = Σ_c TP_c / Σ n``.
* ``Acc_c = TP_c / (TP_c + FN_c)``; ``mean accuracy = nanmean_c Acc_c``.
* ``fwIoU = Σ_c (Σ_k n[c, k] / Σ n) · IoU_c`` over classes with ground-truth pixels.

Absent classes: a class with no ground-truth pixel and no predicted pixel has ``0 / 0`` IoU. It is reported as NaN
(``None`` in ``results.json``) and left out of the mean, the convention of mmseg, torchmetrics' ``average="macro"``
and most papers. A class that is predicted but absent from the ground truth has IoU 0 and *does* count. Class
accuracy is NaN (left out of the mean) for a class with no ground-truth pixel. Note that ReCLIP's official
evaluation instead counts absent classes as 0 (see ``docs/reference/official-implementations.md`` §3); per-class
IoUs let a caller reproduce that if needed.

A confusion matrix may have more columns than rows (``[C, K]``, ``K > C``): the extra columns are predictions that
match no class (for example clusters left unmatched by Hungarian matching). They count as errors: false negatives
for the ground-truth class, false positives for no class.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from seg_eval.metrics._counting import LabelMap, count_pairs
from seg_eval.metrics.results import SegmentationMetrics

__all__ = [
    "ConfusionMatrix",
    "accuracy_per_class",
    "as_confusion_array",
    "frequency_weighted_iou",
    "iou_per_class",
    "mean_accuracy",
    "mean_iou",
    "pixel_accuracy",
    "segmentation_metrics",
]

ConfusionLike = npt.ArrayLike | Tensor


def as_confusion_array(confusion: ConfusionLike | ConfusionMatrix) -> npt.NDArray[np.float64]:
    """Return a confusion matrix ``[C, K]`` (``K >= C``) as float64 numpy, checking its shape and counts.

    Args:
        confusion: Counts ``[C, K]``: a numpy array, nested lists, a torch tensor (any device) or a
            :class:`ConfusionMatrix`.

    Raises:
        ValueError: Not 2-D, fewer columns than rows, or negative counts.
    """
    if isinstance(confusion, _PairCounter):
        confusion = confusion.counts
    if isinstance(confusion, Tensor):
        array = confusion.detach().cpu().to(torch.float64).numpy()
    else:
        array = np.asarray(confusion, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] < array.shape[0]:
        raise ValueError(
            f"confusion must be a [C, K] matrix with K >= C (rows = ground truth, columns = predictions), "
            f"got shape {array.shape}"
        )
    if np.any(array < 0):
        raise ValueError("confusion holds negative counts: pass raw pixel counts, not normalised or differenced ones")
    return array


def _safe_ratio(numerator: npt.NDArray[np.float64], denominator: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``numerator / denominator`` with NaN (and no warning) where the denominator is 0."""
    out = np.full(numerator.shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _nanmean(values: npt.NDArray[np.float64]) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def iou_per_class(confusion: ConfusionLike | ConfusionMatrix) -> npt.NDArray[np.float64]:
    """Per-class IoU ``TP_c / (TP_c + FP_c + FN_c)``; NaN for a class absent from predictions and ground truth.

    Args:
        confusion: Counts ``[C, K]``, rows ground truth, columns predictions; columns ``>= C`` are predictions of
            no class (errors).

    Returns:
        float64 ``[C]``.

    Example:
        >>> iou_per_class([[3, 1], [0, 2]]).round(3).tolist()  # class 0: 3 / (3 + 1); class 1: 2 / (2 + 1)
        [0.75, 0.667]
    """
    n = as_confusion_array(confusion)
    num_classes = n.shape[0]
    true_positive = np.diagonal(n).copy()
    ground_truth = n.sum(axis=1)
    predicted = n[:, :num_classes].sum(axis=0)
    return _safe_ratio(true_positive, ground_truth + predicted - true_positive)


def mean_iou(confusion: ConfusionLike | ConfusionMatrix) -> float:
    """Mean IoU over present classes: ``nanmean_c IoU_c`` (NaN if no class is present).

    Args:
        confusion: Counts ``[C, K]`` (see :func:`iou_per_class`).
    """
    return _nanmean(iou_per_class(confusion))


def pixel_accuracy(confusion: ConfusionLike | ConfusionMatrix) -> float:
    """Pixel accuracy ``Σ_c TP_c / Σ n`` (NaN if no pixel was counted).

    Args:
        confusion: Counts ``[C, K]`` (see :func:`iou_per_class`).
    """
    n = as_confusion_array(confusion)
    total = float(n.sum())
    return float(np.trace(n)) / total if total > 0 else float("nan")


def accuracy_per_class(confusion: ConfusionLike | ConfusionMatrix) -> npt.NDArray[np.float64]:
    """Per-class accuracy (recall) ``TP_c / (TP_c + FN_c)``; NaN for a class with no ground-truth pixel.

    Args:
        confusion: Counts ``[C, K]`` (see :func:`iou_per_class`).

    Returns:
        float64 ``[C]``.
    """
    n = as_confusion_array(confusion)
    return _safe_ratio(np.diagonal(n).copy(), n.sum(axis=1))


def mean_accuracy(confusion: ConfusionLike | ConfusionMatrix) -> float:
    """Mean class accuracy ``nanmean_c Acc_c`` over classes with ground-truth pixels.

    Args:
        confusion: Counts ``[C, K]`` (see :func:`iou_per_class`).
    """
    return _nanmean(accuracy_per_class(confusion))


def frequency_weighted_iou(confusion: ConfusionLike | ConfusionMatrix) -> float:
    """Frequency-weighted IoU ``Σ_c f_c · IoU_c`` with ``f_c = Σ_k n[c, k] / Σ n`` (NaN if no pixel was counted).

    Classes without ground-truth pixels have ``f_c = 0`` and drop out.

    Args:
        confusion: Counts ``[C, K]`` (see :func:`iou_per_class`).
    """
    n = as_confusion_array(confusion)
    total = float(n.sum())
    if total == 0:
        return float("nan")
    frequency = n.sum(axis=1) / total
    iou = iou_per_class(n)
    present = frequency > 0
    return float(np.sum(frequency[present] * iou[present]))


def segmentation_metrics(
    confusion: ConfusionLike | ConfusionMatrix, class_names: Sequence[str] | None = None
) -> SegmentationMetrics:
    """All scores of a confusion matrix ``[C, K]`` as one :class:`SegmentationMetrics`.

    Args:
        confusion: Counts ``[C, K]`` (see :func:`iou_per_class`).
        class_names: ``C`` distinct class names for ``per_class_iou``; default ``"0"``, ``"1"``, ...
    """
    n = as_confusion_array(confusion)
    return SegmentationMetrics.from_arrays(
        iou=iou_per_class(n),
        pixel_accuracy=pixel_accuracy(n),
        mean_accuracy=mean_accuracy(n),
        frequency_weighted_iou=frequency_weighted_iou(n),
        class_names=class_names,
    )


def _check_positive_int(name: str, value: object) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_ignore_index(value: object) -> None:
    if value is not None and type(value) is not int:
        raise TypeError(f"ignore_index must be an int or None, got {value!r}")


class _PairCounter:
    """A streaming ``[rows, cols]`` int64 count matrix of (target, prediction) pairs: the shared machinery.

    The counts live on one device: the one given, or else (``device=None``) the device of the first torch batch
    (the CPU for numpy batches). Each batch is counted where its tensors are; only the ``[rows, cols]`` result moves.
    """

    def __init__(
        self,
        num_rows: int,
        num_cols: int,
        *,
        ignore_index: int | None,
        device: torch.device | str | None,
        rows_name: str,
        cols_name: str,
    ) -> None:
        _check_positive_int(rows_name, num_rows)
        _check_positive_int(cols_name, num_cols)
        _check_ignore_index(ignore_index)
        self._num_rows = num_rows
        self._num_cols = num_cols
        self.ignore_index = ignore_index
        self._device_fixed = device is not None
        self._counts = torch.zeros((num_rows, num_cols), dtype=torch.int64, device=device)

    @property
    def counts(self) -> Tensor:
        """The accumulated int64 counts ``[rows, cols]`` (rows ground truth, columns predictions); a live view."""
        return self._counts

    @property
    def device(self) -> torch.device:
        """Where the counts live."""
        return self._counts.device

    def _add_pairs(self, pred: LabelMap, target: LabelMap, pred_name: str, target_name: str) -> None:
        batch = count_pairs(
            pred,
            target,
            num_rows=self._num_rows,
            num_cols=self._num_cols,
            ignore_index=self.ignore_index,
            pred_name=pred_name,
            target_name=target_name,
        )
        if not self._device_fixed and isinstance(pred, Tensor):
            # Follow the first torch batch's device, so GPU evaluation never syncs a CPU-side matrix.
            self._counts = self._counts.to(batch.device)
            self._device_fixed = True
        self._counts += batch.to(self._counts.device)

    def reset(self) -> None:
        """Zero the counts (keeps the device)."""
        self._counts.zero_()

    def _check_compatible(self, other: object) -> _PairCounter:
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(self).__name__} with {type(other).__name__}")
        assert isinstance(other, _PairCounter)
        if other._counts.shape != self._counts.shape or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"cannot merge a {type(self).__name__} of shape {tuple(self._counts.shape)} "
                f"(ignore_index={self.ignore_index}) with one of shape {tuple(other._counts.shape)} "
                f"(ignore_index={other.ignore_index})"
            )
        return other

    def merge(self, other: Self) -> Self:
        """Add ``other``'s counts into this one (in place) and return ``self``."""
        checked = self._check_compatible(other)
        self._counts += checked._counts.to(self._counts.device)
        return self

    def __iadd__(self, other: Self) -> Self:
        return self.merge(other)

    def __add__(self, other: Self) -> Self:
        """A new accumulator holding the sum of both (neither operand changes)."""
        self._check_compatible(other)
        out = copy.copy(self)
        out._counts = self._counts.clone()
        return out.merge(other)

    def all_reduce(self, group: Any = None) -> Self:
        """Sum the counts over all ranks of ``torch.distributed`` in place; a no-op when it is not initialised.

        Call it on every rank before computing scores. With the NCCL backend, CPU counts go through the current
        CUDA device and come back.

        Args:
            group: Process group; default the world.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        backend = str(dist.get_backend(group))
        if backend == "nccl" and self._counts.device.type != "cuda":
            on_gpu = self._counts.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM, group=group)
            self._counts.copy_(on_gpu)
        else:
            dist.all_reduce(self._counts, op=dist.ReduceOp.SUM, group=group)
        return self

    def to_numpy(self) -> npt.NDArray[np.int64]:
        """The counts as an int64 numpy array (a copy)."""
        return self._counts.detach().cpu().numpy().copy()


class ConfusionMatrix(_PairCounter):
    """Streaming ``C × C`` confusion matrix for semantic segmentation.

    Feed it batches of label maps (numpy or torch, any shape: ``[H, W]``, ``[B, H, W]``); it keeps only the int64
    counts, so a whole dataset streams through in constant memory. Each batch costs one ``bincount`` of
    ``target * C + pred`` on the batch's device. Accumulators add (``a + b``, ``a += b``) and
    :meth:`all_reduce` sums them across ``torch.distributed`` ranks.

    Scores follow the formulas and the absent-class convention of this module's docstring.

    Args:
        num_classes: Number of classes ``C``.
        ignore_index: Ground-truth value to skip (255 by default; ``None`` skips nothing; may be negative).
        device: Where the counts live; default the device of the first torch batch (the CPU for numpy batches).

    Example:
        >>> import numpy as np
        >>> cm = ConfusionMatrix(num_classes=2)
        >>> cm.update(np.array([[0, 1], [1, 1]]), np.array([[0, 0], [1, 255]]))
        >>> cm.counts.tolist()
        [[1, 1], [0, 1]]
        >>> round(cm.miou, 3)  # (1/2 + 1/2) / 2
        0.5
    """

    def __init__(
        self, num_classes: int, *, ignore_index: int | None = 255, device: torch.device | str | None = None
    ) -> None:
        super().__init__(
            num_classes,
            num_classes,
            ignore_index=ignore_index,
            device=device,
            rows_name="num_classes",
            cols_name="num_classes",
        )

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return self._num_rows

    def update(self, pred: LabelMap, target: LabelMap) -> None:
        """Count one batch.

        Args:
            pred: Predicted class ids, any shape, integer dtype, values in ``[0, C)``.
            target: Ground-truth ids, same shape, values in ``[0, C)`` or ``ignore_index``.

        Raises:
            TypeError: A float or bool input (take ``argmax`` of logits first).
            ValueError: Shapes differ, or a value is out of range (the message names it).
        """
        self._add_pairs(pred, target, "pred", "target")

    @classmethod
    def from_counts(cls, counts: ConfusionLike, *, ignore_index: int | None = 255) -> ConfusionMatrix:
        """Wrap existing ``[C, C]`` counts (e.g. loaded from disk) in an accumulator."""
        array = as_confusion_array(counts)
        if array.shape[0] != array.shape[1]:
            raise ValueError(f"counts must be square [C, C], got shape {array.shape}")
        if not np.all(array == np.round(array)):
            raise ValueError("counts must be whole numbers of pixels")
        out = cls(array.shape[0], ignore_index=ignore_index)
        out._counts = torch.from_numpy(array.astype(np.int64))
        return out

    @property
    def iou_per_class(self) -> npt.NDArray[np.float64]:
        """Per-class IoU ``[C]`` (NaN for absent classes); see :func:`iou_per_class`."""
        return iou_per_class(self._counts)

    @property
    def miou(self) -> float:
        """Mean IoU over present classes; see :func:`mean_iou`."""
        return mean_iou(self._counts)

    @property
    def pixel_accuracy(self) -> float:
        """Correct / evaluated pixels; see :func:`pixel_accuracy`."""
        return pixel_accuracy(self._counts)

    @property
    def accuracy_per_class(self) -> npt.NDArray[np.float64]:
        """Per-class accuracy ``[C]`` (NaN without ground truth); see :func:`accuracy_per_class`."""
        return accuracy_per_class(self._counts)

    @property
    def mean_accuracy(self) -> float:
        """Mean class accuracy; see :func:`mean_accuracy`."""
        return mean_accuracy(self._counts)

    @property
    def frequency_weighted_iou(self) -> float:
        """Frequency-weighted IoU; see :func:`frequency_weighted_iou`."""
        return frequency_weighted_iou(self._counts)

    def compute(self, class_names: Sequence[str] | None = None) -> SegmentationMetrics:
        """All scores as a :class:`SegmentationMetrics` (class names default to ``"0"``, ``"1"``, ...)."""
        return segmentation_metrics(self._counts, class_names)
