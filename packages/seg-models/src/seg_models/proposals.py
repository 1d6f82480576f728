"""Instance proposals from a semantic segmentation: connected components per class.

The instance baseline of ZUTIS (Shin, Albanie & Xie, CVPRW 2023, Sec. 4.3, Table 3: "we evaluate MaskCLIP for
instance segmentation by treating its semantic segmentation masks for an image as mask proposals"): every
connected component of every non-background class of a semantic label map is one instance, scored by the mean
probability of its class inside it. :func:`semantic_instances` turns any segmenter's probabilities into
:class:`seg_core.InstancePredictions` this way, and :class:`ComponentInstances` wraps a semantic-only segmenter
(MaskCLIP) so that its outputs carry these instances and the evaluator reports its mask AP.

:func:`connected_components` is pure torch (no scipy/numpy): a Shiloach-Vishkin-style label propagation on the
pixel grid. Every pixel points to a pixel of its component (initially itself, by raster index); each round hooks
the pointed-to pixel onto the smallest label among the pixel's neighbours and then shortcuts the pointers
(``L <- L[L]``) until they stop changing; at the fixed point every component points to its first pixel in raster
order. The number of rounds grows with the logarithm of the component size for compact shapes (at most
linearly for long snakes).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor

from seg_core import ConceptSet, InstancePredictions, SegmentationOutput, Segmenter

__all__ = ["BACKGROUND_LABEL_NAME", "ComponentInstances", "connected_components", "semantic_instances"]

BACKGROUND_LABEL_NAME = "background"
"""The label name that yields no instances in :class:`ComponentInstances`."""


def _neighbour_minimum(labels: Tensor, mask: Tensor, connectivity: Literal[4, 8], sentinel: int) -> Tensor:
    """Per pixel, the minimum of its own label and its in-mask neighbours' (``[H, W]``)."""
    height, width = int(labels.shape[0]), int(labels.shape[1])
    values = torch.where(mask, labels, torch.full_like(labels, sentinel))
    padded = torch.full((height + 2, width + 2), sentinel, dtype=labels.dtype, device=labels.device)
    padded[1:-1, 1:-1] = values
    if connectivity == 4:
        offsets = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    else:
        offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    best = values
    for dy, dx in offsets:
        best = torch.minimum(best, padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width])
    return best


def connected_components(mask: Tensor, connectivity: Literal[4, 8] = 8) -> tuple[Tensor, int]:
    """Label the connected components of a binary mask.

    Args:
        mask: ``[H, W]`` bool.
        connectivity: 4 (edge neighbours) or 8 (edge and corner neighbours).

    Returns:
        ``(labels, n)``: ``[H, W]`` int64 with 0 outside the mask and components numbered ``1..n`` in raster order
        of their first pixel (top to bottom, left to right), and ``n``.
    """
    if mask.ndim != 2 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be [H, W] bool, got shape {tuple(mask.shape)} and dtype {mask.dtype}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    height, width = int(mask.shape[0]), int(mask.shape[1])
    pixels = height * width
    if pixels == 0 or not bool(mask.any()):
        return torch.zeros(height, width, dtype=torch.long, device=mask.device), 0
    flat_mask = mask.flatten()
    pointers = torch.arange(pixels, dtype=torch.long, device=mask.device)
    while True:
        previous = pointers
        neighbours = _neighbour_minimum(pointers.reshape(height, width), mask, connectivity, pixels).flatten()
        neighbours = torch.where(flat_mask, neighbours, pointers)
        # Hook: the pixel each pixel points to takes the smallest neighbour label seen by any pixel pointing to it.
        pointers = pointers.scatter_reduce(0, pointers, neighbours, reduce="amin", include_self=True)
        pointers = torch.minimum(pointers, neighbours)
        # Shortcut until every pixel points to a root (a pixel pointing to itself).
        while True:
            jumped = pointers[pointers]
            if torch.equal(jumped, pointers):
                break
            pointers = jumped
        if torch.equal(pointers, previous):
            break
    roots, inverse = torch.unique(pointers[flat_mask], sorted=True, return_inverse=True)
    labels = torch.zeros(pixels, dtype=torch.long, device=mask.device)
    labels[flat_mask] = inverse + 1
    return labels.reshape(height, width), int(roots.numel())


