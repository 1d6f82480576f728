"""Inference helpers shared by every method: resize rules, whole-image and sliding-window inference, resizing
logits back to the original size, and turning similarity maps into a :class:`seg_core.SegmentationOutput` under a
concept set's background policy.

Sliding-window inference follows the mmsegmentation convention the field's numbers were produced with (MMSeg
``EncoderDecoder.slide_inference``): windows of ``crop`` pixels every ``stride`` pixels, the last window of a row
or column shifted back to end at the border, window logits resized to the window and summed, divided by a count
map of how many windows saw each pixel. An image smaller than the crop is padded (zeros in normalised space,
i.e. the mean colour) to a full window and the padding cut from the window's logits.

:class:`TestTimeAugmentation` wraps any segmenter to average its probabilities over scales and flips.

A *logits function* maps normalised images ``[B, 3, h, w]`` to ``[B, C, h', w']`` scores at any resolution
(e.g. one cell per ViT patch); the helpers resize its output to the window or image they fed it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from seg_core import (
    ConceptSet,
    MaskRefiner,
    ProtocolPreset,
    ResizeRule,
    SegmentationOutput,
    Segmenter,
    SlidingWindow,
)

__all__ = [
    "LogitsFn",
    "TestTimeAugmentation",
    "center_crop_box",
    "check_pixel_images",
    "infer",
    "normalize_images",
    "pad_to_multiple",
    "refine_output",
    "resize_images",
    "resize_logits",
    "resized_shape",
    "segmentation_from_similarities",
    "sliding_window_counts",
    "sliding_window_logits",
    "whole_image_logits",
]

LogitsFn = Callable[[Tensor], Tensor]
"""Normalised images ``[B, 3, h, w]`` -> scores ``[B, C, h', w']`` at any resolution."""

_PIXEL_RANGE_SLACK = 1e-3

# ---------------------------------------------------------------------------------------------------------------
# Resizing
# ---------------------------------------------------------------------------------------------------------------


def resized_shape(height: int, width: int, rule: ResizeRule) -> tuple[int, int]:
    """The ``(height, width)`` an image gets under ``rule`` before any centre crop (aspect ratio kept).

    The short side becomes ``rule.short_side``; if the long side would then exceed ``rule.max_long_side`` the
    long side becomes ``max_long_side`` instead. Sides are rounded to the nearest integer (mmcv ``rescale``).
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {(height, width)}")
    if rule.short_side is None and rule.max_long_side is None:
        return height, width
    scale = rule.short_side / min(height, width) if rule.short_side is not None else 1.0
    if rule.max_long_side is not None and max(height, width) * scale > rule.max_long_side:
        scale = rule.max_long_side / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def center_crop_box(height: int, width: int, rule: ResizeRule) -> tuple[int, int, int, int] | None:
    """The region of the original image a centre-cropping rule keeps, as ``(top, left, crop_height, crop_width)``.

    :func:`infer` returns logits covering exactly this region when ``rule.center_crop`` is set (ReCo's protocol);
    evaluators crop the ground truth with the same box. ``None`` when the rule does not crop.
    """
    if rule.center_crop is None:
        return None
    resized_height, resized_width = resized_shape(height, width, rule)
    crop = rule.center_crop
    if crop > min(resized_height, resized_width):
        raise ValueError(
            f"center_crop {crop} is larger than the resized image {(resized_height, resized_width)}; "
            "set short_side >= center_crop"
        )
    scale_y, scale_x = height / resized_height, width / resized_width
    top = round((resized_height - crop) // 2 * scale_y)
    left = round((resized_width - crop) // 2 * scale_x)
    return top, left, min(height - top, round(crop * scale_y)), min(width - left, round(crop * scale_x))


def resize_images(images: Tensor, rule: ResizeRule) -> Tensor:
    """Resize (and centre-crop) ``[B, 3, H, W]`` images by ``rule``; returns ``[B, 3, h, w]``."""
    height, width = int(images.shape[-2]), int(images.shape[-1])
    size = resized_shape(height, width, rule)
    if size != (height, width):
        images = _interpolate(images, size, rule.interpolation)
    if rule.center_crop is not None:
        crop = rule.center_crop
        if crop > min(size):
            raise ValueError(f"center_crop {crop} is larger than the resized image {size}; raise short_side")
        top, left = (size[0] - crop) // 2, (size[1] - crop) // 2
        images = images[..., top : top + crop, left : left + crop]
    return images


def resize_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly resize ``[B, C, h, w]`` logits to ``size`` (``align_corners=False``); no-op at that size."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _interpolate(images: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    if mode == "nearest":
        return F.interpolate(images, size=size, mode="nearest")
    return F.interpolate(images, size=size, mode=mode, align_corners=False)


def normalize_images(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """``(images - mean) / std`` per channel for ``[B, 3, H, W]`` pixels in [0, 1]."""
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).reshape(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).reshape(1, -1, 1, 1)
    return (images - mean_t) / std_t


def pad_to_multiple(images: Tensor, multiple: tuple[int, int]) -> Tensor:
    """Zero-pad ``[B, C, H, W]`` at the bottom and right so both sides are multiples of ``multiple``."""
    height, width = int(images.shape[-2]), int(images.shape[-1])
    pad_height = -height % multiple[0]
    pad_width = -width % multiple[1]
    if pad_height == 0 and pad_width == 0:
        return images
    return F.pad(images, (0, pad_width, 0, pad_height))


# ---------------------------------------------------------------------------------------------------------------
# Whole-image and sliding-window inference
# ---------------------------------------------------------------------------------------------------------------


def whole_image_logits(logits_fn: LogitsFn, images: Tensor) -> Tensor:
    """One pass over the whole image; returns ``[B, C, H, W]`` at the image's size."""
    return resize_logits(logits_fn(images), (int(images.shape[-2]), int(images.shape[-1])))


def _window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Window starts along one side (mmseg: the last window is moved back to end at the border)."""
    count = max(size - crop + stride - 1, 0) // stride + 1
    return sorted({max(min(index * stride + crop, size) - crop, 0) for index in range(count)})


def sliding_window_counts(height: int, width: int, window: SlidingWindow) -> Tensor:
    """``[H, W]`` how many windows cover each pixel (float32; every entry is at least 1)."""
    counts = torch.zeros(height, width)
    for top in _window_starts(height, window.crop, window.stride):
        for left in _window_starts(width, window.crop, window.stride):
            counts[top : top + window.crop, left : left + window.crop] += 1
    return counts


def sliding_window_logits(logits_fn: LogitsFn, images: Tensor, window: SlidingWindow) -> Tensor:
    """Average of the logits of overlapping ``window.crop`` squares every ``window.stride`` pixels.

    Args:
        logits_fn: Normalised images ``[B, 3, crop, crop]`` -> ``[B, C, h', w']``.
        images: ``[B, 3, H, W]`` normalised images (any size; smaller than the crop is padded).
        window: Crop and stride.

    Returns:
        ``[B, C, H, W]``.
    """
    height, width = int(images.shape[-2]), int(images.shape[-1])
    crop = window.crop
    total: Tensor | None = None
    counts = torch.zeros(1, 1, height, width, device=images.device)
    for top in _window_starts(height, crop, window.stride):
        for left in _window_starts(width, crop, window.stride):
            patch = images[..., top : top + crop, left : left + crop]
            valid_height, valid_width = int(patch.shape[-2]), int(patch.shape[-1])
            if (valid_height, valid_width) != (crop, crop):
                patch = F.pad(patch, (0, crop - valid_width, 0, crop - valid_height))
            window_logits = resize_logits(logits_fn(patch), (crop, crop))[..., :valid_height, :valid_width]
            if total is None:
                total = images.new_zeros(images.shape[0], window_logits.shape[1], height, width)
                total = total.to(window_logits.dtype)
            total[..., top : top + valid_height, left : left + valid_width] += window_logits
            counts[..., top : top + valid_height, left : left + valid_width] += 1
    assert total is not None  # at least one window always exists
    return total / counts.to(total.dtype)


def infer(logits_fn: LogitsFn, images: Tensor, preset: ProtocolPreset) -> Tensor:
    """The one inference entry point of every method: resize, whole or sliding-window inference, resize back.

    Args:
        logits_fn: Normalised images -> ``[B, C, h', w']`` scores (see :data:`LogitsFn`).
        images: ``[B, 3, H, W]`` normalised images at their original size.
        preset: Supplies ``resize``, ``mode`` and ``window``.

    Returns:
        ``[B, C, H, W]`` logits at the original size; with a centre-cropping resize rule, logits covering
        :func:`center_crop_box` of the original instead.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
    height, width = int(images.shape[-2]), int(images.shape[-1])
    prepared = resize_images(images, preset.resize)
    if preset.mode == "slide":
        if preset.window is None:  # the preset validator forbids this; keep mypy and readers sure
            raise ValueError(f"preset {preset.name!r} has mode 'slide' but no window")
        logits = sliding_window_logits(logits_fn, prepared, preset.window)
    else:
        logits = whole_image_logits(logits_fn, prepared)
    box = center_crop_box(height, width, preset.resize)
    output_size = (height, width) if box is None else (box[2], box[3])
    return resize_logits(logits, output_size)


# ---------------------------------------------------------------------------------------------------------------
# Background policies
# ---------------------------------------------------------------------------------------------------------------


def segmentation_from_similarities(
    similarities: Tensor, concepts: ConceptSet, *, logit_scale: float | None = None
) -> SegmentationOutput:
    """Turn per-label similarity maps into a :class:`SegmentationOutput` under ``concepts.background``.

    Channels are labels in ``concepts.label_names`` order, as :meth:`seg_models.clip.ConceptEmbeddings.similarities`
    returns them:

    - ``NoBackground``: one channel per concept; ``logits = scale * similarities``.
    - ``BackgroundClass``: background (label 0, the maximum over its names) first, then the concepts; same logits.
    - ``BackgroundThreshold``: one channel per concept (no background channel given); a pixel whose best score is
      below ``threshold`` becomes label 0. The score is the softmax probability of ``scale * similarities`` over
      the concepts, or the raw similarity. The background logit channel is built so that its argmax agrees with
      the decision: ``log(threshold) + logsumexp(concept logits)`` for probabilities, ``scale * threshold`` for
      similarities; the decided ``label_map`` is set too.

    Args:
        similarities: ``[B, T, H, W]`` per-label scores (usually cosine similarities).
        concepts: The concept set (label order and background policy).
        logit_scale: Multiplies similarities into logits; ``None`` means 1 (MaskCLIP's plain cosine).

    Returns:
        Logits ``[B, len(concepts.label_names), H, W]``.
    """
    if similarities.ndim != 4:
        raise ValueError(f"similarities must be [B, T, H, W], got shape {tuple(similarities.shape)}")
    scale = 1.0 if logit_scale is None else float(logit_scale)
    if scale <= 0:
        raise ValueError(f"logit_scale must be positive, got {logit_scale}")
    background = concepts.background
    expected = len(concepts.names) if background.kind == "threshold" else concepts.num_labels
    if similarities.shape[1] != expected:
        raise ValueError(
            f"similarities have {similarities.shape[1]} channels but the concept set needs {expected} "
            f"(labels {list(concepts.label_names)}, background policy {background.kind!r})"
        )
    logits = similarities * scale
    if background.kind != "threshold":
        return SegmentationOutput(logits=logits, label_names=concepts.label_names)
    best_label = logits.argmax(dim=1) + 1
    if background.score == "probability":
        best_score = logits.softmax(dim=1).amax(dim=1)
        log_threshold = math.log(background.threshold) if background.threshold > 0 else -math.inf
        background_logit = torch.logsumexp(logits, dim=1, keepdim=True) + log_threshold
        if math.isinf(log_threshold):
            background_logit = torch.full_like(background_logit, torch.finfo(logits.dtype).min)
    else:
        best_score = similarities.amax(dim=1)
        background_logit = torch.full_like(logits[:, :1], scale * background.threshold)
    label_map = torch.where(best_score < background.threshold, torch.zeros_like(best_label), best_label)
    return SegmentationOutput(
        logits=torch.cat([background_logit, logits], dim=1),
        label_names=concepts.label_names,
        label_map=label_map,
    )


# ---------------------------------------------------------------------------------------------------------------
# Segmenter plumbing shared by every method
# ---------------------------------------------------------------------------------------------------------------


def check_pixel_images(images: Tensor) -> None:
    """Refuse anything but ``[B, 3, H, W]`` RGB pixels in [0, 1] (segmenters normalise with their preset)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W] RGB in [0, 1], got shape {tuple(images.shape)}")
    low, high = float(images.min()), float(images.max())
    if low < -_PIXEL_RANGE_SLACK or high > 1 + _PIXEL_RANGE_SLACK:
        raise ValueError(
            f"images must be RGB in [0, 1] (the segmenter normalises them with the preset); got values in "
            f"[{low:.3f}, {high:.3f}]. Pass unnormalised pixels divided by 255."
        )


def refine_output(
    output: SegmentationOutput, images: Tensor, preset: ProtocolPreset, refiner: MaskRefiner | None
) -> SegmentationOutput:
    """Apply a refiner to a segmentation of ``images`` (RGB in [0, 1]); logits become log-probabilities.

    With a centre-cropping resize rule the output covers :func:`center_crop_box` of the image, so the refiner sees
    that crop. Without a refiner the output is returned unchanged.
    """
    if refiner is None:
        return output
    box = center_crop_box(int(images.shape[-2]), int(images.shape[-1]), preset.resize)
    if box is not None:
        top, left, box_height, box_width = box
        images = images[..., top : top + box_height, left : left + box_width]
    refined = refiner.refine(images.float(), output.probabilities)
    return SegmentationOutput(logits=refined.clamp_min(1e-8).log(), label_names=output.label_names)


# ---------------------------------------------------------------------------------------------------------------
# Test-time augmentation
# ---------------------------------------------------------------------------------------------------------------


class TestTimeAugmentation:
    """Any :class:`seg_core.Segmenter` with test-time augmentation: class probabilities averaged over scales and
    horizontal flips (MV-SimCon's TTA row; mmseg's ``aug_test`` averages the same way).

    Each pass resizes the RGB images by a scale factor (bilinear), optionally flips them, segments, flips the logits
    back, resizes them to the unaugmented pass's output size and takes their softmax; the result's logits are the
    log of the mean probabilities, so its argmax is the averaged vote. A ``label_map`` the wrapped method decides
    other than by argmax (e.g. a background threshold) is not averaged: the result has none.

    Args:
        segmenter: The segmenter to wrap.
        scales: Resize factors of the passes (1.0 included or not, as given).
        flip: Add a horizontally flipped pass per scale.

    Attributes:
        segmenter, scales, flip: As given.
    """

    __test__ = False  # not a pytest class despite the name

    def __init__(self, segmenter: Segmenter, *, scales: Sequence[float] = (1.0,), flip: bool = True) -> None:
        if not scales or any(scale <= 0 for scale in scales):
            raise ValueError(f"scales must be positive factors, e.g. (0.75, 1.0, 1.25); got {tuple(scales)}")
        self.segmenter = segmenter
        self.scales = tuple(float(scale) for scale in scales)
        self.flip = flip

    def segment(self, images: Tensor, concepts: ConceptSet) -> SegmentationOutput:
        """Segment RGB images in [0, 1] ``[B, 3, H, W]`` into ``concepts.label_names`` with every augmentation."""
        check_pixel_images(images)
        height, width = int(images.shape[-2]), int(images.shape[-1])
        reference = self.segmenter.segment(images, concepts)
        size = (int(reference.logits.shape[-2]), int(reference.logits.shape[-1]))
        total = torch.zeros_like(reference.logits, dtype=torch.float32)
        passes = 0
        for scale in self.scales:
            scaled = images
            if scale != 1.0:
                target = (max(1, round(height * scale)), max(1, round(width * scale)))
                scaled = F.interpolate(images, size=target, mode="bilinear", align_corners=False).clamp(0.0, 1.0)
            for flipped in (False, True) if self.flip else (False,):
                if scale == 1.0 and not flipped:
                    logits = reference.logits
                else:
                    output = self.segmenter.segment(scaled.flip(-1) if flipped else scaled, concepts)
                    logits = output.logits.flip(-1) if flipped else output.logits
                if tuple(logits.shape[-2:]) != size:
                    logits = resize_logits(logits, size)
                total += logits.float().softmax(dim=1)
                passes += 1
        mean = total / passes
        return SegmentationOutput(logits=mean.clamp_min(1e-8).log(), label_names=reference.label_names)
