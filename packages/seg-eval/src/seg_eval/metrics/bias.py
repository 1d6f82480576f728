"""ReCLIP++'s two bias scores (Wang et al., TPAMI; Table VII), usable on any method's predictions.

Both are *rectification scores*: higher means less bias. The paper reports MaskCLIP 0.29 / -0.50 and ReCLIP++ (rec.)
0.37 / -0.29 (class-preference on PASCAL Context, space-preference on PASCAL VOC).

Class preference (the paper, §IV "Quantitative Results of Bias Rectification"): "compute the confusion matrix for all
classes in the dataset. Given a class i, take the i-th row; subtract the maximum value among the other positions of
this row from the i-th element, as the score for class i; average the scores over classes." The paper does not say
how rows are scaled; we row-normalise (each row sums to 1, the usual way to draw a confusion matrix and the only way
that gives scores comparable across classes and datasets, in ``[-1, 1]``), and average over classes that have
ground-truth pixels.

Space preference (same section, and Fig. 1a): mIoU is drawn against the distance between the object centroid and the
image centroid; "compute the slopes of the curve between the distance and mIoU at different distances and average
them". Choices where the paper is vague (its appendix is not available to us):

* an *object* is a ground-truth instance (or, without instance labels, a connected component of one class in the
  semantic map, :func:`semantic_objects`);
* distance is normalised by the half-diagonal so it lies in ``[0, 1]`` (0 = centre, 1 = a corner);
* objects are binned by distance into ``num_bins`` equal bins of ``[0, max_distance]``; a bin's value is the mean
  per-object IoU of its objects (:func:`object_ious`);
* the reported slope is, by default, that of a least-squares line through the non-empty bins (robust); the paper's
  literal "average of the slopes between consecutive points" is also computed (``mean_finite_difference_slope``) and
  can be selected. With equally spaced contiguous bins it telescopes to (last − first) / (distance span), which
  depends on the two end bins only.

The binned slope mixes three things with position: *which classes* sit far from the centre (in a world or dataset
with layout priors, sky things are high up, boats low), *how much of an object is visible* (objects near a corner are
cut by the border, so they are small), and *the level* of the curve (a method at IoU 0.08 everywhere cannot fall by
more than 0.08). :func:`controlled_space_slope` separates the first two: the within-class least-squares slope of
object IoU on distance with log visible area as a second regressor, i.e. how much IoU an object loses per unit of
distance against objects of its own class and size. It is our addition, not the paper's; report it next to the
paper's score, not instead of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from torch import Tensor

from seg_eval.metrics.confusion import ConfusionLike, ConfusionMatrix, as_confusion_array

__all__ = [
    "ClassPreferenceResult",
    "ControlledSpaceSlope",
    "SpacePreference",
    "SpacePreferenceResult",
    "class_preference_score",
    "controlled_space_slope",
    "object_centroid_distances",
    "object_ious",
    "semantic_objects",
    "space_preference_score",
]

ArrayOrTensor = npt.NDArray[Any] | Tensor
SlopeMethod = Literal["least_squares", "mean_finite_difference"]


def _to_numpy(value: ArrayOrTensor) -> npt.NDArray[Any]:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


# ---------------------------------------------------------------------------------------------------------------------
# Class preference


@dataclass(frozen=True)
class ClassPreferenceResult:
    """Class-preference rectification score (higher = less bias).

    Attributes:
        score: Mean of ``per_class`` over classes with ground-truth pixels (NaN if none).
        per_class: float64 ``[C]``: ``P[c, c] − max_{j ≠ c} P[c, j]``, NaN for a class without ground truth.
        preferred_class: int64 ``[C]``: the ``j ≠ c`` that class ``c`` is most often mistaken for (``-1`` when
            nothing is mistaken or the class has no ground truth).
    """

    score: float
    per_class: npt.NDArray[np.float64]
    preferred_class: npt.NDArray[np.int64]


def class_preference_score(confusion: ConfusionLike | ConfusionMatrix) -> ClassPreferenceResult:
    """ReCLIP++'s class-preference score from a confusion matrix.

    With ``P[c, j] = n[c, j] / Σ_k n[c, k]`` the row-normalised confusion (rows ground truth),

        s_c = P[c, c] − max_{j ≠ c, j < C} P[c, j],        score = mean_{c : Σ_k n[c, k] > 0} s_c.

    ``s_c`` lies in ``[-1, 1]``: 1 when class ``c`` is always right, negative when some other class wins its pixels.
    A method that prefers one class pulls every other row's mass onto that column, lowering the score. Columns past
    ``C`` (unmatched predictions) count in the row sum but are not a "preferred class".

    Args:
        confusion: Counts ``[C, K]`` (``K >= C``), e.g. ``ConfusionMatrix.counts``.

    Returns:
        The mean score, the per-class scores and each class's most-confused-with class.
    """
    n = as_confusion_array(confusion)
    num_classes = n.shape[0]
    row_sum = n.sum(axis=1)
    present = row_sum > 0
    normalised = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.divide(n[:, :num_classes], row_sum[:, None], out=normalised, where=present[:, None])
    diagonal = np.diagonal(normalised).copy()
    off_diagonal = normalised.copy()
    np.fill_diagonal(off_diagonal, -np.inf)
    if num_classes > 1:
        preferred = off_diagonal.argmax(axis=1)
        strongest_other = np.maximum(off_diagonal.max(axis=1), 0.0)
    else:
        preferred = np.zeros(1, dtype=np.int64)
        strongest_other = np.zeros(1, dtype=np.float64)
    per_class = np.where(present, diagonal - strongest_other, np.nan)
    preferred_class = np.where(present & (strongest_other > 0), preferred, -1).astype(np.int64)
    score = float(per_class[present].mean()) if present.any() else float("nan")
    return ClassPreferenceResult(score=score, per_class=per_class, preferred_class=preferred_class)


# ---------------------------------------------------------------------------------------------------------------------
# Space preference: objects, their distances and IoUs


def _instance_masks(masks: ArrayOrTensor, name: str = "masks") -> npt.NDArray[np.bool_]:
    array = _to_numpy(masks)
    if array.ndim != 3:
        raise ValueError(f"{name} must be [N, H, W] binary masks, got shape {array.shape}")
    return array.astype(bool) if array.dtype != np.bool_ else array


def object_centroid_distances(masks: ArrayOrTensor) -> npt.NDArray[np.float64]:
    """Distance of each mask's centroid to the image centre, divided by the half-diagonal.

    With pixel ``(y, x)`` centred at ``(y + 0.5, x + 0.5)``, centroid ``(ȳ, x̄)`` the mean over the mask and image
    centre ``(H/2, W/2)``:

        d = sqrt((x̄ − W/2)² + (ȳ − H/2)²) / sqrt((W/2)² + (H/2)²)   ∈ [0, 1].

    Args:
        masks: ``[N, H, W]`` binary instance masks.

    Returns:
        float64 ``[N]``; NaN for an empty mask.
    """
    binary = _instance_masks(masks)
    _, height, width = binary.shape
    area = binary.sum(axis=(1, 2)).astype(np.float64)
    ys = np.arange(height, dtype=np.float64) + 0.5
    xs = np.arange(width, dtype=np.float64) + 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        centre_y = (binary.sum(axis=2) @ ys) / area
        centre_x = (binary.sum(axis=1) @ xs) / area
    half_diagonal = float(np.hypot(width / 2, height / 2))
    out: npt.NDArray[np.float64] = np.hypot(centre_x - width / 2, centre_y - height / 2) / half_diagonal
    return out


def object_ious(
    pred: ArrayOrTensor,
    masks: ArrayOrTensor,
    labels: ArrayOrTensor,
    *,
    ignore_mask: ArrayOrTensor | None = None,
) -> npt.NDArray[np.float64]:
    """IoU of each ground-truth object with the prediction of its class.

    For object ``o`` of class ``c`` with mask ``O``, predicted region ``P_c = {pred = c}``, the other objects of
    class ``c`` in the image ``G'`` and the ignored pixels ``I``:

        IoU_o = |O ∩ P_c| / |O ∪ (P_c \\ G' \\ I)|.

    Predicting ``c`` on another object of class ``c`` is not held against ``o``; predicting it anywhere else is.

    Args:
        pred: ``[H, W]`` predicted class ids.
        masks: ``[N, H, W]`` binary object masks.
        labels: ``[N]`` object classes.
        ignore_mask: Optional ``[H, W]`` bool, True where the ground truth is ignored.

    Returns:
        float64 ``[N]``; NaN for an empty mask.
    """
    pred_map = _to_numpy(pred)
    binary = _instance_masks(masks)
    classes = _to_numpy(labels).astype(np.int64)
    if pred_map.ndim != 2 or pred_map.shape != binary.shape[1:]:
        raise ValueError(f"pred must be [H, W] matching masks {binary.shape[1:]}, got shape {pred_map.shape}")
    if classes.shape != (binary.shape[0],):
        raise ValueError(f"labels must be [N] with N = {binary.shape[0]} (one per mask), got shape {classes.shape}")
    ignored = np.zeros(pred_map.shape, dtype=bool) if ignore_mask is None else _to_numpy(ignore_mask).astype(bool)
    if ignored.shape != pred_map.shape:
        raise ValueError(f"ignore_mask must be {pred_map.shape}, got shape {ignored.shape}")
    out = np.full(binary.shape[0], np.nan, dtype=np.float64)
    for cls in np.unique(classes):
        members = np.flatnonzero(classes == cls)
        predicted = pred_map == cls
        coverage = binary[members].sum(axis=0)  # how many objects of this class cover each pixel
        for index in members:
            own = binary[index]
            others = (coverage - own) > 0
            false_positive_region = predicted & ~others & ~ignored
            union = np.count_nonzero(own | false_positive_region)
            if union:
                out[index] = np.count_nonzero(own & predicted) / union
    return out


def semantic_objects(
    target: ArrayOrTensor,
    *,
    ignore_index: int | None = 255,
    exclude_classes: Sequence[int] = (),
    connectivity: Literal[1, 2] = 1,
    min_area: int = 1,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """Objects of a semantic label map: the connected components of each class.

    For datasets without instance labels. Touching objects of one class merge into one component.

    Args:
        target: ``[H, W]`` class ids.
        ignore_index: Value that is not a class.
        exclude_classes: Classes that are not objects (e.g. background 0).
        connectivity: 1 for 4-neighbours, 2 for 8-neighbours.
        min_area: Drop components smaller than this many pixels.

    Returns:
        Masks ``[N, H, W]`` bool and labels ``[N]`` int64, ordered by class then component.
    """
    label_map = _to_numpy(target)
    if label_map.ndim != 2:
        raise ValueError(f"target must be an [H, W] label map, got shape {label_map.shape}")
    structure = ndimage.generate_binary_structure(2, connectivity)
    skip = set(exclude_classes) | ({ignore_index} if ignore_index is not None else set())
    masks: list[npt.NDArray[np.bool_]] = []
    labels: list[int] = []
    for cls in np.unique(label_map):
        if int(cls) in skip:
            continue
        components, count = ndimage.label(label_map == cls, structure=structure)
        for component in range(1, count + 1):
            mask = components == component
            if np.count_nonzero(mask) >= min_area:
                masks.append(mask)
                labels.append(int(cls))
    if not masks:
        return np.zeros((0, *label_map.shape), dtype=bool), np.zeros(0, dtype=np.int64)
    return np.stack(masks), np.asarray(labels, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------------------
# Space preference: the score


@dataclass(frozen=True)
class SpacePreferenceResult:
    """Space-preference rectification score: slope of object IoU against centroid distance (higher = less bias).

    Attributes:
        score: The selected slope (``least_squares_slope`` by default); NaN with fewer than two usable bins.
        least_squares_slope: Slope of the least-squares line through ``(bin_centres, bin_iou)`` over usable bins.
        mean_finite_difference_slope: Mean of ``Δ bin_iou / Δ bin_centre`` between consecutive usable bins (the
            paper's wording).
        bin_edges: float64 ``[B + 1]`` distance bin edges.
        bin_centres: float64 ``[B]``.
        bin_iou: float64 ``[B]``: mean object IoU per bin, NaN for a bin with too few objects.
        bin_counts: int64 ``[B]``: objects per bin.
        controlled: :func:`controlled_space_slope` of the same objects when their classes and areas were given
            (``None`` otherwise).
    """

    score: float
    least_squares_slope: float
    mean_finite_difference_slope: float
    bin_edges: npt.NDArray[np.float64]
    bin_centres: npt.NDArray[np.float64]
    bin_iou: npt.NDArray[np.float64]
    bin_counts: npt.NDArray[np.int64]
    controlled: ControlledSpaceSlope | None = None


@dataclass(frozen=True)
class ControlledSpaceSlope:
    """Within-class slope of object IoU on centroid distance, holding log visible area fixed.

    Attributes:
        slope: IoU per unit of half-diagonal (0: no position effect among objects of one class and size; below 0:
            objects lose IoU off-centre). NaN when fewer than two objects vary in distance within a class.
        area_coefficient: IoU per unit of log area (how much larger objects of a class are segmented better).
        num_objects: Objects in the fit (classes with a single object drop out).
        num_classes: Classes with at least two objects.
    """

    slope: float
    area_coefficient: float
    num_objects: int
    num_classes: int


def controlled_space_slope(
    distances: npt.ArrayLike, ious: npt.ArrayLike, labels: npt.ArrayLike, areas: npt.ArrayLike
) -> ControlledSpaceSlope:
    """How much IoU an object loses per unit of distance from the centre, against objects of its class and size.

    Every variable is centred within its class (class fixed effects), then ::

        iou_c = slope · distance_c + area_coefficient · log(area)_c      (least squares, no intercept)

    So neither a class that is both hard and usually off-centre (planes high in the sky) nor objects that are small
    because the border cuts them count as a space preference. Not in the paper; see the module docstring.

    Args:
        distances: ``[N]`` normalised centroid distances (:func:`object_centroid_distances`).
        ious: ``[N]`` per-object IoUs; NaN entries are skipped.
        labels: ``[N]`` object classes.
        areas: ``[N]`` visible object areas in pixels (> 0).

    Returns:
        The slope, the area coefficient and the sample it was fitted on.
    """
    distance_array = np.asarray(distances, dtype=np.float64).reshape(-1)
    iou_array = np.asarray(ious, dtype=np.float64).reshape(-1)
    label_array = np.asarray(labels).reshape(-1)
    area_array = np.asarray(areas, dtype=np.float64).reshape(-1)
    sizes = {distance_array.size, iou_array.size, label_array.size, area_array.size}
    if len(sizes) != 1:
        raise ValueError(
            f"distances, ious, labels and areas must have one entry per object, got {distance_array.size}, "
            f"{iou_array.size}, {label_array.size} and {area_array.size}"
        )
    keep = np.isfinite(distance_array) & np.isfinite(iou_array)
    if np.any(area_array[keep] <= 0):
        raise ValueError("areas must be > 0 (the visible pixels of each object); drop empty objects first")
    distance_array, iou_array = distance_array[keep], iou_array[keep]
    label_array, log_area = label_array[keep], np.log(area_array[keep])
    columns = [distance_array.copy(), log_area.copy(), iou_array.copy()]
    used = np.zeros(distance_array.size, dtype=bool)
    classes = 0
    for cls in np.unique(label_array):
        members = label_array == cls
        if np.count_nonzero(members) < 2:
            continue
        classes += 1
        used |= members
        for column in columns:
            column[members] -= column[members].mean()
    design = np.stack([columns[0][used], columns[1][used]], axis=1)
    target = columns[2][used]
    nan = float("nan")
    if not used.any() or not np.any(np.abs(design[:, 0]) > 1e-12):
        return ControlledSpaceSlope(nan, nan, int(used.sum()), classes)
    if not np.any(np.abs(design[:, 1]) > 1e-12):  # every object of a class equally large: distance alone
        slope = float(design[:, 0] @ target / (design[:, 0] @ design[:, 0]))
        return ControlledSpaceSlope(slope, 0.0, int(used.sum()), classes)
    coefficients = np.linalg.lstsq(design, target, rcond=None)[0]
    return ControlledSpaceSlope(float(coefficients[0]), float(coefficients[1]), int(used.sum()), classes)


def space_preference_score(
    distances: npt.ArrayLike,
    ious: npt.ArrayLike,
    *,
    num_bins: int = 10,
    max_distance: float = 1.0,
    min_objects_per_bin: int = 1,
    slope: SlopeMethod = "least_squares",
    labels: npt.ArrayLike | None = None,
    areas: npt.ArrayLike | None = None,
) -> SpacePreferenceResult:
    """ReCLIP++'s space-preference score: how fast object IoU falls with distance from the image centre.

    Objects are binned by normalised centroid distance into ``num_bins`` equal bins of ``[0, max_distance]``
    (distances past ``max_distance`` go to the last bin). With ``x_b`` the bin centres and ``y_b`` the mean IoU of
    the bins holding at least ``min_objects_per_bin`` objects:

        least squares:           slope = Σ_b (x_b − x̄)(y_b − ȳ) / Σ_b (x_b − x̄)²
        mean finite difference:  slope = mean_b (y_{b+1} − y_b) / (x_{b+1} − x_b)   (consecutive usable bins)

    A method that is as good at the border as at the centre scores about 0; one that fails off-centre scores below
    0. Units: IoU per unit of half-diagonal.

    Args:
        distances: ``[N]`` normalised centroid distances (:func:`object_centroid_distances`).
        ious: ``[N]`` per-object IoUs (:func:`object_ious`); NaN entries are skipped.
        num_bins: Number of distance bins ``B``.
        max_distance: Upper end of the binned range.
        min_objects_per_bin: Bins with fewer objects are left out of the fit.
        slope: Which slope becomes ``score``: ``"least_squares"`` or ``"mean_finite_difference"``.
        labels: Optional ``[N]`` object classes; with ``areas``, also fit :func:`controlled_space_slope`.
        areas: Optional ``[N]`` visible object areas in pixels.

    Returns:
        The score, both slopes, the binned curve and (with labels and areas) the controlled slope.
    """
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2 to fit a slope, got {num_bins}")
    if not max_distance > 0:
        raise ValueError(f"max_distance must be > 0, got {max_distance}")
    if slope not in ("least_squares", "mean_finite_difference"):
        raise ValueError(f"slope must be 'least_squares' or 'mean_finite_difference', got {slope!r}")
    distance_array = np.asarray(distances, dtype=np.float64).reshape(-1)
    iou_array = np.asarray(ious, dtype=np.float64).reshape(-1)
    if distance_array.shape != iou_array.shape:
        raise ValueError(f"distances has {distance_array.size} entries but ious has {iou_array.size}: pass one each")
    if (labels is None) != (areas is None):
        raise ValueError("labels and areas go together: pass both for the controlled slope, or neither")
    controlled = None if labels is None or areas is None else controlled_space_slope(distances, ious, labels, areas)
    keep = np.isfinite(distance_array) & np.isfinite(iou_array)
    distance_array, iou_array = distance_array[keep], iou_array[keep]

    edges = np.linspace(0.0, max_distance, num_bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    bins = np.clip(np.digitize(distance_array, edges[1:-1]), 0, num_bins - 1)
    counts = np.bincount(bins, minlength=num_bins).astype(np.int64)
    sums = np.bincount(bins, weights=iou_array, minlength=num_bins)
    usable = counts >= max(min_objects_per_bin, 1)
    bin_iou = np.full(num_bins, np.nan, dtype=np.float64)
    bin_iou[usable] = sums[usable] / counts[usable]

    x, y = centres[usable], bin_iou[usable]
    if x.size >= 2:
        x_centred = x - x.mean()
        least_squares = float(np.sum(x_centred * (y - y.mean())) / np.sum(x_centred**2))
        finite_difference = float(np.mean(np.diff(y) / np.diff(x)))
    else:
        least_squares = finite_difference = float("nan")
    return SpacePreferenceResult(
        score=least_squares if slope == "least_squares" else finite_difference,
        least_squares_slope=least_squares,
        mean_finite_difference_slope=finite_difference,
        bin_edges=edges,
        bin_centres=centres,
        bin_iou=bin_iou,
        bin_counts=counts,
        controlled=controlled,
    )


class SpacePreference:
    """Streaming collector of (centroid distance, IoU) per object, scored by :func:`space_preference_score`.

    Keeps four numbers per object (distance, IoU, class, visible area), so a dataset streams through in little
    memory; :meth:`compute` also fits :func:`controlled_space_slope`.

    Example:
        >>> import numpy as np
        >>> target = np.zeros((8, 8), dtype=np.int64)
        >>> target[3:5, 3:5] = 1
        >>> collector = SpacePreference()
        >>> collector.update_from_semantic(target, target, exclude_classes=[0])
        >>> collector.num_objects
        1
    """

    def __init__(self) -> None:
        self._distances: list[npt.NDArray[np.float64]] = []
        self._ious: list[npt.NDArray[np.float64]] = []
        self._labels: list[npt.NDArray[np.int64]] = []
        self._areas: list[npt.NDArray[np.int64]] = []

    @property
    def num_objects(self) -> int:
        """Objects collected so far."""
        return int(sum(d.size for d in self._distances))

    @property
    def distances(self) -> npt.NDArray[np.float64]:
        """All collected distances ``[N]``."""
        return np.concatenate(self._distances) if self._distances else np.zeros(0)

    @property
    def ious(self) -> npt.NDArray[np.float64]:
        """All collected IoUs ``[N]``."""
        return np.concatenate(self._ious) if self._ious else np.zeros(0)

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        """All collected object classes ``[N]``."""
        return np.concatenate(self._labels) if self._labels else np.zeros(0, dtype=np.int64)

    @property
    def areas(self) -> npt.NDArray[np.int64]:
        """All collected object areas in pixels ``[N]``."""
        return np.concatenate(self._areas) if self._areas else np.zeros(0, dtype=np.int64)

    def reset(self) -> None:
        """Forget every object."""
        for store in (self._distances, self._ious, self._labels, self._areas):
            store.clear()

    def update(
        self,
        pred: ArrayOrTensor,
        masks: ArrayOrTensor,
        labels: ArrayOrTensor,
        *,
        ignore_mask: ArrayOrTensor | None = None,
    ) -> None:
        """Add the objects of one image given instance ground truth.

        Args:
            pred: ``[H, W]`` predicted class ids.
            masks: ``[N, H, W]`` binary object masks.
            labels: ``[N]`` object classes.
            ignore_mask: Optional ``[H, W]``, True where the ground truth is ignored.
        """
        ious = object_ious(pred, masks, labels, ignore_mask=ignore_mask)
        binary = _instance_masks(masks)
        self._distances.append(object_centroid_distances(binary))
        self._ious.append(ious)
        self._labels.append(_to_numpy(labels).astype(np.int64).reshape(-1))
        self._areas.append(binary.sum(axis=(1, 2)).astype(np.int64))

    def update_from_semantic(
        self,
        pred: ArrayOrTensor,
        target: ArrayOrTensor,
        *,
        ignore_index: int | None = 255,
        exclude_classes: Sequence[int] = (),
        connectivity: Literal[1, 2] = 1,
        min_area: int = 1,
    ) -> None:
        """Add the objects of one image given only a semantic label map (objects = connected components).

        Args:
            pred: ``[H, W]`` predicted class ids.
            target: ``[H, W]`` ground-truth class ids.
            ignore_index: Ground-truth value to ignore.
            exclude_classes: Classes that are not objects (e.g. background).
            connectivity: 1 for 4-neighbours, 2 for 8-neighbours.
            min_area: Smallest object kept, in pixels.
        """
        label_map = _to_numpy(target)
        masks, labels = semantic_objects(
            label_map,
            ignore_index=ignore_index,
            exclude_classes=exclude_classes,
            connectivity=connectivity,
            min_area=min_area,
        )
        ignore_mask = None if ignore_index is None else label_map == ignore_index
        self.update(pred, masks, labels, ignore_mask=ignore_mask)

    def merge(self, other: SpacePreference) -> SpacePreference:
        """Append ``other``'s objects (in place) and return ``self``."""
        self._distances.extend(other._distances)
        self._ious.extend(other._ious)
        self._labels.extend(other._labels)
        self._areas.extend(other._areas)
        return self

    def compute(
        self,
        *,
        num_bins: int = 10,
        max_distance: float = 1.0,
        min_objects_per_bin: int = 1,
        slope: SlopeMethod = "least_squares",
    ) -> SpacePreferenceResult:
        """Score everything collected (arguments as in :func:`space_preference_score`), with the controlled slope."""
        return space_preference_score(
            self.distances,
            self.ious,
            num_bins=num_bins,
            max_distance=max_distance,
            min_objects_per_bin=min_objects_per_bin,
            slope=slope,
            labels=self.labels,
            areas=self.areas,
        )
