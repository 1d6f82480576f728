"""Hungarian-matched scores for cluster outputs: the unsupervised-segmentation protocol (PiCIE, STEGO, ReCo tables).

A method that outputs cluster ids instead of class ids is scored after a one-to-one matching of clusters to classes
chosen to maximise the number of agreeing pixels over the *whole* dataset:

1. accumulate ``counts[c, k]`` = pixels of ground-truth class ``c`` assigned to cluster ``k`` (``[C, K]``);
2. solve ``max_σ Σ_k counts[σ(k), k]`` over one-to-one maps ``σ`` from clusters to classes with
   ``scipy.optimize.linear_sum_assignment(maximize=True)``;
3. read IoU / accuracy off the remapped ``[C, C + 1]`` confusion, whose last column holds the pixels of clusters left
   unmatched (when ``K > C``): they are wrong for their ground-truth class and a false positive for no class.

With ``K < C`` some classes get no cluster; present ones then score IoU 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from seg_eval.metrics._counting import LabelMap, first_bad_value
from seg_eval.metrics.confusion import (
    ConfusionLike,
    _PairCounter,
    iou_per_class,
    mean_accuracy,
    mean_iou,
    pixel_accuracy,
    segmentation_metrics,
)
from seg_eval.metrics.results import SegmentationMetrics

__all__ = ["HungarianMatch", "HungarianMatchedIoU", "hungarian_match"]

UNMATCHED = -1
"""The class id :attr:`HungarianMatch.cluster_to_class` gives a cluster that matched no class."""


@dataclass(frozen=True)
class HungarianMatch:
    """A cluster-to-class matching and the confusion it induces.

    Attributes:
        cluster_to_class: int64 ``[K]``: the class of each cluster, or ``-1`` for a cluster that matched none.
        confusion: int64 ``[C, C + 1]``: ground truth × matched class, last column = unmatched clusters' pixels.
    """

    cluster_to_class: npt.NDArray[np.int64]
    confusion: npt.NDArray[np.int64]

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return int(self.confusion.shape[0])

    @property
    def iou_per_class(self) -> npt.NDArray[np.float64]:
        """Per-class IoU ``[C]`` after matching (NaN for absent classes)."""
        return iou_per_class(self.confusion)

    @property
    def miou(self) -> float:
        """Mean IoU over present classes after matching."""
        return mean_iou(self.confusion)

    @property
    def pixel_accuracy(self) -> float:
        """Correct / evaluated pixels after matching (unmatched clusters' pixels are wrong)."""
        return pixel_accuracy(self.confusion)

    @property
    def mean_accuracy(self) -> float:
        """Mean class accuracy after matching."""
        return mean_accuracy(self.confusion)

    def metrics(self, class_names: Sequence[str] | None = None) -> SegmentationMetrics:
        """All scores after matching as a :class:`SegmentationMetrics`."""
        return segmentation_metrics(self.confusion, class_names)

    def remap(self, clusters: LabelMap, *, unmatched_value: int = 255) -> LabelMap:
        """Turn a cluster map into a class map (for visualisation or a second, supervised evaluation).

        Args:
            clusters: Cluster ids, any shape, values in ``[0, K)``.
            unmatched_value: Class id written for clusters that matched no class.

        Returns:
            Class ids of the same shape and kind (numpy or torch, int64).
        """
        table = self.cluster_to_class.copy()
        table[table == UNMATCHED] = unmatched_value
        num_clusters = table.shape[0]
        flat = clusters.reshape(-1)
        if flat.shape[0] and (int(flat.min()) < 0 or int(flat.max()) >= num_clusters):
            bad = first_bad_value(flat, 0, num_clusters)
            raise ValueError(f"clusters holds the id {bad}, outside [0, {num_clusters}): pass the clusters counted")
        if isinstance(clusters, Tensor):
            return torch.from_numpy(table).to(clusters.device)[clusters.long()]
        return table[clusters]


def hungarian_match(counts: ConfusionLike | _PairCounter) -> HungarianMatch:
    """Match clusters to classes one-to-one, maximising agreeing pixels.

    Solves ``max_σ Σ_k counts[σ(k), k]`` (``σ`` one-to-one) with ``scipy.optimize.linear_sum_assignment``.
    ``min(C, K)`` pairs are matched; any other cluster maps to ``-1`` and its pixels land in the last column of the
    remapped confusion.

    Args:
        counts: ``[C, K]`` pixel counts, rows ground-truth classes, columns clusters (any ``K >= 1``).

    Returns:
        The matching and its ``[C, C + 1]`` confusion.
    """
    if isinstance(counts, _PairCounter):
        counts = counts.counts
    if isinstance(counts, Tensor):
        array = counts.detach().cpu().to(torch.float64).numpy()
    else:
        array = np.asarray(counts, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"counts must be a [C, K] matrix (classes × clusters), got shape {array.shape}")
    if np.any(array < 0):
        raise ValueError("counts holds negative values: pass raw pixel counts")
    num_classes, num_clusters = array.shape
    class_ids, cluster_ids = linear_sum_assignment(array, maximize=True)
    cluster_to_class = np.full(num_clusters, UNMATCHED, dtype=np.int64)
    cluster_to_class[cluster_ids] = class_ids
    confusion = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
    whole = np.rint(array).astype(np.int64)
    for cluster in range(num_clusters):
        target_column = cluster_to_class[cluster]
        confusion[:, num_classes if target_column == UNMATCHED else target_column] += whole[:, cluster]
    return HungarianMatch(cluster_to_class=cluster_to_class, confusion=confusion)


class HungarianMatchedIoU(_PairCounter):
    """Streaming class × cluster counts, scored after Hungarian matching (see the module docstring).

    Only the ``[C, K]`` counts are kept while streaming; the matching is solved once, over the whole dataset, by
    :meth:`match` (matching per image would flatter the method). Mergeable and all-reducible like
    :class:`~seg_eval.metrics.ConfusionMatrix`.

    Args:
        num_classes: Number of ground-truth classes ``C``.
        num_clusters: Number of cluster ids ``K`` the method emits; default ``C``. ``K > C`` is allowed (the extra
            clusters are counted as wrong).
        ignore_index: Ground-truth value to skip (255 by default; ``None`` skips nothing).
        device: Where the counts live; default the device of the first torch batch.

    Example:
        >>> import numpy as np
        >>> metric = HungarianMatchedIoU(num_classes=2)
        >>> metric.update(np.array([1, 1, 0]), np.array([0, 0, 1]))  # clusters are the classes, swapped
        >>> metric.match().miou
        1.0
    """

    def __init__(
        self,
        num_classes: int,
        num_clusters: int | None = None,
        *,
        ignore_index: int | None = 255,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(
            num_classes,
            num_classes if num_clusters is None else num_clusters,
            ignore_index=ignore_index,
            device=device,
            rows_name="num_classes",
            cols_name="num_clusters",
        )

    @property
    def num_classes(self) -> int:
        """Number of ground-truth classes ``C``."""
        return self._num_rows

    @property
    def num_clusters(self) -> int:
        """Number of cluster ids ``K``."""
        return self._num_cols

    def update(self, clusters: LabelMap, target: LabelMap) -> None:
        """Count one batch.

        Args:
            clusters: Cluster ids, any shape, integer dtype, values in ``[0, K)``.
            target: Ground-truth class ids, same shape, values in ``[0, C)`` or ``ignore_index``.
        """
        self._add_pairs(clusters, target, "clusters", "target")

    def match(self) -> HungarianMatch:
        """Solve the matching over everything counted so far."""
        return hungarian_match(self._counts)

    def compute(self, class_names: Sequence[str] | None = None) -> SegmentationMetrics:
        """Scores after matching as a :class:`SegmentationMetrics`."""
        return self.match().metrics(class_names)
