"""Protocol presets: how a segmenter is evaluated, as data.

Numbers in this field are only comparable under the same protocol (resize rule, whole or sliding-window
inference, background handling, class names, prompt templates, refinement). A :class:`ProtocolPreset` records all
of it and its :meth:`~ProtocolPreset.signature` hashes it, so ``results.json`` files can be compared safely.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from seg_core.base import SegModel
from seg_core.concepts import BackgroundPolicy, NoBackground

__all__ = ["CLIP_MEAN_STD", "IMAGENET_MEAN_STD", "Normalization", "ProtocolPreset", "ResizeRule", "SlidingWindow"]

Interpolation = Literal["nearest", "bilinear", "bicubic"]


class Normalization(SegModel):
    """Per-channel pixel normalisation applied to images in [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @model_validator(mode="after")
    def _positive_std(self) -> Normalization:
        if any(value <= 0 for value in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        return self


IMAGENET_MEAN_STD = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
CLIP_MEAN_STD = Normalization(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))


class ResizeRule(SegModel):
    """How test images are resized before inference (predictions are resized back to the original size).

    Attributes:
        short_side: Resize so the shorter side has this length (aspect kept); ``None`` keeps the size.
        max_long_side: Cap on the longer side after the short-side resize (PASCAL Context uses 520 with 512).
        center_crop: Centre-crop to a square of this size after resizing (ReCo), or ``None``.
        interpolation: Interpolation of the image resize.
    """

    short_side: PositiveInt | None = None
    max_long_side: PositiveInt | None = None
    center_crop: PositiveInt | None = None
    interpolation: Interpolation = "bilinear"

    @model_validator(mode="after")
    def _consistent(self) -> ResizeRule:
        if self.short_side and self.max_long_side and self.max_long_side < self.short_side:
            raise ValueError(f"max_long_side ({self.max_long_side}) is smaller than short_side ({self.short_side})")
        return self


class SlidingWindow(SegModel):
    """Square windows of ``crop`` pixels every ``stride`` pixels; overlapping logits are averaged."""

    crop: PositiveInt
    stride: PositiveInt

    @model_validator(mode="after")
    def _stride_fits(self) -> SlidingWindow:
        if self.stride > self.crop:
            raise ValueError(f"stride ({self.stride}) is larger than crop ({self.crop}): pixels would be skipped")
        return self


class ProtocolPreset(SegModel):
    """Everything that decides an evaluation number besides the model.

    Attributes:
        name: Short identifier, e.g. ``"voc21-slide448"``.
        dataset: The benchmark the preset is for (``"voc"``, ``"synthetic"``, ...), informative.
        resize: Resize rule of test images.
        mode: ``"whole"`` image inference or ``"slide"`` with :attr:`window`.
        window: Sliding-window crop and stride (required with ``mode="slide"``).
        class_names: Class names in label order, or ``None`` to take them from the dataset.
        class_names_file: The class-name file these names came from (informative; its content is in
            ``class_names``).
        templates: Prompt templates or a template-set name (see :mod:`seg_core.templates`).
        background: Background policy.
        refinement: Post-processing of the logits.
        normalization: Pixel normalisation fed to the model.
        logit_scale: Temperature of the softmax over class similarities, if the method uses one.
        ignore_index: Ground-truth label ignored by the metrics.
    """

    name: str = Field(min_length=1)
    dataset: str = "custom"
    resize: ResizeRule = ResizeRule()
    mode: Literal["whole", "slide"] = "whole"
    window: SlidingWindow | None = None
    class_names: tuple[str, ...] | None = None
    class_names_file: str | None = None
    templates: str | tuple[str, ...] = "imagenet85"
    background: BackgroundPolicy = NoBackground()
    refinement: Literal["none", "pamr", "crf"] = "none"
    normalization: Normalization = IMAGENET_MEAN_STD
    logit_scale: float | None = Field(default=None, gt=0)
    ignore_index: int = 255

    @model_validator(mode="after")
    def _window_matches_mode(self) -> ProtocolPreset:
        if self.mode == "slide" and self.window is None:
            raise ValueError("mode is 'slide' but window is missing; give window: {crop: 448, stride: 224}")
        if self.mode == "whole" and self.window is not None:
            raise ValueError("window is set but mode is 'whole'; set mode: slide or remove window")
        return self

    def signature(self, class_names: Sequence[str] | None = None) -> str:
        """A short hash of everything that changes the numbers: this preset plus the class names used.

        Two results are comparable only when their signatures are equal. ``name`` and ``class_names_file`` are
        labels, not settings, so they do not enter the hash.

        Args:
            class_names: The class names actually evaluated (defaults to :attr:`class_names`).
        """
        payload = self.model_dump(mode="json", exclude={"name", "class_names_file", "class_names"})
        names = list(class_names) if class_names is not None else list(self.class_names or ())
        canonical = json.dumps({"preset": payload, "class_names": names}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
