"""Segmentation metrics: streaming confusion matrices, Hungarian-matched scores, COCO mask AP, ReCLIP++'s bias scores.

* :class:`ConfusionMatrix` and the functions :func:`iou_per_class`, :func:`mean_iou`, :func:`pixel_accuracy`,
  :func:`mean_accuracy`, :func:`frequency_weighted_iou`: supervised semantic segmentation.
* :class:`HungarianMatchedIoU` / :func:`hungarian_match`: cluster outputs (unsupervised protocol).
* :class:`MaskAP` / :func:`mask_ap`: instance masks through pycocotools.
* :func:`class_preference_score`, :func:`space_preference_score`, :class:`SpacePreference`: bias scores;
  :func:`controlled_space_slope`: the space preference within class and size.
* :class:`SegmentationMetrics`: the typed result and its ``results.json`` form.

Formulas and the absent-class convention: ``docs/metrics.md``.
"""

from seg_eval.metrics.bias import (
    ClassPreferenceResult,
    ControlledSpaceSlope,
    SpacePreference,
    SpacePreferenceResult,
    class_preference_score,
    controlled_space_slope,
    object_centroid_distances,
    object_ious,
    semantic_objects,
    space_preference_score,
)
from seg_eval.metrics.confusion import (
    ConfusionMatrix,
    accuracy_per_class,
    as_confusion_array,
    frequency_weighted_iou,
    iou_per_class,
    mean_accuracy,
    mean_iou,
    pixel_accuracy,
    segmentation_metrics,
)
from seg_eval.metrics.hungarian import HungarianMatch, HungarianMatchedIoU, hungarian_match
from seg_eval.metrics.mask_ap import InstancePredictions, InstanceTargets, MaskAP, MaskAPResult, mask_ap
from seg_eval.metrics.results import SegmentationMetrics

__all__ = [
    "ClassPreferenceResult",
    "ConfusionMatrix",
    "ControlledSpaceSlope",
    "HungarianMatch",
    "HungarianMatchedIoU",
    "InstancePredictions",
    "InstanceTargets",
    "MaskAP",
    "MaskAPResult",
    "SegmentationMetrics",
    "SpacePreference",
    "SpacePreferenceResult",
    "accuracy_per_class",
    "as_confusion_array",
    "class_preference_score",
    "controlled_space_slope",
    "frequency_weighted_iou",
    "hungarian_match",
    "iou_per_class",
    "mask_ap",
    "mean_accuracy",
    "mean_iou",
    "object_centroid_distances",
    "object_ious",
    "pixel_accuracy",
    "segmentation_metrics",
    "semantic_objects",
    "space_preference_score",
]