def semantic_instances(
    probabilities: Tensor,
    *,
    labels: Tensor | None = None,
    background_label: int | None = 0,
    min_area: int = 1,
    connectivity: Literal[4, 8] = 8,
) -> InstancePredictions:
    """Connected components of a semantic segmentation as instances (ZUTIS's MaskCLIP instance baseline).

    Args:
        probabilities: ``[C, H, W]`` class probabilities of one image.
        labels: ``[H, W]`` int label map to split (e.g. a thresholded one); ``None``: argmax of ``probabilities``.
        background_label: Class that yields no instances (label 0 "background"); ``None``: every class does.
        min_area: Components with fewer pixels are dropped.
        connectivity: 4 or 8 (see :func:`connected_components`).

    Returns:
        One instance per component of every non-background class present, ordered by class then by the raster
        position of the component's first pixel; score = mean probability of the class inside the component.
    """
    if probabilities.ndim != 3:
        raise ValueError(f"probabilities must be [C, H, W], got shape {tuple(probabilities.shape)}")
    classes, height, width = (int(v) for v in probabilities.shape)
    if labels is None:
        labels = probabilities.argmax(dim=0)
    elif tuple(labels.shape) != (height, width):
        raise ValueError(f"labels must be [H, W] = {(height, width)} like the probabilities, got {tuple(labels.shape)}")
    if min_area < 1:
        raise ValueError(f"min_area must be >= 1 pixel, got {min_area}; use 1 to keep every component")
    labels = labels.to(probabilities.device).long()
    masks: list[Tensor] = []
    scores: list[Tensor] = []
    instance_labels: list[int] = []
    for label in torch.unique(labels).tolist():
        if label == background_label or not 0 <= label < classes:
            continue
        components, count = connected_components(labels == label, connectivity)
        for component in range(1, count + 1):
            region = components == component
            area = int(region.sum())
            if area < min_area:
                continue
            masks.append(region)
            scores.append(probabilities[label][region].float().mean())
            instance_labels.append(label)
    if not masks:
        empty = torch.zeros(0, height, width, dtype=torch.bool, device=probabilities.device)
        return InstancePredictions(
            masks=empty,
            scores=torch.zeros(0, device=probabilities.device),
            labels=torch.zeros(0, dtype=torch.long, device=probabilities.device),
        )
    return InstancePredictions(
        masks=torch.stack(masks),
        scores=torch.stack(scores),
        labels=torch.tensor(instance_labels, dtype=torch.long, device=probabilities.device),
    )


class ComponentInstances:
    """A semantic segmenter whose outputs also carry :func:`semantic_instances` (ZUTIS's MaskCLIP baseline).

    Every connected component of every label but ``"background"`` (when the concept set has that label) becomes one
    instance, scored by its class's mean probability inside it; the semantic output is unchanged.

    Args:
        segmenter: Any :class:`seg_core.Segmenter` (e.g. :class:`seg_models.maskclip.MaskCLIPSegmenter`).
        min_area: Components with fewer pixels are dropped.
        connectivity: 4 or 8.
    """

    def __init__(self, segmenter: Segmenter, *, min_area: int = 1, connectivity: Literal[4, 8] = 8) -> None:
        if min_area < 1:
            raise ValueError(f"min_area must be >= 1 pixel, got {min_area}; use 1 to keep every component")
        self.segmenter, self.min_area, self.connectivity = segmenter, min_area, connectivity

    def segment(self, images: Tensor, concepts: ConceptSet) -> SegmentationOutput:
        """The wrapped segmenter's output with ``instances`` filled from its label map."""
        output = self.segmenter.segment(images, concepts)
        names = output.label_names
        background = names.index(BACKGROUND_LABEL_NAME) if BACKGROUND_LABEL_NAME in names else None
        probabilities, labels = output.probabilities, output.labels
        instances = tuple(
            semantic_instances(
                probabilities[i],
                labels=labels[i],
                background_label=background,
                min_area=self.min_area,
                connectivity=self.connectivity,
            )
            for i in range(probabilities.shape[0])
        )
        return replace(output, instances=instances)
